"""The API calls the operator makes, as RBAC rules: the one list the charts render.

A rule is granted when the operator really issues that request: kopf watches (list,
watch), the client's server-side apply (create for a new object, patch otherwise), reads
(get, list), deletes, and status patches. :func:`rules_for` gives the rules of one
deployment (one controller, one node provisioner); the e2e tests check every request
the operator sends to the emulator against it.
"""

from __future__ import annotations

from typing import Any

from kaito_operator.settings import Controller, NodeProvisioner

__all__ = ["RULES", "rules_for"]

_WATCH = ["list", "watch"]
_APPLY = ["create", "patch"]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


# Shared by both controllers: kopf's own needs.
_COMMON = [
    _rule("", ["events"], ["create"]),
    _rule("apiextensions.k8s.io", ["customresourcedefinitions"], _WATCH),
    _rule("", ["namespaces"], _WATCH),
]
_WORKSPACE = [
    # Workspaces: watched, and created, rewritten and deleted as InferenceSet members.
    _rule("kaito.sh", ["workspaces"], ["get", *_WATCH, *_APPLY, "delete"]),
    _rule("kaito.sh", ["workspaces/status"], ["patch"]),
    _rule("kaito.sh", ["inferencesets"], ["get", *_WATCH, "patch"]),
    _rule("kaito.sh", ["inferencesets/status"], ["patch"]),
    _rule("keda.sh", ["scaledobjects"], [*_APPLY, "delete"]),
    _rule("apps", ["statefulsets"], ["get", *_WATCH, *_APPLY]),
    _rule("batch", ["jobs"], ["get", *_WATCH, *_APPLY, "delete"]),
    _rule("", ["services"], _APPLY),
    _rule("", ["configmaps"], ["get", *_APPLY]),
    _rule("", ["pods"], _WATCH),
    _rule("", ["nodes"], ["list"]),
]
_PROVISIONERS: dict[str, list[dict[str, Any]]] = {
    "karpenter": [_rule("karpenter.sh", ["nodepools"], ["list", *_APPLY, "delete"])],
    "gpu-provisioner": [_rule("karpenter.sh", ["nodeclaims"], [*_WATCH, *_APPLY, "delete"])],
    "byo": [],
}
_RAGENGINE = [
    _rule("kaito.sh", ["ragengines"], ["get", *_WATCH, "patch"]),
    # The RAGEngine CRD's conversion webhook: pointed at startup where the admission
    # webhook configuration points.
    _rule("admissionregistration.k8s.io", ["validatingwebhookconfigurations"], ["get"]),
    {
        **_rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["patch"]),
        "resourceNames": ["ragengines.kaito.sh"],
    },
    _rule("kaito.sh", ["ragengines/status"], ["patch"]),
    _rule("apps", ["deployments"], ["get", *_WATCH, *_APPLY]),
    _rule("", ["services"], _APPLY),
    _rule("", ["pods"], _WATCH),
    _rule("", ["nodes"], ["list"]),
]


def rules_for(
    controller: Controller, node_provisioner: NodeProvisioner = "byo"
) -> list[dict[str, Any]]:
    """The ClusterRole rules of a deployment running ``controller``."""
    if controller == "workspace":
        return [*_COMMON, *_WORKSPACE, *_PROVISIONERS[node_provisioner]]
    return [*_COMMON, *_RAGENGINE]


#: Every rule of every deployment shape (the union).
RULES: list[dict[str, Any]] = [
    *_COMMON,
    *_WORKSPACE,
    *(rule for rules in _PROVISIONERS.values() for rule in rules),
    *(rule for rule in _RAGENGINE if rule not in _WORKSPACE),
]
