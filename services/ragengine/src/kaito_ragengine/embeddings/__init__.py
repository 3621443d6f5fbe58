"""Embedding backends: local sentence-transformers or a remote OpenAI-compatible API."""

from kaito_ragengine.embeddings.base import Embedder
from kaito_ragengine.embeddings.factory import build_embedder

__all__ = ["Embedder", "build_embedder"]
