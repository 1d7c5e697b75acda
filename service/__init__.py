"""The online, torch-free ranking service (FastAPI, Redis, onnxruntime)."""
