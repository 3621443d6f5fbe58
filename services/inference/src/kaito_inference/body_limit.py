"""A cap on request body size: larger bodies get an OpenAI-shaped 413 before they are parsed.

Without it an 18 MB prompt was read, parsed and tokenized in full (seconds of CPU and a
gigabyte of memory) only to be refused for exceeding the context. The cap applies to the
declared ``Content-Length`` at once and to the bytes actually received (chunked uploads),
so no more than ``max_bytes`` of a body is ever buffered.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaito_inference.errors import OpenAIError, error_response

__all__ = ["BodyLimitMiddleware", "RequestBodyTooLarge", "too_large"]


class RequestBodyTooLarge(HTTPException):
    """The body grew past the limit while it was being read (raised from ``receive``).

    An ``HTTPException``, so FastAPI's body parsing lets it through instead of turning it
    into a 400; the app renders it with :func:`too_large`.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413)
        self.max_bytes = max_bytes


def too_large(max_bytes: int) -> OpenAIError:
    """The 413 error for a body over ``max_bytes``."""
    return OpenAIError(
        413,
        f"the request body is larger than {max_bytes} bytes; set "
        "KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES (--max-request-body-bytes) to allow more",
        code="request_too_large",
    )


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
            await error_response(too_large(self.max_bytes))(scope, receive, send)
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
