"""Thin FastAPI routers: resolve the service, call one method, shape the response."""
