"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint with a Bearer token."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

from kaito_ragengine.embeddings.base import normalize
from kaito_ragengine.errors import UpstreamError
from kaito_sdk.urls import check_public_url

__all__ = ["RemoteEmbedder", "embeddings_url"]


def embeddings_url(url: str) -> str:
    """``url`` if it ends in ``/embeddings``, else with ``/embeddings`` or ``/v1/embeddings``."""
    url = url.rstrip("/")
    if url.endswith("/embeddings"):
        return url
    return f"{url}/embeddings" if url.endswith("/v1") else f"{url}/v1/embeddings"


class RemoteEmbedder:
    """Posts ``{"model", "input": [...]}`` in batches and normalises what comes back.

    The URL is checked with :func:`kaito_sdk.urls.check_public_url` (loopback, private,
    link-local and metadata hosts are refused) unless ``allow_private`` is set.
    """

    def __init__(
        self,
        url: str,
        *,
        model_id: str,
        access_secret: SecretStr | None = None,
        allow_private: bool = False,
        batch_size: int = 64,
        timeout_s: float = 60.0,
    ) -> None:
        self.url = embeddings_url(url)
        if not allow_private:
            check_public_url(self.url)
        self.model_id = model_id
        self._batch_size = batch_size
        headers = (
            {"Authorization": f"Bearer {access_secret.get_secret_value()}"} if access_secret else {}
        )
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def _post(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._client.post(
                self.url, json={"model": self.model_id, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"embeddings endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpstreamError(
                f"embeddings endpoint answered {response.status_code}: {response.text[:200]}"
            )
        try:
            data: list[dict[str, Any]] = sorted(
                response.json()["data"], key=lambda d: d.get("index", 0)
            )
            matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError("embeddings endpoint sent an unexpected body") from exc
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise UpstreamError(
                f"embeddings endpoint sent {matrix.shape[0]} vectors for {len(texts)} inputs"
            )
        return normalize(matrix)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One normalised row per text."""
        parts = [
            await self._post(texts[i : i + self._batch_size])
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
