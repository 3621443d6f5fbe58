"""ASGI middleware loaded into vLLM's server with ``--middleware`` (vLLM's extension point).

:class:`QueueLimiter` answers 429 in OpenAI's shape (``code: rate_limit_exceeded``) once
more generation requests are in flight than ``max_running + max_waiting``, counts them in
``kaito_inference_requests_rejected_total`` on vLLM's ``/metrics``, and checks that
runtime-loaded adapters lie under the allowed root. Its settings come from the
``KAITO_INFERENCE_*`` environment the launcher sets; vLLM constructs it with the app only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, Counter

from kaito_inference.engines.adapters import AdapterError, check_adapter_path

__all__ = ["LIMITED_PATHS", "QueueLimiter"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Endpoints that queue generation work (the same list as KAITO's rate limiter).
LIMITED_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/tokenize", "/pooling",
     "/score", "/rerank", "/v1/rerank"}
)  # fmt: skip
_REJECTED: list[Counter] = []


def _rejected_counter() -> Counter:
    """One process-wide counter in the default registry (the one vLLM's /metrics serves)."""
    if not _REJECTED:
        _REJECTED.append(
            Counter(
                "kaito_inference_requests_rejected",
                "Requests rejected with 429 because the waiting queue was full",
                registry=REGISTRY,
            )
        )
    return _REJECTED[0]


async def _send_error(send: Send, status: int, message: str, code: str, param: str | None) -> None:
    kind = "rate_limit_exceeded" if status == 429 else "invalid_request_error"
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class QueueLimiter:
    """Pure ASGI middleware: bounded in-flight generation requests, checked adapter paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        max_running = int(os.environ.get("KAITO_INFERENCE_MAX_RUNNING", "16"))
        self.limit = max_running + int(os.environ.get("KAITO_INFERENCE_MAX_WAITING", "64"))
        self.lora_root = Path(os.environ.get("KAITO_INFERENCE_LORA_ROOT", "/mnt/adapter"))
        self.in_flight = 0
        self.rejected = _rejected_counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Limit generation endpoints; check runtime adapter loads; pass the rest through."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/v1/load_lora_adapter":
            await self._check_lora_load(scope, receive, send)
            return
        if path not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.rejected.inc()
            message = f"too many requests: {self.in_flight} in flight; retry later"
            await _send_error(send, 429, message, "rate_limit_exceeded", None)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _check_lora_load(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw or b"{}")
            check_adapter_path(
                str(body.get("lora_name", "")),
                str(body.get("lora_path", "")),
                self.lora_root.resolve(),
            )
        except (ValueError, AttributeError, AdapterError) as exc:
            await _send_error(send, 400, str(exc), "invalid_value", "lora_path")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)
