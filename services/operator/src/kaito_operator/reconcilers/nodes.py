"""Node provisioning for a Workspace: Karpenter NodePools, gpu-provisioner NodeClaims, or BYO.

``provision`` creates what the mode needs, ``read`` lists what the status is computed from
and the pure :func:`node_state` says whether enough nodes are ready (and why not);
``release`` removes what was provisioned (called by the finalizer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaito_operator.builders import nodes as builders
from kaito_operator.builders.common import GPU_RESOURCE
from kaito_operator.kube import KubeClient
from kaito_operator.settings import OperatorSettings
from kaito_operator.status import NodeState
from kaito_sdk import labels
from kaito_sdk.api import ConditionReason, LabelSelector, Workspace
from kaito_sdk.skus import Cloud, GpuSku

__all__ = [
    "NodeInventory",
    "NodeProvisioner",
    "NodeState",
    "gpu_sku_from_labels",
    "node_state",
    "selector_matches",
]

_GFD_PRODUCT = "nvidia.com/gpu.product"
_GFD_COUNT = "nvidia.com/gpu.count"
_GFD_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU


def selector_matches(selector: LabelSelector, node_labels: Mapping[str, str]) -> bool:
    """Whether a node's labels satisfy a Workspace's label selector."""
    for key, value in (selector.match_labels or {}).items():
        if node_labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or []:
        values = requirement.values or []
        present = requirement.key in node_labels
        match requirement.operator:
            case "In":
                ok = present and node_labels[requirement.key] in values
            case "NotIn":
                ok = not present or node_labels[requirement.key] not in values
            case "Exists":
                ok = present
            case _:
                ok = not present
        if not ok:
            return False
    return True


def _node_ready(node: Mapping[str, Any], *, gpu: bool) -> bool:
    status = node.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Ready") != "True":
        return False
    if gpu:
        allocatable = (status.get("allocatable") or {}).get(GPU_RESOURCE, "0")
        return str(allocatable).isdigit() and int(allocatable) > 0
    return True


def gpu_sku_from_labels(node: Mapping[str, Any]) -> GpuSku | None:
    """A SKU description from NVIDIA GPU feature discovery labels, or None without them."""
    node_labels = node.get("metadata", {}).get("labels") or {}
    try:
        count = int(node_labels[_GFD_COUNT])
        memory_gib = int(node_labels[_GFD_MEMORY]) // 1024
        product = node_labels[_GFD_PRODUCT]
    except (KeyError, ValueError):
        return None
    name = node_labels.get(builders.INSTANCE_TYPE_LABEL, product)
    return GpuSku(name, Cloud.AZURE, product, count, memory_gib)


#: How long one list of the cluster's Nodes answers every Workspace (a wave of reconciles
#: and status recomputes reads it once, not once per Workspace).
NODE_LIST_SECONDS = 1.0


class NodeProvisioner:
    """Provision, observe and release the nodes of Workspaces, per the configured mode."""

    def __init__(
        self,
        kube: KubeClient,
        settings: OperatorSettings,
        *,
        node_list_seconds: float = NODE_LIST_SECONDS,
    ) -> None:
        self.kube = kube
        self.node_list_seconds = node_list_seconds
        self._node_list: asyncio.Task[list[dict[str, Any]]] | None = None
        self._node_list_at = 0.0
        self.mode = settings.node_provisioner
        self.node_class = builders.NodeClassRef(
            settings.karpenter_node_class_group,
            settings.karpenter_node_class_kind,
            settings.karpenter_node_class_name,
        )

    def _node_class(self, ws: Workspace) -> builders.NodeClassRef:
        name = (ws.metadata.annotations or {}).get(labels.ANNOTATION_NODE_CLASS_NAME)
        if not name:
            return self.node_class
        return builders.NodeClassRef(self.node_class.group, self.node_class.kind, name)

    async def provision(self, ws: Workspace, *, nodes: int, storage: str) -> None:
        """Create the NodePool or NodeClaims a GPU Workspace needs (no-op for BYO)."""
        instance_type = ws.resource.instance_type
        if self.mode == "byo" or not instance_type:
            return
        node_class = self._node_class(ws)
        if self.mode == "karpenter":
            pool = builders.nodepool(
                ws, instance_type=instance_type, nodes=nodes, node_class=node_class
            )
            await self.kube.apply(pool)
            return
        annotations = ws.metadata.annotations or {}
        family = annotations.get(labels.ANNOTATION_NODE_IMAGE_FAMILY, "ubuntu").lower()
        for name in builders.nodeclaim_names(ws, nodes):
            claim = builders.nodeclaim(
                ws,
                name,
                instance_type=instance_type,
                storage=storage,
                node_class=node_class,
                image_family=family,
            )
            await self.kube.apply(claim)

    async def release(self, ws: Workspace) -> None:
        """Delete the NodePool or NodeClaims provisioned for ``ws`` (nothing for BYO)."""
        if self.mode == "byo":
            return
        kind = "NodePool" if self.mode == "karpenter" else "NodeClaim"
        for obj in await self.kube.list("karpenter.sh/v1", kind, labels=builders.owner_labels(ws)):
            await self.kube.delete("karpenter.sh/v1", kind, obj["metadata"]["name"])

    async def all_nodes(self) -> list[dict[str, Any]]:
        """The cluster's Nodes, listed at most once per ``node_list_seconds``: callers in
        the meantime (concurrent ones included) share that list. A failed list is not kept."""
        task = self._node_list
        fresh = time.monotonic() - self._node_list_at < self.node_list_seconds
        if task is None or not fresh or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self.kube.list("v1", "Node"))
            self._node_list, self._node_list_at = task, time.monotonic()
        return await asyncio.shield(task)

    async def matching_nodes(self, selector: LabelSelector) -> list[dict[str, Any]]:
        """Nodes whose labels satisfy ``selector``."""
        all_nodes = await self.all_nodes()
        return [
            n for n in all_nodes if selector_matches(selector, n["metadata"].get("labels") or {})
        ]

    async def read(self, ws: Workspace, *, gpu: bool) -> NodeInventory:
        """The nodes matching ``ws`` (none read for CPU workloads) and, with gpu-provisioner,
        its NodeClaims: what :func:`node_state` judges."""
        if not gpu:
            return NodeInventory()
        claims = None
        if self.mode == "gpu-provisioner" and ws.resource.instance_type:
            claims = await self.kube.list(
                "karpenter.sh/v1", "NodeClaim", labels=builders.owner_labels(ws)
            )
        return NodeInventory(await self.matching_nodes(ws.resource.label_selector), claims)


@dataclass(frozen=True)
class NodeInventory:
    """What a Workspace's node condition is computed from."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    """Nodes matching the Workspace's label selector."""
    claims: list[dict[str, Any]] | None = None
    """The Workspace's NodeClaims (gpu-provisioner mode with an instance type only)."""


