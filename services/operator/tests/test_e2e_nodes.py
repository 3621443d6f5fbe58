"""End to end: node provisioning (BYO, Karpenter NodePools, gpu-provisioner NodeClaims)
gates and names Workspace readiness; what was provisioned goes with the Workspace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator_testing import kubelet
from kaito_operator_testing.harness import OperatorHarness, inference_workspace

pytestmark = pytest.mark.asyncio
WS = ("kaito.sh/v1beta1", "workspaces")
STS = ("apps/v1", "statefulsets")


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


GPU_SKU = "Standard_NC24ads_A100_v4"


async def test_byo_gpu_nodes_gate_resource_ready(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    await emu.create_object(
        inference_workspace(
            "phi", {"preset": {"name": "phi-4-mini-instruct"}}, instanceType=GPU_SKU
        )
    )
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "phi"), message="StatefulSet"
    )
    validate_k8s(sts)
    pod = sts["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    expressions = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions == [{"key": "apps", "operator": "In", "values": ["phi"]}]
    cond = await cluster.wait_for(
        cluster.has_condition("phi", "ResourceReady", "False"), message="no nodes"
    )
    assert "0/1" in cond["message"]
    assert cluster.status("phi")["targetNodeCount"] == 1
    await kubelet.add_node(emu, "gpu-0", {"apps": "phi"}, gpus=0)  # no device plugin yet
    await kubelet.add_node(emu, "gpu-1", {"apps": "phi"}, gpus=1)
    await cluster.wait_for(
        cluster.has_condition("phi", "ResourceReady", "True"), message="node ready"
    )
    assert cluster.status("phi")["workerNodes"] == ["gpu-1"]
    # GPU feature discovery reports a different GPU on another matching node: not uniform.
    gfd = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "1"}
    labels = {"metadata": {"labels": {**gfd, "nvidia.com/gpu.memory": "81920"}}}
    await emu.patch_object("v1", "nodes", None, "gpu-1", labels)
    small = {"apps": "phi", **gfd, "nvidia.com/gpu.memory": "40960"}
    await kubelet.add_node(emu, "gpu-2", small, gpus=1)
    cond = await cluster.wait_for(
        cluster.has_condition("phi", "ResourceReady", "False"), message="non-uniform"
    )
    assert "different GPUs" in cond["message"]


@pytest.mark.parametrize(
    "operator_settings",
    [{"controllers": frozenset({"workspace"}), "node_provisioner": "karpenter"}],
)
async def test_karpenter_nodepool_per_workspace_removed_on_delete(
    cluster: OperatorHarness, rbac_violations: Callable[..., list[str]]
) -> None:
    emu = cluster.emulator
    await emu.create_object(
        inference_workspace(
            "big", {"preset": {"name": "qwen2.5-72b-instruct"}}, instanceType=GPU_SKU
        )
    )
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "big"), message="StatefulSet"
    )
    [pool] = emu.list_objects("karpenter.sh/v1", "nodepools")
    target = await cluster.wait_for(
        lambda: cluster.status("big").get("targetNodeCount"), message="targetNodeCount"
    )
    assert target > 1  # 135 GiB of weights on 80 GiB GPUs
    assert pool["spec"]["replicas"] == target
    assert pool["spec"]["template"]["metadata"]["labels"]["apps"] == "big"
    # Multi-node vLLM: one pod per node, started together, leader-only Service.
    assert sts["spec"]["replicas"] == target
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    service = emu.read_object("v1", "services", "default", "big")
    assert service["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    assert "podAntiAffinity" in sts["spec"]["template"]["spec"]["affinity"]
    # The NodePool has no owner reference (cluster-scoped): the finalizer holds the
    # deletion until the operator has deleted it.
    workspace = emu.read_object(*WS, "default", "big")
    assert workspace["metadata"]["finalizers"] == ["workspace.finalizer.kaito.sh"]
    await emu.delete_object(*WS, "default", "big")
    await cluster.wait_for(
        lambda: not emu.list_objects("karpenter.sh/v1", "nodepools"), message="NodePool removed"
    )
    await cluster.wait_for(
        lambda: emu.read_object(*WS, "default", "big") is None, message="deleted"
    )
    assert rbac_violations(cluster, "workspace") == []


@pytest.mark.parametrize(
    "operator_settings",
    [{"controllers": frozenset({"workspace"}), "node_provisioner": "gpu-provisioner"}],
)
async def test_nodeclaim_provisioning_failure_is_reported(
    cluster: OperatorHarness, rbac_violations: Callable[..., list[str]]
) -> None:
    emu = cluster.emulator
    await emu.create_object(
        inference_workspace(
            "claimed", {"preset": {"name": "phi-4-mini-instruct"}}, instanceType=GPU_SKU
        )
    )
    claims = await cluster.wait_for(
        lambda: emu.list_objects("karpenter.sh/v1", "nodeclaims"), message="NodeClaim"
    )
    [claim] = claims
    assert claim["spec"]["requirements"][0]["values"] == [GPU_SKU]
    failed = {
        "conditions": [
            {
                "type": "Launched",
                "status": "False",
                "reason": "InsufficientCapacity",
                "message": "no A100 capacity in eastus",
            }
        ]
    }
    await emu.patch_object(
        "karpenter.sh/v1",
        "nodeclaims",
        None,
        claim["metadata"]["name"],
        {"status": failed},
        subresource="status",
    )
    cond = await cluster.wait_for(
        cluster.has_condition("claimed", "NodeClaimReady", "False", "NodeProvisioningFailed"),
        message="claim failure",
    )
    assert "InsufficientCapacity" in cond["message"]
    assert cluster.condition("claimed", "ResourceReady")["status"] == "False"
    assert cluster.status("claimed")["state"] == "NotReady"
    await emu.delete_object(*WS, "default", "claimed")
    await cluster.wait_for(
        lambda: not emu.list_objects("karpenter.sh/v1", "nodeclaims"), message="NodeClaims removed"
    )
    assert rbac_violations(cluster, "workspace") == []
