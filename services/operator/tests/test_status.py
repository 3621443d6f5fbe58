"""Pure status logic: transition times survive recomputes, failures are named."""

from __future__ import annotations

from kaito_operator.status import condition, diagnose_pods, merge_conditions, pod_is_ready


def test_transition_time_changes_only_with_the_status() -> None:
    old = [condition("InferenceReady", False, "A", "m", generation=1, now="t1")]
    same = merge_conditions(
        old, [condition("InferenceReady", False, "B", "n", generation=2, now="t2")]
    )
    assert same[0]["lastTransitionTime"] == "t1"
    assert same[0]["reason"] == "B"
    flipped = merge_conditions(
        old, [condition("InferenceReady", True, "C", "o", generation=2, now="t3")]
    )
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_other_condition_types_are_kept() -> None:
    old = [condition("BenchmarkCompleted", True, "Done", "", generation=1, now="t0")]
    merged = merge_conditions(
        old, [condition("InferenceReady", True, "Ok", "", generation=1, now="t1")]
    )
    assert [c["type"] for c in merged] == ["BenchmarkCompleted", "InferenceReady"]


def pod(name: str, **status: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": status}


def test_diagnosis_names_each_cause() -> None:
    evicted = pod("p", reason="Evicted", message="The node was low on resource: memory.")
    assert diagnose_pods([evicted]).reason == "PodEvicted"  # type: ignore[union-attr]
    config_error = pod(
        "p",
        containerStatuses=[
            {
                "name": "c",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "hf" not found',
                    }
                },
            }
        ],
    )
    problem = diagnose_pods([config_error])
    assert problem is not None
    assert problem.reason == "ContainerStartFailed"
    assert 'secret "hf" not found' in problem.message
    init_pull = pod(
        "p",
        initContainerStatuses=[
            {
                "name": "adapter-a",
                "image": "r/a:1",
                "state": {"waiting": {"reason": "ImagePullBackOff"}},
            }
        ],
    )
    assert diagnose_pods([init_pull]).reason == "ImagePullFailed"  # type: ignore[union-attr]
    assert diagnose_pods([pod("p", phase="Running")]) is None


def test_a_ready_condition_with_a_waiting_container_is_not_ready() -> None:
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    running = [{"name": "c", "ready": True, "state": {"running": {}}}]
    waiting = [{"name": "c", "ready": True, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    assert pod_is_ready({"metadata": {}, "status": {**ready, "containerStatuses": running}})
    assert not pod_is_ready({"metadata": {}, "status": {**ready, "containerStatuses": waiting}})
    deleting = {
        "metadata": {"deletionTimestamp": "x"},
        "status": {**ready, "containerStatuses": running},
    }
    assert not pod_is_ready(deleting)
