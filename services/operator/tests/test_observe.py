"""The pure observe functions: children and the last reconcile's outcome in, typed status
out (Workspace, RAGEngine, InferenceSet).

Every honest-status rule in one table: readiness needs ready pods *and* a finished
rollout; crash loops quote the termination message's last line; OOM, image pull,
unschedulable and node provisioning failures are named; an apply refused by the API
server and an invalid spec show on the conditions; transition times survive recomputes.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.builders.inferenceset import ANNOTATION_TEMPLATE_HASH, template_hash
from kaito_operator.reconcilers.inferenceset import observe_inferenceset
from kaito_operator.reconcilers.nodes import NodeInventory
from kaito_operator.reconcilers.observe import (
    Outcome,
    RAGEngineChildren,
    WorkspaceChildren,
    observe_ragengine,
    observe_workspace,
)
from kaito_sdk.api import InferenceSet, RAGEngine, Workspace

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
EARLIER = NOW - datetime.timedelta(hours=1)


def example(name: str, **status: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["metadata"]["generation"] = 2
    if status:
        manifest["status"] = status
    return manifest


def cpu_workspace(**status: Any) -> Workspace:
    return Workspace.from_manifest(example("workspace-smollm2-cpu.yaml", **status))


def statefulset(*, observed: int = 1, ready: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "ws", "generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": ready,
            "readyReplicas": ready,
        },
    }


def pod(*containers: dict[str, Any], ready: bool = True, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": "ws-0"},
        "spec": {"nodeName": "node-1"},
        "status": {"conditions": conditions, "containerStatuses": list(containers), **status},
    }


RUNNING = {"name": "model", "ready": True, "restartCount": 0, "state": {"running": {}}}


def waiting(reason: str, restarts: int = 3, /, **last: Any) -> dict[str, Any]:
    return {
        "name": "model",
        "ready": False,
        "image": "registry/inference:1",
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": "back-off"}},
        "lastState": {"terminated": last} if last else {},
    }


def by_type(status: Any) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient cpu.",
}
CRASH_TAIL = "loading\nkaito-inference: error: config.json is not valid JSON\n"


@pytest.mark.parametrize(
    ("children", "outcome", "state", "reason", "message"),
    [
        (
            WorkspaceChildren(),
            Outcome(),
            "Pending",
            "InferenceNotReady",
            "the StatefulSet does not exist yet",
        ),
        (
            WorkspaceChildren(),
            Outcome(2, waiting="ConfigMap 'cfg' does not exist (yet)"),
            "Pending",
            "InferenceNotReady",
            "waiting: ConfigMap 'cfg' does not exist (yet)",
        ),
        (
            WorkspaceChildren(statefulset(ready=0), []),
            Outcome(),
            "Pending",
            "InferenceNotReady",
            "0/1 replicas ready",
        ),
        # Pods ready, but the StatefulSet has not observed its generation: not ready yet.
        (
            WorkspaceChildren(statefulset(observed=0), [pod(RUNNING)]),
            Outcome(),
            "Pending",
            "InferenceNotReady",
            "1/1 replicas ready",
        ),
        (
            WorkspaceChildren(statefulset(), [pod(RUNNING)]),
            Outcome(),
            "Ready",
            "InferenceReady",
            "1/1 replicas ready",
        ),
        (
            WorkspaceChildren(
                statefulset(),
                [
                    pod(
                        waiting(
                            "CrashLoopBackOff", 4, exitCode=1, reason="Error", message=CRASH_TAIL
                        ),
                        ready=False,
                    )
                ],
            ),
            Outcome(),
            "NotReady",
            "CrashLoopBackOff",
            "pod ws-0 container model keeps crashing (exit code 1, 4 restarts): "
            "kaito-inference: error: config.json is not valid JSON",
        ),
        (
            WorkspaceChildren(
                statefulset(),
                [
                    pod(
                        waiting("CrashLoopBackOff", 2, exitCode=137, reason="OOMKilled"),
                        ready=False,
                    )
                ],
            ),
            Outcome(),
            "NotReady",
            "OOMKilled",
            "pod ws-0 container model was killed for running out of memory (2 restarts); "
            "raise its memory or pick a larger instance type",
        ),
        (
            WorkspaceChildren(statefulset(), [pod(waiting("ImagePullBackOff", 0), ready=False)]),
            Outcome(),
            "NotReady",
            "ImagePullFailed",
            "pod ws-0 container model cannot pull registry/inference:1: ImagePullBackOff back-off",
        ),
        (
            WorkspaceChildren(statefulset(), [pod(ready=False, conditions=[UNSCHEDULABLE])]),
            Outcome(),
            "NotReady",
            "PodUnschedulable",
            "pod ws-0 cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
        ),
        # Ready children, but the last apply was refused: what runs is not what is asked.
        (
            WorkspaceChildren(statefulset(), [pod(RUNNING)]),
            Outcome(2, refused="403 Forbidden: Service ws: exceeded quota: no-services"),
            "NotReady",
            "ApplyFailed",
            "403 Forbidden: Service ws: exceeded quota: no-services",
        ),
    ],
)
def test_inference_status_follows_the_children(
    children: WorkspaceChildren, outcome: Outcome, state: str, reason: str, message: str
) -> None:
    status = observe_workspace(cpu_workspace(), children, outcome, now=NOW)
    conditions = by_type(status)
    assert status.state == state
    ready = conditions["InferenceReady"]
    assert (ready.status, ready.reason, ready.message) == (
        "True" if state == "Ready" else "False",
        reason,
        message,
    )
    assert ready.observed_generation == 2
    summary = conditions["WorkspaceSucceeded"]
    assert summary.status == ready.status
    assert summary.message == message
    assert conditions["ResourceReady"].reason == "NodesReady"  # a CPU preset needs no GPU nodes


def test_ready_workspace_names_its_nodes_and_keeps_what_others_wrote() -> None:
    performance = {"metrics": {"peakTokensPerMinute": {"value": "1000"}}}
    ws = cpu_workspace(targetNodeCount=1, performance=performance)
    status = observe_workspace(
        ws, WorkspaceChildren(statefulset(), [pod(RUNNING)]), Outcome(), now=NOW
    )
    assert status.worker_nodes == ["node-1"]
    assert status.target_node_count == 1
    assert status.performance == ws.status.performance  # type: ignore[union-attr]  # the fixture has a status


def test_an_invalid_generation_shows_on_the_summary_until_the_spec_changes() -> None:
    children = WorkspaceChildren(statefulset(), [pod(RUNNING)])
    invalid = Outcome(
        2, invalid="inference.config: ConfigMap 'c' has no key 'inference_config.yaml'"
    )
    status = observe_workspace(cpu_workspace(), children, invalid, now=NOW)
    summary = by_type(status)["WorkspaceSucceeded"]
    assert (summary.status, summary.reason) == ("False", "InvalidSpec")
    assert summary.message == invalid.invalid
    assert status.state == "NotReady"
    # An outcome about an older generation says nothing about this one.
    stale = observe_workspace(cpu_workspace(), children, Outcome(1, invalid="old"), now=NOW)
    assert stale.state == "Ready"


def test_transition_times_change_only_with_the_status() -> None:
    before = {
        "type": "InferenceReady",
        "status": "False",
        "reason": "InferenceNotReady",
        "message": "0/1 replicas ready",
        "lastTransitionTime": "2026-01-01T11:00:00Z",
    }
    other = {**before, "type": "BenchmarkCompleted", "status": "True", "reason": "Done"}
    ws = cpu_workspace(conditions=[before, other])
    crashing = [pod(waiting("CrashLoopBackOff", exitCode=1), ready=False)]
    still_false = by_type(
        observe_workspace(ws, WorkspaceChildren(statefulset(), crashing), Outcome(), now=NOW)
    )
    assert still_false["InferenceReady"].reason == "CrashLoopBackOff"
    assert still_false["InferenceReady"].last_transition_time == EARLIER
    assert still_false["BenchmarkCompleted"].last_transition_time == EARLIER  # not ours: kept
    ready = by_type(
        observe_workspace(ws, WorkspaceChildren(statefulset(), [pod(RUNNING)]), Outcome(), now=NOW)
    )
    assert ready["InferenceReady"].last_transition_time == NOW


def test_the_same_children_give_the_same_status() -> None:
    """What lets the controller skip the write: a recompute of an unchanged world is equal."""
    children = WorkspaceChildren(statefulset(), [pod(RUNNING)])
    first = observe_workspace(cpu_workspace(), children, Outcome(), now=EARLIER)
    stored = cpu_workspace(**first.model_dump(mode="json", by_alias=True, exclude_none=True))
    again = observe_workspace(stored, children, Outcome(), now=NOW)
    assert again == first


def gpu_node(name: str, *, gpus: int = 1, product: str = "NVIDIA-A100") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "apps": "phi-4-mini",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.memory": "81920",
            },
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": str(gpus)},
        },
    }


def gpu_workspace() -> Workspace:
    return Workspace.from_manifest(example("workspace-inference-preset.yaml"))


def test_byo_gpu_nodes_gate_resource_ready() -> None:
    none = observe_workspace(
        gpu_workspace(), WorkspaceChildren(), Outcome(2, target=1), now=NOW, byo=True
    )
    resource = by_type(none)["ResourceReady"]
    assert (resource.status, resource.reason) == ("False", "NodesNotReady")
    assert resource.message == (
        "0/1 ready GPU nodes match the label selector (bring your own nodes: label them to match)"
    )
    assert none.target_node_count == 1  # the decided count is stored
    one = observe_workspace(
        gpu_workspace(),
        WorkspaceChildren(inventory=NodeInventory([gpu_node("gpu-1")])),
        Outcome(2, target=1),
        now=NOW,
    )
    assert by_type(one)["ResourceReady"].status == "True"
    assert one.worker_nodes == ["gpu-1"]  # set aside before the pods are scheduled
    mixed = NodeInventory([gpu_node("gpu-1"), gpu_node("gpu-2", product="NVIDIA-H100")])
    uneven = observe_workspace(
        gpu_workspace(), WorkspaceChildren(inventory=mixed), Outcome(), now=NOW
    )
    assert "different GPUs" in by_type(uneven)["ResourceReady"].message


def test_a_failed_nodeclaim_is_a_provisioning_failure() -> None:
    claim = {
        "metadata": {"name": "ws-claim-0"},
        "status": {
            "conditions": [
                {
                    "type": "Launched",
                    "status": "False",
                    "reason": "InsufficientCapacity",
                    "message": "no capacity for Standard_NC24ads_A100_v4 in westus",
                }
            ]
        },
    }
    status = observe_workspace(
        gpu_workspace(), WorkspaceChildren(inventory=NodeInventory([], [claim])), Outcome(), now=NOW
    )
    conditions = by_type(status)
    assert (
        conditions["ResourceReady"].reason
        == conditions["NodeClaimReady"].reason
        == ("NodeProvisioningFailed")
    )
    assert "ws-claim-0: Launched is False: InsufficientCapacity: no capacity" in (
        conditions["NodeClaimReady"].message
    )
    assert status.state == "NotReady"


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "workspace-tuning-phi-3", "generation": 1}, "status": status}


@pytest.mark.parametrize(
    ("workload", "state", "started", "reason"),
    [
        (None, "Pending", ("False", "JobNotCreated"), "Pending"),
        (job(), "Pending", ("False", "JobPending"), "Pending"),
        (
            job(startTime="2026-01-01T11:00:00Z", active=1),
            "Running",
            ("True", "JobStarted"),
            "JobStarted",
        ),
        (
            job(startTime="2026-01-01T11:00:00Z", succeeded=1),
            "Succeeded",
            ("True", "JobStarted"),
            "JobSucceeded",
        ),
        (
            job(
                startTime="2026-01-01T11:00:00Z",
                conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            ),
            "Failed",
            ("True", "JobStarted"),
            "JobFailed",
        ),
    ],
)
def test_tuning_status_follows_the_job(
    workload: dict[str, Any] | None, state: str, started: tuple[str, str], reason: str
) -> None:
    ws = Workspace.from_manifest(example("workspace-tuning-urls.yaml"))
    nodes = NodeInventory([gpu_node("gpu-1")])
    status = observe_workspace(ws, WorkspaceChildren(workload, [], nodes), Outcome(), now=NOW)
    conditions = by_type(status)
    assert status.state == state
    assert (conditions["JobStarted"].status, conditions["JobStarted"].reason) == started
    assert conditions["WorkspaceSucceeded"].reason == reason
    assert "InferenceReady" not in conditions


def ragengine() -> RAGEngine:
    return RAGEngine.from_manifest(example("ragengine-local-embedding.yaml"))


def deployment() -> dict[str, Any]:
    return {**statefulset(), "metadata": {"name": "ragengine-local", "generation": 1}}


def test_ragengine_ready_when_its_pod_is_and_nodes_match() -> None:
    node = {"metadata": {"name": "rag-node"}}
    children = RAGEngineChildren(deployment(), [pod(RUNNING)], [node])
    status = observe_ragengine(ragengine(), children, Outcome(), now=NOW)
    conditions = by_type(status)
    assert [c.status for c in status.conditions or []] == ["True", "True", "True"]
    assert conditions["ServiceReady"].reason == "ServiceReady"
    assert conditions["ResourceReady"].message == "1 nodes match the compute label selector"
    assert status.worker_nodes == ["node-1"]


def test_ragengine_without_matching_nodes_or_with_a_refused_apply_is_not_ready() -> None:
    children = RAGEngineChildren(deployment(), [pod(RUNNING)], [])
    status = by_type(observe_ragengine(ragengine(), children, Outcome(), now=NOW))
    assert (status["ResourceReady"].status, status["RAGEngineSucceeded"].status) == (
        "False",
        "False",
    )
    refused = Outcome(2, refused="422 Unprocessable Entity: Deployment ragengine-local: invalid")
    running = RAGEngineChildren(deployment(), [pod(RUNNING)], [{"metadata": {"name": "n"}}])
    conditions = by_type(observe_ragengine(ragengine(), running, refused, now=NOW))
    for kind in ("ServiceReady", "RAGEngineSucceeded"):
        assert (conditions[kind].status, conditions[kind].reason) == ("False", "ApplyFailed")
        assert conditions[kind].message == refused.refused
    assert conditions["ResourceReady"].status == "True"


def member(name: str, revision: str, *, ready: bool) -> dict[str, Any]:
    condition = {
        "type": "InferenceReady",
        "status": "True" if ready else "False",
        "reason": "InferenceReady" if ready else "InferenceNotReady",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T11:00:00Z",
    }
    return {
        "metadata": {
            "name": name,
            "generation": 1,
            "annotations": {ANNOTATION_TEMPLATE_HASH: revision},
        },
        "status": {"conditions": [condition]},
    }


@pytest.mark.parametrize(
    ("members", "outcome", "ok", "reason"),
    [
        ([("0", True), ("1", True)], Outcome(), "True", "InferenceSetReady"),
        ([("0", True)], Outcome(), "False", "ReplicasNotReady"),
        ([("0", True), ("1", False)], Outcome(), "False", "ReplicasNotReady"),
        (
            [("0", True), ("1", True)],
            Outcome(2, invalid="spec.replicas: bad"),
            "False",
            "InvalidSpec",
        ),
        (
            [("0", True), ("1", True)],
            Outcome(2, refused="404 Not Found: ScaledObject x"),
            "False",
            "ApplyFailed",
        ),
    ],
)
def test_inferenceset_status_counts_the_members_it_lists(
    members: list[tuple[str, bool]], outcome: Outcome, ok: str, reason: str
) -> None:
    iset = InferenceSet.from_manifest(example("inferenceset-smollm2-cpu.yaml"))
    revision = template_hash(iset)
    listed = [member(f"inferenceset-smollm2-{i}", revision, ready=r) for i, r in members]
    status = observe_inferenceset(iset, listed, outcome, now=NOW)
    assert (status.replicas, status.ready_replicas) == (len(members), sum(r for _, r in members))
    assert status.selector == "inferenceset.kaito.sh/created-by=inferenceset-smollm2"
    [ready] = status.conditions or []
    assert (ready.type, ready.status, ready.reason) == ("InferenceSetReady", ok, reason)
    assert ready.observed_generation == 2
