"""The Kubernetes resources the operator reads or writes, as lightkube generic resources.

Every kind is a lightkube *generic* resource: objects stay plain dicts on the way in and
out (the builders produce dicts, the SDK's models parse dicts), with no typed decoding
to undo. That holds for the built-in kinds too, not only for the CRDs (ours, Karpenter's
NodePool and NodeClaim, which gpu-provisioner also serves, KEDA's ScaledObject).
:mod:`kaito_operator.rbac` lists the verbs the operator uses on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_global_resource,
    create_namespaced_resource,
)

__all__ = ["RESOURCES", "GenericKind", "ResourceType", "UnknownKindError", "resource_for"]

#: A lightkube generic resource class (namespaced or cluster-scoped).
GenericKind = type[GenericNamespacedResource] | type[GenericGlobalResource]


@dataclass(frozen=True)
class ResourceType:
    """One API resource: its kind, collection name and scope."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        """The version within the group (``v1``)."""
        return self.api_version.rpartition("/")[2]


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("v1", "ConfigMap", "configmaps"),
    ResourceType("v1", "Service", "services"),
    ResourceType("v1", "Pod", "pods"),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("apps/v1", "StatefulSet", "statefulsets"),
    ResourceType("apps/v1", "Deployment", "deployments"),
    ResourceType("batch/v1", "Job", "jobs"),
    ResourceType("karpenter.sh/v1", "NodePool", "nodepools", namespaced=False),
    ResourceType("karpenter.sh/v1", "NodeClaim", "nodeclaims", namespaced=False),
    ResourceType("kaito.sh/v1beta1", "Workspace", "workspaces"),
    ResourceType("kaito.sh/v1beta1", "RAGEngine", "ragengines"),
    ResourceType("kaito.sh/v1beta1", "InferenceSet", "inferencesets"),
    ResourceType("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ResourceType(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
    ResourceType(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
    ),
)


def _generic(resource: ResourceType) -> GenericKind:
    args = (resource.group, resource.version, resource.kind, resource.plural)
    if resource.namespaced:
        return create_namespaced_resource(*args)
    return create_global_resource(*args)


_BY_KIND: dict[tuple[str, str], tuple[ResourceType, GenericKind]] = {
    (r.api_version, r.kind): (r, _generic(r)) for r in RESOURCES
}


class UnknownKindError(LookupError):
    """The operator was asked to handle a kind it has no entry for."""


def resource_for(api_version: str, kind: str) -> tuple[ResourceType, GenericKind]:
    """The resource type of ``apiVersion``/``kind`` and its lightkube generic resource class."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise UnknownKindError(
            f"{api_version} {kind} is not a resource the operator uses"
        ) from None
