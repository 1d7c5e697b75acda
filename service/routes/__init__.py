"""The HTTP routes, one module per resource; service/app.py includes every router."""

from service.routes import admin, events, health, markets, recommend
from service.routes.recommend import JSONBodyRoute

ROUTERS = [events.router, recommend.router, markets.router, health.router, admin.router]
# The hot routes, answered ahead of the router (service/middleware.py, FastRoutes).
FAST_ROUTES = [r for router in ROUTERS for r in router.routes if isinstance(r, JSONBodyRoute)]
