"""The ``RAGEngine`` kind: a retrieval-augmented generation service.

:class:`RAGEngine` is ``kaito.sh/v1beta1``, the stored version; :class:`RAGEngineV1Alpha1`
is KAITO's deprecated ``kaito.sh/v1alpha1`` (flat storage, the service names), which
:meth:`RAGEngine.from_manifest` also takes. The conversion between them is
:mod:`kaito_sdk.api.conversion` (see :mod:`kaito_sdk.api.ragengine_v1alpha1`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field

from kaito_sdk.api.base import ApiInfo, Condition, KubeModel, KubeObject, PrinterColumn
from kaito_sdk.api.conversion import V1ALPHA1, V1BETA1, convert_manifest
from kaito_sdk.api.workspace import ResourceSpec

__all__ = [
    "ConfigMapReference",
    "EmbeddingSpec",
    "FlatStorageSpec",
    "GuardrailsSpec",
    "InferenceServiceSpec",
    "LocalEmbeddingSpec",
    "PersistentVolumeSpec",
    "RAGEngine",
    "RAGEngineSpec",
    "RAGEngineStatus",
    "RAGEngineV1Alpha1",
    "RAGEngineV1Alpha1Spec",
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

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Self:
        """Parse a manifest dict of either served version: a ``kaito.sh/v1alpha1`` one is
        validated against v1alpha1's schema (:class:`RAGEngineV1Alpha1`, flat storage) and
        converted to v1beta1, as the API server stores it (fields v1beta1 lacks go into an
        annotation; :func:`~kaito_sdk.api.conversion.convert_manifest`). Raises
        :class:`pydantic.ValidationError` on bad input."""
        if isinstance(manifest, dict) and manifest.get("apiVersion") == V1ALPHA1:
            alpha = RAGEngineV1Alpha1.model_validate(manifest)
            manifest = convert_manifest(alpha.to_manifest(), V1BETA1)
        return cls.model_validate(manifest)


class FlatStorageSpec(KubeModel):
    """v1alpha1 storage: a PersistentVolumeClaim for the index snapshots, inline."""

    persistent_volume_claim: str | None = None
    """Name of the PersistentVolumeClaim (same namespace) the indexes persist to."""
    mount_path: str | None = None
    """Where the volume is mounted in the service (default ``/mnt/data``)."""


class RAGEngineV1Alpha1Spec(RAGEngineSpec):
    """Desired state of a v1alpha1 RAGEngine: the v1beta1 spec with KAITO's flat storage
    and the service names."""

    storage: FlatStorageSpec | None = None  # type: ignore[assignment]  # v1alpha1's flat shape replaces v1beta1's on purpose
    """Index persistence on a PersistentVolumeClaim (v1beta1: ``storage.persistentVolume``)."""
    query_service_name: str | None = None
    """Name KAITO v1alpha1 gave the query Service; kept, not used by this operator."""
    index_service_name: str | None = None
    """Name KAITO v1alpha1 gave the index Service; kept, not used by this operator."""


class RAGEngineV1Alpha1(KubeObject):
    """A RAGEngine as ``kaito.sh/v1alpha1`` serves it (deprecated; stored as v1beta1)."""

    api_info: ClassVar[ApiInfo] = RAGEngine.api_info

    api_version: Literal["kaito.sh/v1alpha1"] = V1ALPHA1
    """Versioned schema of this object: ``kaito.sh/v1alpha1``."""
    kind: Literal["RAGEngine"] = "RAGEngine"
    """Kind of this object: ``RAGEngine``."""
    spec: RAGEngineV1Alpha1Spec
    """Desired state."""
    status: RAGEngineStatus | None = None
    """Observed state, written by the operator."""
