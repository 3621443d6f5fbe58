"""Shared pieces of every child object: names, labels, owner references, placement.

Builders are pure: typed SDK objects in, manifest dicts out; no I/O, no clock.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaito_sdk import labels
from kaito_sdk.api import KubeObject, LabelSelector

__all__ = [
    "CONTAINER_SECURITY",
    "GPU_RESOURCE",
    "GPU_TOLERATIONS",
    "NEWEST",
    "OLDEST_SUPPORTED",
    "POD_SECURITY",
    "SERVICE_HOME",
    "KubeVersion",
    "config_hash",
    "harden",
    "node_affinity",
    "object_meta",
    "owner_reference",
    "selector_labels",
    "shm_volume",
    "workspace_labels",
]

#: The extended resource NVIDIA's device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: Taints KAITO puts on GPU nodes (and the device plugin's): pods must tolerate them.
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]


#: The service images' user and group (tools/images.py and the Dockerfiles: ``kaito``).
SERVICE_UID = 10001
#: That user's home: the services' caches (model downloads, compiler caches) go under it.
SERVICE_HOME = "/home/kaito"
#: What every container running one of our images gets: no privileges, a read-only root.
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
#: The pod-level part: RuntimeDefault seccomp, volumes writable by the services' group
#: (changed only where the volume's root does not match, so large volumes mount fast).
POD_SECURITY: dict[str, Any] = {
    "fsGroup": SERVICE_UID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True, order=True)
class KubeVersion:
    """A Kubernetes API server version (major, minor): which API fields it knows.

    Builders set a field newer than :data:`OLDEST_SUPPORTED` only when the server's
    version has it; a real API server refuses a server-side apply with an unknown field.
    """

    major: int
    minor: int

    @classmethod
    def from_version_info(cls, info: Mapping[str, Any]) -> KubeVersion:
        """From the body of ``GET /version`` (``{"major": "1", "minor": "20+"}``)."""
        try:
            major = int(re.sub(r"\D", "", str(info["major"])))
            minor = int(re.sub(r"\D", "", str(info["minor"])))
        except (KeyError, ValueError):
            raise ValueError(f"not a /version answer: {dict(info)!r}") from None
        return cls(major, minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


#: The oldest Kubernetes the operator and the charts support (Chart.yaml kubeVersion).
OLDEST_SUPPORTED = KubeVersion(1, 20)
#: Assumed when the server's version is unknown (``kaito render``): every field is set.
NEWEST = KubeVersion(1, 10_000)


def owner_reference(owner: KubeObject) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (children are garbage-collected with it)."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workspace_labels(owner: KubeObject) -> dict[str, str]:
    """Labels every child of a Workspace carries (``kaito.sh/workspace=<name>``)."""
    return {labels.LABEL_WORKSPACE: str(owner.metadata.name)}


def selector_labels(owner: KubeObject) -> dict[str, str]:
    """The pod selector of a Workspace or RAGEngine's workload."""
    key = labels.LABEL_RAGENGINE if owner.kind == "RAGEngine" else labels.LABEL_WORKSPACE
    return {key: str(owner.metadata.name)}


#: A container that fails without writing ``/dev/termination-log`` gets the last lines of its
#: log as ``lastState.terminated.message``. Our services print the cause of a fatal error
#: as their last stderr line, so the Workspace status can say why a pod crash-loops.
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"


def object_meta(
    owner: KubeObject,
    name: str,
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Metadata of a namespaced child of ``owner``: same namespace, labels, owner reference."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.metadata.namespace,
        "labels": {**selector_labels(owner), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def node_affinity(selector: LabelSelector | None) -> dict[str, Any] | None:
    """Required node affinity for a user's label selector (reserved KAITO keys dropped)."""
    if selector is None:
        return None
    expressions: list[dict[str, Any]] = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted((selector.match_labels or {}).items())
        if not labels.is_reserved_label_key(key)
    ]
    for requirement in selector.match_expressions or []:
        if labels.is_reserved_label_key(requirement.key):
            continue
        expression: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator}
        if requirement.values is not None:
            expression["values"] = list(requirement.values)
        expressions.append(expression)
    if not expressions:
        return None
    terms = [{"matchExpressions": expressions}]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def shm_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``/dev/shm`` memory-backed volume and its mount (PyTorch/NCCL need a large shm)."""
    return (
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 (a mount, not a temp file)
    )


def harden(
    pod_spec: dict[str, Any],
    ours: list[dict[str, Any]],
    *,
    writable: Mapping[str, str] | None = None,
) -> None:
    """Run the containers ``ours`` (our images) non-root on a read-only root filesystem.

    Each gets :data:`CONTAINER_SECURITY` and emptyDirs at ``/tmp``, at the home directory
    (caches) and at the paths of ``writable`` (volume name -> path), where no volume of its
    own is mounted already;
    the pod gets :data:`POD_SECURITY`. Containers of the user's images (adapter and data
    pullers) keep the user's settings: they may run as root.
    """
    scratch = {"tmp": "/tmp", "home": SERVICE_HOME}  # noqa: S108 (a mount, not a temp file)
    scratch.update(writable or {})
    volumes: list[dict[str, Any]] = pod_spec.setdefault("volumes", [])
    used: set[str] = set()
    for container in ours:
        container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY)
        mounts: list[dict[str, Any]] = container.setdefault("volumeMounts", [])
        mounted = {mount["mountPath"] for mount in mounts}
        for name, path in scratch.items():
            if path not in mounted:
                mounts.append({"name": name, "mountPath": path})
                used.add(name)
    volumes += [{"name": name, "emptyDir": {}} for name in scratch if name in used]
    pod_spec["securityContext"] = {**POD_SECURITY, **pod_spec.get("securityContext", {})}


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (rolls pods when it changes)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
