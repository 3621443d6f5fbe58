"""Service settings: the SDK's operator contract plus service-local knobs and secrets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_sdk.contracts.ragengine import ENV_PREFIX, RagEngineConfig

__all__ = ["Settings"]


class Settings(RagEngineConfig, BaseSettings):
    """Everything the service reads from ``KAITO_RAG_*`` environment variables.

    The fields of :class:`~kaito_sdk.contracts.ragengine.RagEngineConfig` are inherited,
    so every variable the operator sets is read here; the two secrets of the contract
    arrive as ``SecretStr``; the rest are service-local defaults.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    embedding_access_secret: SecretStr | None = None
    """Bearer token sent to the remote embeddings endpoint."""
    llm_access_secret: SecretStr | None = None
    """Bearer token sent to the LLM inference endpoint."""
    host: str = "0.0.0.0"  # noqa: S104 - a pod's server listens on all interfaces
    """Interface the server binds to."""
    embedding_batch_size: int = Field(default=64, ge=1, le=4096)
    """Texts per embedding call when indexing (also the query micro-batch limit)."""
    embedding_batch_chars: int = Field(default=16_384, ge=256)
    """Most characters of document chunks embedded in one call: a query waits behind at
    most one such slice (about 0.5 s for MiniLM on two cores)."""
    chunk_size: int = Field(default=250, ge=32, le=8192)
    """Largest chunk in word pieces, heading path included (MiniLM reads 256, two of
    them its own [CLS] and [SEP])."""
    chunk_overlap: int = Field(default=32, ge=0, le=1024)
    """Word pieces shared by consecutive chunks of plain text (Markdown chunks hold
    whole blocks and do not overlap)."""
    max_top_k: int = Field(default=300, ge=1, le=10_000)
    """Upper bound of ``max_node_count`` in /retrieve."""
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest accepted request body (413 above)."""
    max_documents_per_request: int = Field(default=10_000, ge=1)
    """Most documents in one index or update request (413 above)."""
    max_document_chars: int = Field(default=1_000_000, ge=1)
    """Longest accepted document text in characters (422 above)."""
    dense_weight: float = Field(default=0.7, ge=0.0, le=1.0)
    """Share of the cosine similarity in a result's relevance score (the rest is BM25
    relative to the query's best keyword match)."""
    llm_timeout_s: float = Field(default=300.0, gt=0)
    """Timeout of one LLM request."""
    chat_min_similarity: float = Field(default=0.0, ge=-1.0, le=1.0)
    """Chunks below this cosine similarity never enter the chat context."""
    embedding_threads: int = Field(default=0, ge=0, le=256)
    """torch threads for document batches (0: torch's default); queries always use 1."""
    embedding_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Local embeddings on CPU: ``auto`` runs the encoder in bfloat16 where the CPU has
    native bf16 (AVX-512 BF16 or AMX) and probe texts embed within cosine 0.999 of
    float32, else float32."""
    embedding_device: str = "auto"
    """Local embeddings: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    faiss_threads: int = Field(default=1, ge=1, le=256)
    """OpenMP threads for FAISS searches (1 is fastest for single queries)."""
    log_level: str = "info"
    """Log level of the service and uvicorn."""
