"""One-line dependencies that fetch the services from ``app.state``.

They are ``async`` so FastAPI calls them on the event loop: a plain ``def`` dependency
runs in a worker thread, a thread hop per request for an attribute lookup.
"""

from __future__ import annotations

from fastapi import Request

from kaito_inference.serving import Services

__all__ = ["services"]


async def services(request: Request) -> Services:
    """The app's services."""
    found: Services = request.app.state.services
    return found
