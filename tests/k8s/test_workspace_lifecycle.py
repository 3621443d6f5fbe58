"""A Workspace's life on a real control plane (Kubernetes 1.20), the operator as the chart's
ServiceAccount.

The real StatefulSet controller makes the pod, the real scheduler binds it to a Node the
test registers, and a node agent writes the pod status a kubelet would write; the
Workspace status follows. Deletion goes through the real garbage collector (with BYO
nodes, the chart's default, nothing is left to release: no finalizer holds it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "workspace-smollm2-cpu.yaml"


def conditions(cluster: Any, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The Workspace's conditions by type (empty when it has none or is gone)."""
    ws = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/{name}")
    return {c["type"]: c for c in ((ws or {}).get("status") or {}).get("conditions", [])}


def condition_is(
    cluster: Any, namespace: str, name: str, kind: str, status: str, reason: str
) -> Callable[[], dict[str, Any] | None]:
    """A check for ``eventually``: the condition has this status and reason."""

    def check() -> dict[str, Any] | None:
        found = conditions(cluster, namespace, name).get(kind)
        if found and found["status"] == status and found["reason"] == reason:
            return found
        return None

    return check


def test_cpu_example_ready_then_crash_looping_then_deleted(
    operator: Any, cluster: Any, node: Any, eventually: Any
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    node.register(manifest["resource"]["labelSelector"]["matchLabels"])
    applied = cluster.kubectl("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr

    statefulset_path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
    statefulset = eventually(lambda: cluster.get(statefulset_path), what="the StatefulSet")
    (owner,) = statefulset["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Workspace", name, True)
    # Kubernetes 1.20 has no persistentVolumeClaimRetentionPolicy: not sent (and not stored).
    assert "persistentVolumeClaimRetentionPolicy" not in statefulset["spec"]
    for service in (name, f"{name}-headless"):
        assert eventually(
            lambda s=service: cluster.get(f"/api/v1/namespaces/{namespace}/services/{s}")
        )

    pod = node.bound_pod(namespace, f"kaito.sh/workspace={name}")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    node.run(pod)
    ready = eventually(
        condition_is(cluster, namespace, name, "InferenceReady", "True", "InferenceReady"),
        what="InferenceReady True",
    )
    assert ready["message"] == "1/1 replicas ready"
    ws = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/{name}")
    assert ws["status"]["workerNodes"] == [node.name]

    node.crash_loop(pod)
    crashing = eventually(
        condition_is(cluster, namespace, name, "InferenceReady", "False", "CrashLoopBackOff"),
        what="InferenceReady False (CrashLoopBackOff)",
    )
    assert "restart" in crashing["message"].lower() or "crash" in crashing["message"].lower()

    deleted = cluster.kubectl("delete", "-f", str(EXAMPLE), "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    workspace_path = f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/{name}"
    eventually(lambda: cluster.get(workspace_path) is None, what="the Workspace gone")
    # The real garbage collector removes the children; the node agent confirms the pod's
    # graceful deletion as a kubelet would.
    eventually(lambda: cluster.get(statefulset_path) is None, what="the StatefulSet collected")
    for service in (name, f"{name}-headless"):
        path = f"/api/v1/namespaces/{namespace}/services/{service}"
        eventually(lambda p=path: cluster.get(p) is None, what=f"Service {service} collected")
    eventually(
        lambda: node.finish_deletions(namespace, f"kaito.sh/workspace={name}") == 0,
        what="the pod collected",
    )
    assert operator.rbac_denials() == []


def test_apply_refused_by_the_apiserver_reaches_the_status(
    operator: Any, cluster: Any, namespace: str, eventually: Any, cpu_workspace: Any
) -> None:
    """A write the apiserver refuses (here a ResourceQuota allowing no Services) shows
    in the Workspace's conditions with the apiserver's reason, not only in an Event."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services", "namespace": namespace},
        "spec": {"hard": {"services": "0"}},
    }
    assert cluster.apply(quota).returncode == 0
    # The quota binds once the controller manager has counted its usage (status.hard):
    # before that, an apiserver whose quota cache lags (it was restarted by earlier tests)
    # may still admit Services.
    quota_path = f"/api/v1/namespaces/{namespace}/resourcequotas/no-services"
    eventually(
        lambda: ((cluster.get(quota_path) or {}).get("status") or {}).get("hard"),
        what="the ResourceQuota's status.hard (the controller manager counted it)",
    )
    workspace = cpu_workspace(namespace, "refused")
    applied = cluster.apply(workspace)
    assert applied.returncode == 0, applied.stderr
    for kind in ("InferenceReady", "WorkspaceSucceeded"):
        failed = eventually(
            condition_is(cluster, namespace, "refused", kind, "False", "ApplyFailed"),
            what=f"{kind} False (ApplyFailed)",
        )
        # The apiserver's answer, naming the object the operator wrote.
        assert re.match(
            r"403 Forbidden: Service refused(-headless)?: services .* is forbidden: "
            r"exceeded quota: no-services",
            failed["message"],
        ), failed["message"]


def test_unschedulable_and_pod_failures_reach_the_status(
    operator: Any, cluster: Any, node: Any, namespace: str, eventually: Any, cpu_workspace: Any
) -> None:
    """The real scheduler's Unschedulable, then image pull and OOM failures as a kubelet
    reports them, each become InferenceReady False with its reason; then Ready."""
    assert cluster.apply(cpu_workspace(namespace, "unplaced", "nowhere")).returncode == 0
    unplaced = eventually(
        condition_is(cluster, namespace, "unplaced", "InferenceReady", "False", "PodUnschedulable"),
        what="InferenceReady False (PodUnschedulable)",
    )
    # The scheduler's own words: "0/1 nodes are available: ..." or, with no Node at
    # all, "no nodes available to schedule pods".
    assert re.search(r"cannot be scheduled: .*nodes? (are )?available", unplaced["message"]), (
        unplaced["message"]
    )

    node.register({"apps": "failing"})
    assert cluster.apply(cpu_workspace(namespace, "failing", "failing")).returncode == 0
    pod = node.bound_pod(namespace, "kaito.sh/workspace=failing")
    node.image_pull_backoff(pod)
    pulling = eventually(
        condition_is(cluster, namespace, "failing", "InferenceReady", "False", "ImagePullFailed"),
        what="InferenceReady False (ImagePullFailed)",
    )
    assert "ImagePullBackOff" in pulling["message"], pulling["message"]
    node.crash_loop(pod, restarts=2, reason="OOMKilled", exit_code=137)
    oom = eventually(
        condition_is(cluster, namespace, "failing", "InferenceReady", "False", "OOMKilled"),
        what="InferenceReady False (OOMKilled)",
    )
    assert "out of memory" in oom["message"], oom["message"]
    node.run(pod)
    eventually(
        condition_is(cluster, namespace, "failing", "InferenceReady", "True", "InferenceReady"),
        what="InferenceReady True",
    )


def test_a_field_changed_by_another_manager_is_put_back_without_a_hot_loop(
    operator: Any, cluster: Any, namespace: str, eventually: Any, cpu_workspace: Any
) -> None:
    """``kubectl scale`` (another field manager) changes the StatefulSet's replicas; the
    operator's periodic server-side apply (force) puts them back once, then leaves the
    object alone."""
    assert cluster.apply(cpu_workspace(namespace, "drift", "drift")).returncode == 0
    path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/drift"
    eventually(lambda: cluster.get(path), what="the StatefulSet")
    scaled = cluster.kubectl("scale", "statefulset", "drift", "-n", namespace, "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    assert cluster.get(path)["spec"]["replicas"] == 3

    # resync_seconds is 30: the next level-based reconcile re-applies the desired state.
    def put_back() -> dict[str, Any] | None:
        statefulset: dict[str, Any] = cluster.get(path)
        return statefulset if statefulset["spec"]["replicas"] == 1 else None

    restored = eventually(put_back, within=75, what="replicas put back to 1")
    managers = {entry["manager"] for entry in restored["metadata"]["managedFields"]}
    assert "kaito-operator" in managers, managers
    generation = restored["metadata"]["generation"]
    time.sleep(35)  # past the next resync: an unchanged desired state writes nothing
    assert cluster.get(path)["metadata"]["generation"] == generation


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: Any, cluster: Any, namespace: str, eventually: Any, cpu_workspace: Any
) -> None:
    """SIGKILL the operator right after a Workspace is admitted (its reconcile under way
    or not yet started), start it again: the children exist once each, no finalizer (BYO),
    and the status is written."""
    assert cluster.apply(cpu_workspace(namespace, "restart", "restart")).returncode == 0
    time.sleep(0.3)
    operator.kill()
    operator.start()
    base = f"/api/v1/namespaces/{namespace}"
    statefulset_path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/restart"
    eventually(lambda: cluster.get(statefulset_path), what="the StatefulSet")
    selector = "labelSelector=kaito.sh/workspace=restart"

    def service_names() -> list[str] | None:
        items = cluster.get(f"{base}/services?{selector}")["items"]
        return [s["metadata"]["name"] for s in items] if len(items) >= 2 else None

    services = eventually(service_names, what="both Services")
    assert sorted(services) == ["restart", "restart-headless"]
    statefulsets = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/statefulsets?{selector}")
    assert [s["metadata"]["name"] for s in statefulsets["items"]] == ["restart"]
    path = f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/restart"
    eventually(lambda: conditions(cluster, namespace, "restart").get("InferenceReady"))
    workspace = cluster.get(path)
    finalizers = workspace["metadata"].get("finalizers", [])
    assert finalizers == [], finalizers
    kinds = [c["type"] for c in workspace["status"]["conditions"]]
    assert len(kinds) == len(set(kinds)), kinds
