"""The HTTP routes, one module per resource; service/app.py includes every router."""

from service.routes import admin, events, health, markets, recommend

ROUTERS = [events.router, recommend.router, markets.router, health.router, admin.router]
