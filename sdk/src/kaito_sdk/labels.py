"""Label, annotation and finalizer keys KAITO puts on or reads from objects.

The values match KAITO's (``api/v1beta1/labels.go`` and the controllers), so manifests
written for KAITO keep their meaning here.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANNOTATION_BYPASS_RESOURCE_CHECKS",
    "ANNOTATION_DISABLE_BENCHMARK",
    "ANNOTATION_ENABLE_LB",
    "ANNOTATION_MODEL_MIRROR_STORAGE_CLASS",
    "ANNOTATION_MODEL_STREAMING",
    "ANNOTATION_NODE_CLASS_NAME",
    "ANNOTATION_NODE_IMAGE_FAMILY",
    "ANNOTATION_PERFORMANCE_MODE",
    "ANNOTATION_RAGENGINE_REVISION",
    "ANNOTATION_RUNTIME",
    "ANNOTATION_STREAMING_SERVICE_ACCOUNT",
    "ANNOTATION_USE_LOCAL_WEIGHTS",
    "ANNOTATION_WORKSPACE_HASH",
    "ANNOTATION_WORKSPACE_REVISION",
    "FINALIZER_INFERENCESET",
    "FINALIZER_RAGENGINE",
    "FINALIZER_WORKSPACE",
    "LABEL_INFERENCESET_CREATED_BY",
    "LABEL_RAGENGINE",
    "LABEL_RAGENGINE_NAMESPACE",
    "LABEL_WORKSPACE",
    "LABEL_WORKSPACE_NAMESPACE",
    "RESERVED_LABEL_KEYS",
    "RESERVED_LABEL_PREFIXES",
    "RUNTIME_TRANSFORMERS",
    "RUNTIME_VLLM",
    "is_reserved_label_key",
]

# Labels KAITO stamps on the objects it creates (and on provisioned nodes).
#: Name of the owning Workspace (pods, StatefulSet selector, Job, nodes).
LABEL_WORKSPACE: Final = "kaito.sh/workspace"
#: Namespace of the owning Workspace.
LABEL_WORKSPACE_NAMESPACE: Final = "kaito.sh/workspacenamespace"
#: Name of the owning RAGEngine.
LABEL_RAGENGINE: Final = "kaito.sh/ragengine"
#: Namespace of the owning RAGEngine.
LABEL_RAGENGINE_NAMESPACE: Final = "kaito.sh/ragenginenamespace"
#: Name of the InferenceSet that created a Workspace.
LABEL_INFERENCESET_CREATED_BY: Final = "inferenceset.kaito.sh/created-by"

# Annotations users set to switch behaviour (reference §2.4).
#: ``transformers`` or ``vllm``: the inference runtime.
ANNOTATION_RUNTIME: Final = "kaito.sh/runtime"
#: Presence skips the GPU-memory admission check.
ANNOTATION_BYPASS_RESOURCE_CHECKS: Final = "kaito.sh/bypass-resource-checks"
#: ``"true"`` skips the post-load benchmark.
ANNOTATION_DISABLE_BENCHMARK: Final = "kaito.sh/disable-benchmark"
#: ``balanced``, ``interactivity`` or ``throughput``: vLLM ``--performance-mode``.
ANNOTATION_PERFORMANCE_MODE: Final = "kaito.sh/performance-mode"
#: ``"true"`` loads weights from the node's local model directory.
ANNOTATION_USE_LOCAL_WEIGHTS: Final = "kaito.sh/use-local-weights"
#: ``"True"`` makes the inference Service a LoadBalancer (testing only).
ANNOTATION_ENABLE_LB: Final = "kaito.sh/enablelb"
#: Karpenter NodeClass to provision nodes with.
ANNOTATION_NODE_CLASS_NAME: Final = "kaito.sh/node-class-name"
#: ``ubuntu`` or ``azurelinux`` (gpu-provisioner only).
ANNOTATION_NODE_IMAGE_FAMILY: Final = "kaito.sh/node-image-family"
#: ``disabled`` turns model streaming off (immutable).
ANNOTATION_MODEL_STREAMING: Final = "kaito.sh/model-streaming"
#: StorageClass for the model mirror volume.
ANNOTATION_MODEL_MIRROR_STORAGE_CLASS: Final = "kaito.sh/model-mirror-storage-class"
#: ServiceAccount used for streaming weights.
ANNOTATION_STREAMING_SERVICE_ACCOUNT: Final = "kaito.sh/streaming-service-account"

# Annotations the controllers manage.
#: Revision number of the Workspace's current ControllerRevision.
ANNOTATION_WORKSPACE_REVISION: Final = "workspace.kaito.io/revision"
#: Hash of the Workspace fields that make up a revision.
ANNOTATION_WORKSPACE_HASH: Final = "workspace.kaito.io/hash"
#: Revision number of the RAGEngine's current ControllerRevision.
ANNOTATION_RAGENGINE_REVISION: Final = "ragengine.kaito.io/revision"

# Finalizers.
#: Held on a Workspace until its nodes are released.
FINALIZER_WORKSPACE: Final = "workspace.finalizer.kaito.sh"
#: Held on a RAGEngine until its nodes are released.
FINALIZER_RAGENGINE: Final = "ragengine.finalizer.kaito.sh"
#: Held on an InferenceSet until its children are gone.
FINALIZER_INFERENCESET: Final = "inferenceset.finalizer.kaito.sh"

# Runtime annotation values.
#: The vLLM runtime (the default).
RUNTIME_VLLM: Final = "vllm"
#: The Hugging Face transformers runtime.
RUNTIME_TRANSFORMERS: Final = "transformers"

#: Label keys KAITO owns; a user's ``labelSelector`` may not consist of only these.
RESERVED_LABEL_KEYS: Final[frozenset[str]] = frozenset(
    {
        LABEL_WORKSPACE,
        LABEL_WORKSPACE_NAMESPACE,
        LABEL_RAGENGINE,
        LABEL_RAGENGINE_NAMESPACE,
        LABEL_INFERENCESET_CREATED_BY,
    }
)
#: Label key prefixes KAITO owns (``karpenter.kaito.sh/workspace-name``, ...).
RESERVED_LABEL_PREFIXES: Final[tuple[str, ...]] = ("karpenter.kaito.sh/",)


def is_reserved_label_key(key: str) -> bool:
    """Whether ``key`` is a label key KAITO sets itself (users must not select on it)."""
    return key in RESERVED_LABEL_KEYS or key.startswith(RESERVED_LABEL_PREFIXES)
