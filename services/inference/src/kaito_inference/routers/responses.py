"""A serving reply as an HTTP response: a JSON body, or a server-sent event stream."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse

from kaito_inference.serving.generation import Reply

__all__ = ["SSE_HEADERS", "respond"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def respond(reply: Reply) -> Response:
    """``JSONResponse`` for a whole body, ``StreamingResponse`` for SSE lines."""
    if isinstance(reply, dict):
        return JSONResponse(reply)
    return StreamingResponse(reply, media_type="text/event-stream", headers=SSE_HEADERS)
