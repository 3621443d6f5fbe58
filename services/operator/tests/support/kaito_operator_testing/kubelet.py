"""What the kubelet, the controllers and the provisioners would write, for tests.

The emulator runs no controllers: tests create pods and nodes and patch workload status
with these helpers, exactly as the real components would report it.
"""

from __future__ import annotations

from typing import Any

from kaito_operator_testing.emulator import KubernetesEmulator

__all__ = [
    "add_node",
    "container_failing",
    "create_pods",
    "set_pod_state",
    "set_workload_ready",
]

_NOW = "2026-01-01T00:00:00Z"


async def add_node(
    emulator: KubernetesEmulator,
    name: str,
    labels: dict[str, str],
    *,
    ready: bool = True,
    gpus: int = 0,
) -> dict[str, Any]:
    """A node with ``labels``; ``gpus`` > 0 makes the device plugin report them."""
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    await emulator.create_object(node)
    status = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": str(gpus)},
    }
    return await emulator.patch_object(
        "v1", "nodes", None, name, {"status": status}, subresource="status"
    )


async def create_pods(
    emulator: KubernetesEmulator,
    workload: dict[str, Any],
    count: int,
    *,
    names: list[str] | None = None,
    node: str = "node-0",
) -> list[dict[str, Any]]:
    """Pods from a StatefulSet, Job or Deployment's template (as its controller would)."""
    meta = workload["metadata"]
    template = workload["spec"]["template"]
    pods = []
    for index in range(count):
        name = names[index] if names else f"{meta['name']}-{index}"
        labels = {
            **template["metadata"].get("labels", {}),
            "apps.kubernetes.io/pod-index": str(index),
        }
        owner = {
            "apiVersion": workload["apiVersion"],
            "kind": workload["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": template["metadata"].get("annotations", {}),
                "ownerReferences": [owner],
            },
            "spec": {**template["spec"], "nodeName": node},
        }
        pods.append(await emulator.create_object(pod))
    return pods


def container_failing(
    reason: str, *, last_reason: str | None = None, exit_code: int = 1
) -> dict[str, Any]:
    """A container status stuck waiting with ``reason`` (after a ``last_reason`` termination)."""
    status: dict[str, Any] = {
        "name": "main",
        "image": "example.com/image:1",
        "ready": False,
        "restartCount": 3 if last_reason else 0,
        "state": {"waiting": {"reason": reason, "message": f"{reason} happened"}},
    }
    if last_reason:
        status["lastState"] = {"terminated": {"reason": last_reason, "exitCode": exit_code}}
    return status


async def set_pod_state(
    emulator: KubernetesEmulator,
    pod: dict[str, Any],
    *,
    ready: bool,
    containers: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Report a pod as the kubelet would: Ready or not, with container statuses."""
    running = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "ready": ready,
            "restartCount": 0,
            "state": {"running": {"startedAt": _NOW}},
        }
        for c in pod["spec"]["containers"]
    ]
    status = {
        "phase": "Running" if ready else "Pending",
        "conditions": conditions
        if conditions is not None
        else [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
        "containerStatuses": containers if containers is not None else running,
    }
    meta = pod["metadata"]
    return await emulator.patch_object(
        "v1", "pods", meta["namespace"], meta["name"], {"status": status}, subresource="status"
    )


async def set_workload_ready(
    emulator: KubernetesEmulator, workload: dict[str, Any], replicas: int
) -> dict[str, Any]:
    """Report a StatefulSet or Deployment rollout as complete with ``replicas`` ready."""
    meta = workload["metadata"]
    api_version, namespace, name = workload["apiVersion"], meta["namespace"], meta["name"]
    plural = {"StatefulSet": "statefulsets", "Deployment": "deployments"}[workload["kind"]]
    obj = emulator.read_object(api_version, plural, namespace, name)
    assert obj is not None, f"{plural}/{name} does not exist"
    status = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas,
        "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }
    return await emulator.patch_object(
        api_version, plural, namespace, name, {"status": status}, subresource="status"
    )
