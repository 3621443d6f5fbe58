"""The Kubernetes resources the operator's client reads or writes: kind -> plural, scope.

The client builds URLs from this table; :mod:`kaito_operator.rbac` lists the verbs the
operator uses on them (and on what kopf watches).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESOURCES", "ResourceType", "UnknownKindError", "resource_for", "url_for"]


@dataclass(frozen=True)
class ResourceType:
    """One API resource: where it lives and whether it is namespaced."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]


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

_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


class UnknownKindError(LookupError):
    """The operator was asked to handle a kind it has no entry for."""


def resource_for(api_version: str, kind: str) -> ResourceType:
    """The resource type of ``apiVersion``/``kind``."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise UnknownKindError(
            f"{api_version} {kind} is not a resource the operator uses"
        ) from None


def url_for(
    resource: ResourceType,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The API path of a collection (no ``name``) or an object."""
    prefix = f"/apis/{resource.api_version}" if resource.group else f"/api/{resource.api_version}"
    parts = [prefix]
    if resource.namespaced and namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(resource.plural)
    if name is not None:
        parts.append(name)
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)
