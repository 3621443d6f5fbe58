"""End to end: the real operator serves inference Workspaces against the API emulator.

Objects are schema-validated; status follows the pods, nodes and StatefulSet the tests
report as the kubelet and controllers would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator_testing import kubelet
from kaito_operator_testing.harness import OperatorHarness, inference_workspace
from kaito_sdk.contracts import inference as contract

pytestmark = pytest.mark.asyncio
WS = ("kaito.sh/v1beta1", "workspaces")
STS = ("apps/v1", "statefulsets")


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


async def test_cpu_preset_statefulset_services_and_honest_readiness(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("small", CPU, annotations=TRANSFORMERS))
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
        cluster.has_condition("small", "ResourceReady", "True"), message="ResourceReady"
    )
    assert cluster.condition("small", "InferenceReady")["status"] == "False"
    assert cluster.status("small")["state"] == "Pending"
    [pod] = await kubelet.create_pods(emu, sts, 1, node="cpu-node-1")
    await kubelet.set_pod_state(emu, pod, ready=True)
    # Pods ready, but the StatefulSet has not observed its generation: not ready yet.
    await cluster.wait_for(
        cluster.has_condition("small", "InferenceReady", "False"), message="rollout pending"
    )
    await kubelet.set_workload_ready(emu, sts, 1)
    await cluster.wait_for(
        cluster.has_condition("small", "InferenceReady", "True"), message="InferenceReady"
    )
    status = cluster.status("small")
    assert status["state"] == "Ready"
    assert status["workerNodes"] == ["cpu-node-1"]
    assert cluster.condition("small", "WorkspaceSucceeded")["status"] == "True"

    # A crash loop makes it not ready again, and the reason says so.
    crashing = [kubelet.container_failing("CrashLoopBackOff", last_reason="Error", exit_code=3)]
    await kubelet.set_pod_state(emu, pod, ready=False, containers=crashing)
    cond = await cluster.wait_for(
        cluster.has_condition("small", "InferenceReady", "False", "CrashLoopBackOff"),
        message="crash loop",
    )
    assert "exit code 3" in cond["message"]
    assert cluster.status("small")["state"] == "NotReady"
    oom = [kubelet.container_failing("CrashLoopBackOff", last_reason="OOMKilled", exit_code=137)]
    await kubelet.set_pod_state(emu, pod, ready=False, containers=oom)
    await cluster.wait_for(
        cluster.has_condition("small", "InferenceReady", "False", "OOMKilled"), message="OOM"
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
    await emu.create_object(inference_workspace("stuck", CPU, annotations=TRANSFORMERS))
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
        cluster.has_condition("stuck", "InferenceReady", "False", "PodUnschedulable"),
        message="unschedulable",
    )
    assert "Insufficient cpu" in cond["message"]
    await kubelet.set_pod_state(
        emu, pod, ready=False, containers=[kubelet.container_failing("ErrImagePull")]
    )
    await cluster.wait_for(
        cluster.has_condition("stuck", "InferenceReady", "False", "ImagePullFailed"),
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
    await emu.create_object(inference_workspace("tuned", inference, annotations=TRANSFORMERS))
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
    await emu.create_object(
        inference_workspace("late", {**CPU, "config": "later"}, annotations=TRANSFORMERS)
    )

    def waiting_for_config() -> Any:
        cond = cluster.condition("late", "InferenceReady")
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
    await emu.create_object(
        inference_workspace("custom", {"template": template}, instanceType=GPU_SKU)
    )
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
    await emu.create_object(inference_workspace("crashy", CPU, annotations=TRANSFORMERS))
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


async def test_restarted_operator_keeps_a_ready_workspace_ready(cluster: OperatorHarness) -> None:
    """The status reads children from kopf indexes: a restarted operator must not write a
    status from a half-filled cache (kopf runs no handler before the initial listings)."""
    emu = cluster.emulator
    await emu.create_object(inference_workspace("steady", CPU, annotations=TRANSFORMERS))
    sts = await cluster.wait_for(
        lambda: emu.read_object(*STS, "default", "steady"), message="StatefulSet"
    )
    [pod] = await kubelet.create_pods(emu, sts, 1, node="cpu-node-1")
    await kubelet.set_pod_state(emu, pod, ready=True)
    await kubelet.set_workload_ready(emu, sts, 1)
    await cluster.wait_for(
        cluster.has_condition("steady", "InferenceReady", "True"), message="InferenceReady"
    )
    await cluster.stop_operator()
    mark = len(emu.recorded_requests)
    await cluster.start_operator()
    await asyncio.sleep(2.0)  # a few resyncs (0.5 s apart) and the resume reconcile

    writes = [
        r.data
        for r in emu.recorded_requests[mark:]
        if r.resource is not None
        and r.resource.plural == "workspaces"
        and r.subresource == "status"
        and r.method.value == "PATCH"
    ]
    for write in writes:
        for cond in write["status"]["conditions"]:
            assert cond["status"] == "True", write
    assert cluster.status("steady")["state"] == "Ready"


async def test_unknown_preset_is_reported_in_status(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("typo", {"preset": {"name": "phi-4-mini-instruc"}}))
    cond = await cluster.wait_for(
        cluster.has_condition("typo", "WorkspaceSucceeded", "False", "InvalidSpec"),
        message="InvalidSpec",
    )
    assert cond["message"].startswith("inference.preset.name: unknown preset 'phi-4-mini-instruc'")
    assert "did you mean phi-4-mini-instruct" in cond["message"]
    assert cluster.status("typo")["state"] == "NotReady"
    assert emu.read_object(*STS, "default", "typo") is None
