"""End to end: the real operator turns tuning Workspaces into Jobs, and their status
follows what the (simulated) Job controller and kubelet report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kaito_operator_testing import kubelet
from kaito_operator_testing.harness import OperatorHarness
from kaito_sdk.contracts import tuning as tuning_contract

pytestmark = pytest.mark.asyncio


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


WS = ("kaito.sh/v1beta1", "workspaces")


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if obj is None:
        return {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def tuning_workspace(name: str, urls: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}},
        "tuning": {
            "preset": {"name": "smollm2-135m-instruct"},
            "method": "lora",
            "input": {"urls": urls},
            "output": {
                "image": "registry.example.com/adapters/a:1",
                "imagePushSecret": "push-secret",
            },
        },
    }


async def install_templates(cluster: OperatorHarness, repo: Path) -> None:
    await cluster.emulator.create_object(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kaito-workspace"}}
    )
    text = (repo / "presets" / "tuning" / "lora-params.yaml").read_text()
    await cluster.emulator.create_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "lora-params-template", "namespace": "kaito-workspace"},
            "data": {"training_config.yaml": text},
        }
    )


async def test_tuning_workspace_runs_a_job_and_reports_its_progress(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None], repo_root: Path
) -> None:
    emu = cluster.emulator
    await install_templates(cluster, repo_root)
    await emu.create_object(tuning_workspace("tune", ["https://example.com/data.jsonl"]))
    job = await cluster.wait_for(
        lambda: emu.read_object("batch/v1", "jobs", "default", "tune"), message="Job"
    )
    validate_k8s(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"] == tuning_contract.fetch_argv(
        ["https://example.com/data.jsonl"]
    )
    [main] = pod["containers"]
    assert main["command"] == tuning_contract.run_argv(
        method="lora",
        preset="smollm2-135m-instruct",
        push_image="registry.example.com/adapters/a:1",
    )
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts[tuning_contract.CONFIG_DIR] == "config"
    assert mounts[tuning_contract.DOCKER_CONFIG_DIR] == "docker-config"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "tune-training-config"
    assert volumes["docker-config"]["secret"]["secretName"] == "push-secret"
    config_map = emu.read_object("v1", "configmaps", "default", "tune-training-config")
    assert config_map is not None
    validate_k8s(config_map)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Workspace"

    ws = await cluster.wait_for(
        cluster.object_with_condition(WS, "tune", "JobStarted", "False"), message="JobStarted=False"
    )
    assert ws["status"]["state"] == "Pending"
    await emu.patch_object(
        "batch/v1",
        "jobs",
        "default",
        "tune",
        {"status": {"startTime": "2026-01-01T00:00:00Z", "active": 1}},
        subresource="status",
    )
    ws = await cluster.wait_for(
        cluster.object_with_condition(WS, "tune", "JobStarted", "True"), message="JobStarted"
    )
    assert ws["status"]["state"] == "Running"
    await emu.patch_object(
        "batch/v1",
        "jobs",
        "default",
        "tune",
        {"status": {"active": 0, "succeeded": 1}},
        subresource="status",
    )
    ws = await cluster.wait_for(
        cluster.object_with_condition(WS, "tune", "WorkspaceSucceeded", "True"), message="succeeded"
    )
    assert ws["status"]["state"] == "Succeeded"

    # A spec change replaces the Job; deleting the Workspace removes its children.
    old_uid = job["metadata"]["uid"]
    await emu.patch_object(
        *WS, "default", "tune", {"tuning": {"input": {"urls": ["https://example.com/other.jsonl"]}}}
    )

    def replaced() -> Any:
        current = emu.read_object("batch/v1", "jobs", "default", "tune")
        return current if current is not None and current["metadata"]["uid"] != old_uid else None

    new_job = await cluster.wait_for(replaced, message="the replacement Job")
    assert "other.jsonl" in " ".join(
        new_job["spec"]["template"]["spec"]["initContainers"][0]["command"]
    )
    await emu.delete_object(*WS, "default", "tune")
    await cluster.wait_for(
        lambda: emu.read_object(*WS, "default", "tune") is None, message="deletion"
    )
    assert emu.read_object("batch/v1", "jobs", "default", "tune") is None
    assert emu.read_object("v1", "configmaps", "default", "tune-training-config") is None


async def test_tuning_job_failure_and_image_pull_errors_are_reported(
    cluster: OperatorHarness, repo_root: Path
) -> None:
    emu = cluster.emulator
    await install_templates(cluster, repo_root)
    await emu.create_object(tuning_workspace("bad", ["https://example.com/data.jsonl"]))
    job = await cluster.wait_for(
        lambda: emu.read_object("batch/v1", "jobs", "default", "bad"), message="Job"
    )
    [pod] = await kubelet.create_pods(emu, job, 1, names=["bad-abcde"])
    await kubelet.set_pod_state(
        emu, pod, ready=False, containers=[kubelet.container_failing("ImagePullBackOff")]
    )

    def pull_failure() -> Any:
        cond = conditions(emu.read_object(*WS, "default", "bad")).get("WorkspaceSucceeded")
        return cond if cond and cond["reason"] == "ImagePullFailed" else None

    cond = await cluster.wait_for(pull_failure, message="ImagePullFailed")
    assert "cannot pull" in cond["message"]
    failed = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    }
    await emu.patch_object(
        "batch/v1", "jobs", "default", "bad", {"status": failed}, subresource="status"
    )

    def job_failed() -> Any:
        ws = emu.read_object(*WS, "default", "bad")
        return ws if ws and ws["status"].get("state") == "Failed" else None

    ws = await cluster.wait_for(job_failed, message="state Failed")
    assert "BackoffLimitExceeded" in conditions(ws)["WorkspaceSucceeded"]["message"]


async def test_every_request_is_allowed_by_the_workspace_rbac(
    cluster: OperatorHarness, repo_root: Path, rbac_violations: Callable[..., list[str]]
) -> None:
    await install_templates(cluster, repo_root)
    await cluster.emulator.create_object(tuning_workspace("rbac", ["https://example.com/d.jsonl"]))
    await cluster.wait_for(
        lambda: cluster.emulator.read_object("batch/v1", "jobs", "default", "rbac"), message="Job"
    )
    await cluster.emulator.delete_object(*WS, "default", "rbac")
    await cluster.wait_for(
        lambda: cluster.emulator.read_object(*WS, "default", "rbac") is None, message="gone"
    )
    assert rbac_violations(cluster, "workspace") == []
