"""A cap on request body size: larger bodies get an OpenAI-shaped 413 before they are parsed.

Without it an 18 MB prompt was read, parsed and tokenized in full (seconds of CPU and a
gigabyte of memory) only to be refused for exceeding the context. The cap applies to the
declared ``Content-Length`` at once and to the bytes actually received (chunked uploads),
so no more than ``max_bytes`` of a body is ever buffered.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaito_inference.errors import too_large
from kaito_inference.routers.errors import RequestBodyTooLarge, render_error

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Refuse HTTP request bodies over ``max_bytes`` with 413 (pure ASGI: streaming
    responses pass through untouched)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the received bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await render_error(too_large(self.max_bytes))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestBodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
