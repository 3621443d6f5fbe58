"""End to end: the real operator serves inference Workspaces against the API emulator.

Objects are schema-validated; status follows the pods, nodes and StatefulSet the tests
report as the kubelet and controllers would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator.testing import kubelet
from kaito_operator.testing.harness import OperatorHarness
from kaito_sdk.contracts import inference as contract

pytestmark = pytest.mark.asyncio
WS = ("kaito.sh/v1beta1", "workspaces")
STS = ("apps/v1", "statefulsets")


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


def workspace(name: str, inference: dict[str, Any], **resource: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if "annotations" in resource:
        meta["annotations"] = resource.pop("annotations")
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}, **resource},
        "inference": inference,
    }


CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


def status_of(cluster: OperatorHarness, name: str) -> dict[str, Any]:
    obj = cluster.emulator.read_object(*WS, "default", name) or {}
    return obj.get("status") or {}


def condition(cluster: OperatorHarness, name: str, type_: str) -> dict[str, Any]:
    for cond in status_of(cluster, name).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def has_condition(
    cluster: OperatorHarness, name: str, type_: str, status: str, reason: str | None = None
) -> Callable[[], Any]:
    def check() -> Any:
        cond = condition(cluster, name, type_)
        ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        return cond if ok else None

    return check


async def test_cpu_preset_statefulset_services_and_honest_readiness(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    await emu.create_object(workspace("small", CPU, annotations=TRANSFORMERS))
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "small"), message="StatefulSet"
    )
    service = emu.read_object("v1", "services", "default", "small")
    headless = emu.read_object("v1", "services", "default", "small-headless")
    for obj in (sts, service, headless):
        assert obj is not None
        validate_k8s(obj)
    assert sts["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
    assert sts["spec"]["serviceName"] == "small-headless"
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["kaito-inference", "serve"]
    assert container["ports"][0] == {"name": "http", "containerPort": contract.DEFAULT_PORT}
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}}
    assert "tolerations" not in sts["spec"]["template"]["spec"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert service["spec"]["ports"][0]["port"] == 80
    assert headless["spec"]["clusterIP"] == "None"

    await cluster.wait_for(
        has_condition(cluster, "small", "ResourceReady", "True"), message="ResourceReady"
    )
    assert condition(cluster, "small", "InferenceReady")["status"] == "False"
    assert status_of(cluster, "small")["state"] == "Pending"
    [pod] = await kubelet.create_pods(emu, sts, 1, node="cpu-node-1")
    await kubelet.set_pod_state(emu, pod, ready=True)
    # Pods ready, but the StatefulSet has not observed its generation: not ready yet.
    await cluster.wait_for(
        has_condition(cluster, "small", "InferenceReady", "False"), message="rollout pending"
    )
    await kubelet.set_workload_ready(emu, sts, 1)
    await cluster.wait_for(
        has_condition(cluster, "small", "InferenceReady", "True"), message="InferenceReady"
    )
    status = status_of(cluster, "small")
    assert status["state"] == "Ready"
    assert status["workerNodes"] == ["cpu-node-1"]
    assert condition(cluster, "small", "WorkspaceSucceeded")["status"] == "True"

    # A crash loop makes it not ready again, and the reason says so.
    crashing = [kubelet.container_failing("CrashLoopBackOff", last_reason="Error", exit_code=3)]
    await kubelet.set_pod_state(emu, pod, ready=False, containers=crashing)
    cond = await cluster.wait_for(
        has_condition(cluster, "small", "InferenceReady", "False", "CrashLoopBackOff"),
        message="crash loop",
    )
    assert "exit code 3" in cond["message"]
    assert status_of(cluster, "small")["state"] == "NotReady"
    oom = [kubelet.container_failing("CrashLoopBackOff", last_reason="OOMKilled", exit_code=137)]
    await kubelet.set_pod_state(emu, pod, ready=False, containers=oom)
    await cluster.wait_for(
        has_condition(cluster, "small", "InferenceReady", "False", "OOMKilled"), message="OOM"
    )

    await emu.delete_object(*WS, "default", "small")
    await cluster.wait_for(
        lambda: emu.read_object(*WS, "default", "small") is None, message="deleted"
    )
    assert emu.read_object(*STS, "default", "small") is None
    assert emu.read_object("v1", "services", "default", "small") is None
    assert emu.read_object("v1", "pods", "default", "small-0") is None


async def test_unschedulable_and_image_pull_failures_are_named(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(workspace("stuck", CPU, annotations=TRANSFORMERS))
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "stuck"), message="StatefulSet"
    )
    [pod] = await kubelet.create_pods(emu, sts, 1)
    unschedulable = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    ]
    await kubelet.set_pod_state(emu, pod, ready=False, containers=[], conditions=unschedulable)
    cond = await cluster.wait_for(
        has_condition(cluster, "stuck", "InferenceReady", "False", "PodUnschedulable"),
        message="unschedulable",
    )
    assert "Insufficient cpu" in cond["message"]
    await kubelet.set_pod_state(
        emu, pod, ready=False, containers=[kubelet.container_failing("ErrImagePull")]
    )
    await cluster.wait_for(
        has_condition(cluster, "stuck", "InferenceReady", "False", "ImagePullFailed"),
        message="image pull",
    )


async def test_config_and_adapter_changes_roll_the_pods(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"inference_config.yaml": "transformers:\n  max_running: 4\n"},
    }
    await emu.create_object(config)
    adapters = [
        {
            "source": {
                "name": "from-image",
                "image": "registry.example.com/adapter:1",
                "imagePullSecrets": ["pull"],
            }
        },
        {
            "source": {
                "name": "from-volume",
                "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}},
            },
            "strength": "0.5",
        },
    ]
    inference = {**CPU, "config": "cfg", "adapters": adapters}
    await emu.create_object(workspace("tuned", inference, annotations=TRANSFORMERS))
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "tuned"), message="StatefulSet"
    )
    validate_k8s(sts)
    pod = sts["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert contract.CONFIG_FILE in container["command"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[contract.CONFIG_MOUNT] == "config"
    assert mounts[f"{contract.ADAPTERS_MOUNT}/from-volume"] == "adapter-from-volume"
    assert mounts[contract.ADAPTERS_MOUNT] == "adapters"
    [puller] = pod["initContainers"]
    assert puller["image"] == "registry.example.com/adapter:1"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]

    def template_hash() -> str:
        current = emu.read_object(*STS, "default", "tuned") or sts
        return str(
            current["spec"]["template"]["metadata"]["annotations"]["workspace.kaito.io/hash"]
        )

    first = template_hash()
    await emu.patch_object(*WS, "default", "tuned", {"inference": {"adapters": adapters[:1]}})
    await cluster.wait_for(lambda: template_hash() != first, message="adapter change rolls")
    second = template_hash()
    await emu.patch_object(
        "v1",
        "configmaps",
        "default",
        "cfg",
        {"data": {"inference_config.yaml": "transformers:\n  max_running: 8\n"}},
    )
    await cluster.wait_for(lambda: template_hash() != second, message="config change rolls")


async def test_missing_config_map_is_reported_then_picked_up(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(workspace("late", {**CPU, "config": "later"}, annotations=TRANSFORMERS))

    def waiting_for_config() -> Any:
        cond = condition(cluster, "late", "InferenceReady")
        return cond if "ConfigMap 'later' does not exist" in cond.get("message", "") else None

    await cluster.wait_for(waiting_for_config, message="the status names the missing ConfigMap")
    assert emu.read_object(*STS, "default", "late") is None
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "later", "namespace": "default"},
        "data": {"inference_config.yaml": "transformers: {}\n"},
    }
    await emu.create_object(config)
    await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "late"), message="StatefulSet after the ConfigMap"
    )


GPU_SKU = "Standard_NC24ads_A100_v4"


async def test_byo_gpu_nodes_gate_resource_ready(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    await emu.create_object(
        workspace("phi", {"preset": {"name": "phi-4-mini-instruct"}}, instanceType=GPU_SKU)
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
        has_condition(cluster, "phi", "ResourceReady", "False"), message="no nodes"
    )
    assert "0/1" in cond["message"]
    assert status_of(cluster, "phi")["targetNodeCount"] == 1
    await kubelet.add_node(emu, "gpu-0", {"apps": "phi"}, gpus=0)  # no device plugin yet
    await kubelet.add_node(emu, "gpu-1", {"apps": "phi"}, gpus=1)
    await cluster.wait_for(
        has_condition(cluster, "phi", "ResourceReady", "True"), message="node ready"
    )
    assert status_of(cluster, "phi")["workerNodes"] == ["gpu-1"]
    # GPU feature discovery reports a different GPU on another matching node: not uniform.
    gfd = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "1"}
    labels = {"metadata": {"labels": {**gfd, "nvidia.com/gpu.memory": "81920"}}}
    await emu.patch_object("v1", "nodes", None, "gpu-1", labels)
    small = {"apps": "phi", **gfd, "nvidia.com/gpu.memory": "40960"}
    await kubelet.add_node(emu, "gpu-2", small, gpus=1)
    cond = await cluster.wait_for(
        has_condition(cluster, "phi", "ResourceReady", "False"), message="non-uniform"
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
        workspace("big", {"preset": {"name": "qwen2.5-72b-instruct"}}, instanceType=GPU_SKU)
    )
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "big"), message="StatefulSet"
    )
    [pool] = emu.list_objects("karpenter.sh/v1", "nodepools")
    target = await cluster.wait_for(
        lambda: status_of(cluster, "big").get("targetNodeCount"), message="targetNodeCount"
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
        workspace("claimed", {"preset": {"name": "phi-4-mini-instruct"}}, instanceType=GPU_SKU)
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
        has_condition(cluster, "claimed", "NodeClaimReady", "False", "NodeProvisioningFailed"),
        message="claim failure",
    )
    assert "InsufficientCapacity" in cond["message"]
    assert condition(cluster, "claimed", "ResourceReady")["status"] == "False"
    assert status_of(cluster, "claimed")["state"] == "NotReady"
    await emu.delete_object(*WS, "default", "claimed")
    await cluster.wait_for(
        lambda: not emu.list_objects("karpenter.sh/v1", "nodeclaims"), message="NodeClaims removed"
    )
    assert rbac_violations(cluster, "workspace") == []


async def test_template_workspace_runs_the_users_pod(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "example.com/llm:1",
                    "ports": [{"name": "http", "containerPort": 5000}],
                }
            ]
        },
    }
    await emu.create_object(workspace("custom", {"template": template}, instanceType=GPU_SKU))
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "custom"), message="StatefulSet"
    )
    validate_k8s(sts)
    pod = sts["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "example.com/llm:1"
    assert pod["metadata"]["labels"] == {"team": "a", "kaito.sh/workspace": "custom"}
    assert "nodeAffinity" in pod["spec"]["affinity"]
    assert pod["spec"]["tolerations"]


async def test_restarted_operator_converges_without_duplicates(
    cluster: OperatorHarness, rbac_violations: Callable[..., list[str]]
) -> None:
    emu = cluster.emulator
    failing = {"on": True}

    def statefulset_write(request: Any) -> bool:
        resource = request.resource
        plural = resource.plural if resource is not None else None
        return failing["on"] and plural == "statefulsets" and request.method.value == "PATCH"

    # The StatefulSet write fails: the reconcile stops after the Services.
    emu[statefulset_write] << 500
    await emu.create_object(workspace("crashy", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(
        lambda: emu.read_object("v1", "services", "default", "crashy"), message="Service"
    )
    await cluster.stop_operator()
    assert emu.read_object(*STS, "default", "crashy") is None
    failing["on"] = False
    await cluster.start_operator()
    await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "crashy"), message="StatefulSet after restart"
    )
    assert len(emu.list_objects("v1", "services", "default")) == 2
    assert len(emu.list_objects(*STS, "default")) == 1
    assert rbac_violations(cluster, "workspace") == []


async def test_unknown_preset_is_reported_in_status(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(workspace("typo", {"preset": {"name": "phi-4-mini-instruc"}}))
    cond = await cluster.wait_for(
        has_condition(cluster, "typo", "WorkspaceSucceeded", "False", "InvalidSpec"),
        message="InvalidSpec",
    )
    assert cond["message"].startswith("inference.preset.name: unknown preset 'phi-4-mini-instruc'")
    assert "did you mean phi-4-mini-instruct" in cond["message"]
    assert status_of(cluster, "typo")["state"] == "NotReady"
    assert emu.read_object(*STS, "default", "typo") is None
