"""An OpenAI-compatible chat client for the LLM inference service.

Every call builds its own request body from the caller's dict: no LLM object with
mutable per-request parameters is shared between requests. Only the connection pool and
the discovered default model name are shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import SecretStr

from kaito_ragengine.errors import UpstreamError

__all__ = ["LLMClient", "chat_url"]


def chat_url(url: str) -> str:
    """The chat completions URL for ``url`` (a full URL, a ``/v1`` base or a host base)."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


def _upstream_error(response: httpx.Response, body: bytes) -> UpstreamError:
    status = response.status_code if 400 <= response.status_code < 500 else 502
    text = body.decode("utf-8", "replace")[:1000]
    return UpstreamError(f"LLM answered {response.status_code}: {text}", status)


class LLMClient:
    """Sends chat completion bodies to the LLM, plain or streamed."""

    def __init__(
        self, url: str, *, access_secret: SecretStr | None = None, timeout_s: float = 300.0
    ) -> None:
        self.chat_url = chat_url(url)
        self.models_url = self.chat_url.removesuffix("/chat/completions") + "/models"
        headers = (
            {"Authorization": f"Bearer {access_secret.get_secret_value()}"} if access_secret else {}
        )
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)
        self._default_model: str | None = None

    async def default_model(self) -> str:
        """The first model the LLM lists under ``/v1/models`` (cached)."""
        if self._default_model is None:
            try:
                response = await self._client.get(self.models_url)
                response.raise_for_status()
                self._default_model = str(response.json()["data"][0]["id"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                raise UpstreamError(
                    f"cannot list the LLM's models at {self.models_url}: {exc}"
                ) from exc
        return self._default_model

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a non-streaming request; the ChatCompletion as a dict."""
        try:
            response = await self._client.post(self.chat_url, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"LLM unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _upstream_error(response, response.content)
        try:
            result: dict[str, Any] = response.json()
        except ValueError as exc:
            raise UpstreamError("LLM sent a body that is not JSON") from exc
        return result

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """POST a streaming request; checks the status, then yields SSE lines."""
        request = self._client.build_request("POST", self.chat_url, json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"LLM unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            raise _upstream_error(response, content)
        return self._lines(response)

    @staticmethod
    async def _lines(response: httpx.Response) -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                yield line
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
