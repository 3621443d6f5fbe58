"""Talking to the Kubernetes API: the client and the table of resources it uses."""

from kaito_operator.kube.client import FIELD_MANAGER, ClusterConnection, KubeApiError, KubeClient
from kaito_operator.kube.resources import RESOURCES, ResourceType, resource_for, url_for

__all__ = [
    "FIELD_MANAGER",
    "RESOURCES",
    "ClusterConnection",
    "KubeApiError",
    "KubeClient",
    "ResourceType",
    "resource_for",
    "url_for",
]
