"""KAITO's condition types, reasons and states (``api/v1beta1/condition_types.go``)."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConditionReason",
    "ConditionStatus",
    "RAGEngineConditionType",
    "WorkspaceConditionType",
    "WorkspaceState",
]


class ConditionStatus(StrEnum):
    """Values of ``Condition.status``."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class WorkspaceConditionType(StrEnum):
    """Condition types a Workspace reports."""

    NODE_CLAIM_READY = "NodeClaimReady"
    """NodeClaims are ready (gpu-provisioner path)."""
    NODES_READY = "NodesReady"
    """Enough ready nodes match the workspace."""
    RESOURCE_READY = "ResourceReady"
    """Nodes are ready; False with ``ModelMirrorNotReady`` while weights are mirrored."""
    MODEL_MIRROR_READY = "ModelMirrorReady"
    """Streaming weights are mirrored."""
    INFERENCE_READY = "InferenceReady"
    """The inference StatefulSet is ready."""
    BENCHMARK_COMPLETED = "BenchmarkCompleted"
    """The post-load benchmark finished (written once)."""
    JOB_STARTED = "JobStarted"
    """The tuning Job started."""
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
    """Summary: everything the workspace asked for is in place (or the tuning succeeded)."""
    WORKSPACE_DELETING = "WorkspaceDeleting"
    """Deletion is in progress."""


class RAGEngineConditionType(StrEnum):
    """Condition types a RAGEngine reports."""

    RESOURCE_READY = "ResourceReady"
    """Compute nodes are ready."""
    NODE_CLAIM_READY = "NodeClaimReady"
    """NodeClaims are ready (gpu-provisioner path)."""
    SERVICE_READY = "ServiceReady"
    """The RAG service Deployment is ready (KAITO also spells it ``RAGEngineServiceReady``)."""
    RAGENGINE_SUCCEEDED = "RAGEngineSucceeded"
    """Summary: the engine is serving."""
    RAGENGINE_DELETING = "RAGEngineDeleting"
    """Deletion is in progress."""


class ConditionReason(StrEnum):
    """Reasons the controllers put on conditions."""

    NODES_READY = "NodesReady"
    """Enough matching nodes are ready."""
    NODES_NOT_READY = "NodesNotReady"
    """Waiting for matching nodes."""
    NODE_PROVISIONING_FAILED = "NodeProvisioningFailed"
    """Nodes could not be provisioned."""
    MODEL_MIRROR_NOT_READY = "ModelMirrorNotReady"
    """Streaming weights are still being mirrored."""
    INFERENCE_READY = "InferenceReady"
    """The inference pods are ready."""
    INFERENCE_NOT_READY = "InferenceNotReady"
    """The inference pods are not ready yet."""
    IMAGE_PULL_FAILED = "ImagePullFailed"
    """A pod cannot pull its image."""
    CONTAINER_START_FAILED = "ContainerStartFailed"
    """A container fails to start or keeps crashing."""
    POD_EVICTED = "PodEvicted"
    """A pod was evicted."""
    POD_UNSCHEDULABLE = "PodUnschedulable"
    """A pod cannot be scheduled."""
    JOB_STARTED = "JobStarted"
    """The tuning Job was created and is running."""
    JOB_SUCCEEDED = "JobSucceeded"
    """The tuning Job completed."""
    JOB_FAILED = "JobFailed"
    """The tuning Job failed."""
    SERVICE_READY = "ServiceReady"
    """The RAG service is ready."""
    SERVICE_NOT_READY = "ServiceNotReady"
    """The RAG service is not ready yet."""
    INVALID_SPEC = "InvalidSpec"
    """The object breaks a validation rule."""
    BENCHMARK_COMPLETED = "BenchmarkCompleted"
    """The benchmark finished and reported its metrics."""
    BENCHMARK_FAILED = "BenchmarkFailed"
    """The benchmark could not run."""
    DELETING = "Deleting"
    """Deletion started; owned resources are being released."""
    SUCCEEDED = "Succeeded"
    """Summary condition: all parts are ready."""
    PENDING = "Pending"
    """Summary condition: some part is not ready yet."""


class WorkspaceState(StrEnum):
    """Values of ``status.state``: Pending/Ready/NotReady (inference) or
    Pending/Running/Succeeded/Failed (tuning)."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
