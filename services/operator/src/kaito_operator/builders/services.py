"""The Services in front of a Workspace's or RAGEngine's pods (port 80 -> ``http``)."""

from __future__ import annotations

from typing import Any

from kaito_operator.builders.common import object_meta, selector_labels
from kaito_sdk import labels
from kaito_sdk.api import KubeObject

__all__ = [
    "RAY_PORT",
    "SERVICE_PORT",
    "headless_service",
    "headless_service_name",
    "service",
    "wants_load_balancer",
]

#: The port clients use; it maps to the container port named ``http``.
SERVICE_PORT = 80
#: Ray's GCS port on the leader of a multi-node vLLM deployment.
RAY_PORT = 6379


def service(
    owner: KubeObject, *, leader_only: bool = False, load_balancer: bool = False
) -> dict[str, Any]:
    """The ClusterIP Service ``<name>``: 80 -> ``http``; only pod 0 when ``leader_only``."""
    selector = selector_labels(owner)
    if leader_only:
        selector["apps.kubernetes.io/pod-index"] = "0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, str(owner.metadata.name)),
        "spec": {
            "type": "LoadBalancer" if load_balancer else "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def headless_service_name(owner: KubeObject) -> str:
    """Name of the headless Service that gives StatefulSet pods stable DNS names."""
    return f"{owner.metadata.name}-headless"


def headless_service(owner: KubeObject, *, ray: bool = False) -> dict[str, Any]:
    """The headless Service ``<name>-headless`` (pod DNS for the StatefulSet and Ray)."""
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}
    ]
    if ray:
        ports.append({"name": "ray", "port": RAY_PORT, "targetPort": RAY_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, headless_service_name(owner)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(owner),
            "ports": ports,
        },
    }


def wants_load_balancer(owner: KubeObject) -> bool:
    """KAITO's testing switch ``kaito.sh/enablelb: "True"``."""
    annotations = owner.metadata.annotations or {}
    return annotations.get(labels.ANNOTATION_ENABLE_LB, "").lower() == "true"
