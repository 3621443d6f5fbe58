"""The ``RAGEngine`` kind (``kaito.sh/v1beta1``): a retrieval-augmented generation service."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kaito_sdk.api.base import ApiInfo, Condition, KubeModel, KubeObject, PrinterColumn
from kaito_sdk.api.workspace import ResourceSpec

__all__ = [
    "ConfigMapReference",
    "EmbeddingSpec",
    "GuardrailsSpec",
    "InferenceServiceSpec",
    "LocalEmbeddingSpec",
    "PersistentVolumeSpec",
    "RAGEngine",
    "RAGEngineSpec",
    "RAGEngineStatus",
    "RemoteEmbeddingSpec",
    "StorageSpec",
    "VectorDBSpec",
]


class LocalEmbeddingSpec(KubeModel):
    """An embedding model run inside the RAG service: a model id or an image."""

    model_id: str | None = Field(default=None, alias="modelID")
    """Hugging Face id of the embedding model; mutually exclusive with ``image``."""
    image: str | None = None
    """Image (``repo/name:tag``) holding the embedding model; exclusive with ``modelID``."""
    image_pull_secret: str | None = None
    """Secret used to pull ``image``."""
    model_access_secret: str | None = None
    """Secret with key ``HF_TOKEN`` for gated embedding models."""


class RemoteEmbeddingSpec(KubeModel):
    """An embedding service reached over HTTP."""

    url: str
    """Endpoint that takes ``{"inputs": text}`` and returns the embedding."""
    access_secret: str | None = None
    """Secret holding the bearer token for ``url``."""


class EmbeddingSpec(KubeModel):
    """The embedding model: exactly one of ``local`` and ``remote``."""

    local: LocalEmbeddingSpec | None = None
    """Run the embedding model inside the service."""
    remote: RemoteEmbeddingSpec | None = None
    """Call a remote embedding service."""


class InferenceServiceSpec(KubeModel):
    """The LLM the engine sends chat requests to (without it the engine is retrieve-only)."""

    url: str | None = None
    """OpenAI-compatible chat completions URL; without it the engine is retrieve-only."""
    access_secret: str | None = None
    """Secret holding the bearer token for ``url``."""
    context_window_size: int | None = Field(default=None, json_schema_extra={"minimum": 1})
    """Context window of the model in tokens; required and > 0."""


class PersistentVolumeSpec(KubeModel):
    """A PersistentVolumeClaim the engine persists its indexes to."""

    persistent_volume_claim: str
    """Name of the PersistentVolumeClaim (same namespace)."""
    mount_path: str | None = None
    """Where the volume is mounted in the service (default ``/mnt/data``)."""


class VectorDBSpec(KubeModel):
    """An external vector database."""

    engine: str
    """Vector database engine: KAITO names ``qdrant``; any name is admitted, as by KAITO's
    webhook, and ignored with a warning: kaito-ragengine keeps vectors in FAISS."""
    url: str
    """URL of the database."""
    access_secret: str | None = None
    """Secret with key ``VECTOR_DB_ACCESS_SECRET`` holding the database credentials."""


class StorageSpec(KubeModel):
    """Where indexes live beyond the service's memory."""

    persistent_volume: PersistentVolumeSpec | None = None
    """Persist in-memory (FAISS) index snapshots to a volume."""
    vector_db: VectorDBSpec | None = Field(default=None, alias="vectorDB")
    """Keep the indexes in an external vector database."""


class ConfigMapReference(KubeModel):
    """A ConfigMap in the same namespace."""

    name: str
    """Name of the ConfigMap."""


class GuardrailsSpec(KubeModel):
    """Output guardrails applied to chat answers."""

    enabled: bool | None = None
    """Whether guardrails run."""
    config_map_ref: ConfigMapReference | None = None
    """ConfigMap whose ``guardrails.yaml`` holds the policy."""


class RAGEngineSpec(KubeModel):
    """Desired state of a RAGEngine."""

    compute: ResourceSpec | None = None
    """Nodes the service runs on (GPU only with local embedding). Cannot be added or
    removed after creation."""
    storage: StorageSpec | None = None
    """Index persistence or an external vector database."""
    embedding: EmbeddingSpec
    """The embedding model: exactly one of ``local`` and ``remote``."""
    inference_service: InferenceServiceSpec | None = None
    """The LLM for chat completions; without it the engine only retrieves."""
    guardrails: GuardrailsSpec | None = None
    """Output guardrails."""


class RAGEngineStatus(KubeModel):
    """Observed state of a RAGEngine."""

    worker_nodes: list[str] | None = None
    """Nodes the service runs on."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Latest observations of the engine's state."""


class RAGEngine(KubeObject):
    """A retrieval-augmented generation service with its own index store."""

    api_info: ClassVar[ApiInfo] = ApiInfo(
        group="kaito.sh",
        version="v1beta1",
        older_versions=("v1alpha1",),
        older_versions_warning=(
            "kaito.sh/v1alpha1 RAGEngine is deprecated; use kaito.sh/v1beta1 RAGEngine"
        ),
        kind="RAGEngine",
        plural="ragengines",
        singular="ragengine",
        short_names=("rag",),
        printer_columns=(
            PrinterColumn("Instance", "string", ".spec.compute.instanceType"),
            PrinterColumn(
                "ResourceReady", "string", '.status.conditions[?(@.type=="ResourceReady")].status'
            ),
            PrinterColumn(
                "ServiceReady", "string", '.status.conditions[?(@.type=="ServiceReady")].status'
            ),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
    )

    api_version: Literal["kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    """Versioned schema of this object: ``kaito.sh/v1beta1`` (stored; the v1alpha1 schema,
    with flat storage, is :class:`~kaito_sdk.api.ragengine_v1alpha1.RAGEngineV1Alpha1`)."""
    kind: Literal["RAGEngine"] = "RAGEngine"
    """Kind of this object: ``RAGEngine``."""
    spec: RAGEngineSpec
    """Desired state."""
    status: RAGEngineStatus | None = None
    """Observed state, written by the operator."""