def node_state(inventory: NodeInventory, *, target: int, gpu: bool, byo: bool = False) -> NodeState:
    """Whether ``target`` suitable nodes are ready (CPU workloads need none); ``byo``: the
    message tells the user to label their own nodes."""
    if not gpu:
        return NodeState(True, ConditionReason.NODES_READY, "CPU workload: no GPU nodes needed")
    claim_condition = None
    if inventory.claims is not None:
        claim_condition = _claims_state(inventory.claims, target)
        if not claim_condition[0]:
            return NodeState(False, claim_condition[1], claim_condition[2], [], claim_condition)
    ready_nodes = [n for n in inventory.nodes if _node_ready(n, gpu=True)]
    ready = sorted(n["metadata"]["name"] for n in ready_nodes)
    gpus = {
        (sku.gpu_model, sku.gpu_count, sku.gpu_memory_gib)
        for sku in map(gpu_sku_from_labels, ready_nodes)
        if sku is not None
    }
    if len(gpus) > 1:
        kinds = ", ".join(
            f"{count}x {model} ({memory} GiB)" for model, count, memory in sorted(gpus)
        )
        message = (
            f"the matching nodes have different GPUs ({kinds}); a workload needs uniform nodes"
        )
        return NodeState(False, ConditionReason.NODES_NOT_READY, message, ready, claim_condition)
    if len(ready) >= target:
        message = f"{len(ready)}/{target} GPU nodes ready"
        return NodeState(
            True, ConditionReason.NODES_READY, message, ready[:target], claim_condition
        )
    message = f"{len(ready)}/{target} ready GPU nodes match the label selector" + (
        " (bring your own nodes: label them to match)" if byo else ""
    )
    return NodeState(False, ConditionReason.NODES_NOT_READY, message, ready, claim_condition)


def _claims_state(claims: list[dict[str, Any]], target: int) -> tuple[bool, str, str]:
    ready = 0
    for claim in sorted(claims, key=lambda c: str(c["metadata"]["name"])):
        conditions = (claim.get("status") or {}).get("conditions") or []
        by_type = {c.get("type"): c for c in conditions}
        if (by_type.get("Ready") or {}).get("status") == "True":
            ready += 1
            continue
        for cond in conditions:
            if cond.get("status") == "False" and cond.get("reason") and cond.get("message"):
                message = (
                    f"NodeClaim {claim['metadata']['name']}: {cond['type']} is False: "
                    f"{cond['reason']}: {cond['message']}"
                )
                return False, ConditionReason.NODE_PROVISIONING_FAILED, message
    if ready >= target:
        return True, "NodeClaimsReady", f"{ready}/{target} NodeClaims ready"
    return False, "NodeClaimsNotReady", f"{ready}/{target} NodeClaims ready"
