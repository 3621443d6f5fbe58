"""The embedder protocol and the factory that picks a backend from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from kaito_ragengine.settings import Settings

__all__ = ["Embedder", "build_embedder", "normalize"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows (cosine = inner product)."""

    model_id: str
    """Identifies the model; snapshots record it and refuse to load under another."""

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One normalised row per text."""
        ...

    async def aclose(self) -> None:
        """Release threads and connections."""
        ...


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def build_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for (nothing is loaded until the first call)."""
    if settings.embedding_source == "remote":
        from kaito_ragengine.embeddings.remote import RemoteEmbedder  # noqa: PLC0415

        assert settings.embedding_url is not None
        return RemoteEmbedder(
            settings.embedding_url,
            model_id=settings.embedding_model_id,
            access_secret=settings.embedding_access_secret,
            allow_private=settings.allow_private_urls,
            batch_size=settings.embedding_batch_size,
        )
    from kaito_ragengine.embeddings.local import LocalEmbedder  # noqa: PLC0415

    return LocalEmbedder(
        settings.embedding_model_id,
        batch_size=settings.embedding_batch_size,
        threads=settings.embedding_threads,
        device=settings.embedding_device,
        precision=settings.embedding_precision,
    )
