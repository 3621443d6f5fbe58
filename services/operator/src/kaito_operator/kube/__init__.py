"""Talking to the Kubernetes API (through lightkube): the client and the resources it uses."""

from kaito_operator.kube.client import FIELD_MANAGER, KubeApiError, KubeClient, config_from_kopf
from kaito_operator.kube.resources import RESOURCES, ResourceType, UnknownKindError, resource_for

__all__ = [
    "FIELD_MANAGER",
    "RESOURCES",
    "KubeApiError",
    "KubeClient",
    "ResourceType",
    "UnknownKindError",
    "config_from_kopf",
    "resource_for",
]
