"""One-line dependencies that fetch the services from ``app.state``.

They are ``async`` so FastAPI calls them on the event loop: a plain ``def`` dependency
runs in a worker thread, a thread hop per request for a dictionary lookup.
"""

from __future__ import annotations

from fastapi import Request

from kaito_ragengine.serving.chat import ChatService
from kaito_ragengine.serving.rag import RagService

__all__ = ["chat_service", "rag_service"]


async def rag_service(request: Request) -> RagService:
    """The app's RagService."""
    service: RagService = request.app.state.rag
    return service


async def chat_service(request: Request) -> ChatService:
    """The app's ChatService."""
    service: ChatService = request.app.state.chat
    return service
