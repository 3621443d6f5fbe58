"""Node provisioning objects: Karpenter NodePools and gpu-provisioner NodeClaims.

Both are cluster-scoped, so a namespaced Workspace cannot own them; they carry the
``kaito.sh/workspace`` and ``kaito.sh/workspacenamespace`` labels instead and are removed
by the Workspace's finalizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kaito_sdk import labels
from kaito_sdk.api import Workspace

__all__ = [
    "INSTANCE_TYPE_LABEL",
    "NodeClassRef",
    "node_labels",
    "nodeclaim",
    "nodeclaim_names",
    "nodepool",
    "nodepool_name",
    "owner_labels",
]

#: The well-known node label carrying the cloud instance type.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
_GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
_NODEPOOL_FOR_CLAIMS = "kaito"


@dataclass(frozen=True)
class NodeClassRef:
    """The Karpenter NodeClass nodes are created from."""

    group: str
    kind: str
    name: str


def _short_id(ws: Workspace) -> str:
    key = f"{ws.metadata.namespace}/{ws.metadata.name}"
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def owner_labels(ws: Workspace) -> dict[str, str]:
    """Labels that tie a cluster-scoped object to its Workspace."""
    return {
        labels.LABEL_WORKSPACE: str(ws.metadata.name),
        labels.LABEL_WORKSPACE_NAMESPACE: str(ws.metadata.namespace),
    }


def node_labels(ws: Workspace) -> dict[str, str]:
    """Labels stamped onto provisioned nodes: the user's matchLabels plus the owner's."""
    user = dict(ws.resource.label_selector.match_labels or {})
    return {**user, **owner_labels(ws)}


def nodepool_name(ws: Workspace) -> str:
    """The NodePool of a Workspace (unique across namespaces, at most 63 characters)."""
    return f"kaito-{str(ws.metadata.name)[:45]}-{_short_id(ws)}"


def nodepool(
    ws: Workspace, *, instance_type: str, nodes: int, node_class: NodeClassRef
) -> dict[str, Any]:
    """A Karpenter ``NodePool`` holding ``nodes`` nodes of ``instance_type`` for ``ws``."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": nodepool_name(ws), "labels": owner_labels(ws)},
        "spec": {
            "replicas": nodes,
            "limits": {"nodes": str(nodes)},
            "disruption": {"budgets": [{"nodes": "0"}]},
            "template": {
                "metadata": {"labels": node_labels(ws)},
                "spec": {
                    "nodeClassRef": {
                        "group": node_class.group,
                        "kind": node_class.kind,
                        "name": node_class.name,
                    },
                    "requirements": [
                        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [instance_type]},
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    ],
                    "taints": [dict(_GPU_TAINT)],
                    "expireAfter": "Never",
                },
            },
        },
    }


def nodeclaim_names(ws: Workspace, count: int) -> list[str]:
    """Deterministic NodeClaim names, so a restarted operator finds what it created."""
    return [f"ws{_short_id(ws)}{index}" for index in range(count)]


def nodeclaim(
    ws: Workspace,
    name: str,
    *,
    instance_type: str,
    storage: str,
    node_class: NodeClassRef,
    image_family: str = "ubuntu",
) -> dict[str, Any]:
    """A gpu-provisioner ``NodeClaim`` for one node of ``instance_type``."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "labels": {**node_labels(ws), "karpenter.sh/nodepool": _NODEPOOL_FOR_CLAIMS},
            "annotations": {
                "karpenter.sh/do-not-disrupt": "true",
                labels.ANNOTATION_NODE_IMAGE_FAMILY: image_family,
            },
        },
        "spec": {
            "nodeClassRef": {
                "group": node_class.group,
                "kind": node_class.kind,
                "name": node_class.name,
            },
            "requirements": [
                {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [instance_type]},
                {
                    "key": "karpenter.sh/nodepool",
                    "operator": "In",
                    "values": [_NODEPOOL_FOR_CLAIMS],
                },
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "resources": {"requests": {"storage": storage}},
            "taints": [dict(_GPU_TAINT)],
        },
    }
