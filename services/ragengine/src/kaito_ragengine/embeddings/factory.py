"""The factory that picks an embedding backend from the settings.

Backends are imported inside ``build_embedder`` so that a remote embedder never imports
torch; they depend on ``base``, never on this module.
"""

from __future__ import annotations

from kaito_ragengine.embeddings.base import Embedder
from kaito_ragengine.settings import Settings

__all__ = ["build_embedder"]


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
