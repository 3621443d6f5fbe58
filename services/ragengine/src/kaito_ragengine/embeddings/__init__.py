"""Embedding backends: local sentence-transformers or a remote OpenAI-compatible API."""

from kaito_ragengine.embeddings.base import Embedder, build_embedder

__all__ = ["Embedder", "build_embedder"]
