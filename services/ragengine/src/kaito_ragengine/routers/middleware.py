"""The ASGI middleware that counts and times requests and refuses oversized bodies."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaito_ragengine.metrics import Metrics

__all__ = ["RequestMetricsMiddleware"]


class RequestMetricsMiddleware:
    """Counts requests and times them per route template; refuses oversized bodies (413)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _too_large(send_with_status, self.max_body_bytes)
        elif declared is None and scope.get("method") in {"POST", "PUT", "PATCH"}:
            replay = await self._buffer(receive)
            if replay is None:
                await _too_large(send_with_status, self.max_body_bytes)
            else:
                await self.app(scope, replay, send_with_status)
        else:
            await self.app(scope, receive, send_with_status)
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        method = scope.get("method", "")
        self.metrics.requests.labels(method, template, str(status["code"])).inc()
        self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)

    async def _buffer(self, receive: Receive) -> Receive | None:
        """Read a body of unknown length (chunked); None if it is over the limit."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return replay


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"detail":"request body is over ' + str(limit).encode() + b' bytes (max_request_bytes)"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
