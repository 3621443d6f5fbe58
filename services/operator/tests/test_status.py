"""Pure status primitives: typed conditions keep their transition time, failures are named."""

from __future__ import annotations

import datetime

from kaito_operator.status import (
    condition,
    diagnose_pods,
    merge_conditions,
    pod_is_ready,
)

T1 = datetime.datetime(2026, 1, 1, 11, 0, tzinfo=datetime.UTC)
T2 = datetime.datetime(2026, 1, 1, 12, 0, 30, 123456, tzinfo=datetime.UTC)


def test_transition_time_changes_only_with_the_status() -> None:
    old = [condition("InferenceReady", False, "A", "m", generation=1, now=T1)]
    [same] = merge_conditions(
        old, [condition("InferenceReady", False, "B", "n", generation=2, now=T2)]
    )
    assert (same.last_transition_time, same.reason, same.observed_generation) == (T1, "B", 2)
    [flipped] = merge_conditions(
        old, [condition("InferenceReady", True, "C", "o", generation=2, now=T2)]
    )
    # metav1.Time has whole seconds: a recompute in the same second compares equal.
    assert flipped.last_transition_time == T2.replace(microsecond=0)


def test_other_condition_types_are_kept() -> None:
    old = [condition("BenchmarkCompleted", True, "Done", "", generation=1, now=T1)]
    merged = merge_conditions(
        old, [condition("InferenceReady", True, "Ok", "", generation=1, now=T2)]
    )
    assert [c.type for c in merged] == ["BenchmarkCompleted", "InferenceReady"]


def pod(name: str, **status: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": status}


def test_diagnosis_names_each_cause() -> None:
    evicted = pod("p", reason="Evicted", message="The node was low on resource: memory.")
    assert diagnose_pods([evicted]).reason == "PodEvicted"  # type: ignore[union-attr]  # diagnosed
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
    assert diagnose_pods([init_pull]).reason == "ImagePullFailed"  # type: ignore[union-attr]  # diagnosed
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


NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def up_after(restarts: int, reason: str, minutes_ago: float) -> dict[str, object]:
    finished = NOW - datetime.timedelta(minutes=minutes_ago)
    container = {
        "name": "c",
        "ready": True,
        "restartCount": restarts,
        "state": {"running": {}},
        "lastState": {
            "terminated": {
                "reason": reason,
                "exitCode": 1,
                "finishedAt": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        },
    }
    return pod("p", conditions=[{"type": "Ready", "status": "True"}], containerStatuses=[container])


def test_a_pod_that_keeps_dying_between_ready_spells_is_crash_looping() -> None:
    flapping = diagnose_pods([up_after(5, "Error", minutes_ago=1)], now=NOW)
    assert flapping is not None
    assert flapping.reason == "CrashLoopBackOff"
    assert "restarted 5 times" in flapping.message
    recent_oom = diagnose_pods([up_after(1, "OOMKilled", minutes_ago=2)], now=NOW)
    assert recent_oom is not None
    assert recent_oom.reason == "OOMKilled"


def test_an_old_crash_does_not_keep_a_recovered_pod_down() -> None:
    assert diagnose_pods([up_after(5, "Error", minutes_ago=30)], now=NOW) is None
    assert diagnose_pods([up_after(1, "OOMKilled", minutes_ago=30)], now=NOW) is None


def test_a_crash_loop_names_the_cause_from_the_termination_message() -> None:
    """The services print their fatal cause last; with FallbackToLogsOnError the kubelet
    puts the log's tail into lastState.terminated.message, and the status quotes its last
    line."""
    tail = (
        "INFO loading /models/x\n"
        "Traceback (most recent call last):\n  ...\n"
        "kaito-inference: error: the model failed to load: config.json is not valid JSON\n"
    )
    container = {
        "name": "ws",
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": tail}},
    }
    pod = {"metadata": {"name": "ws-0"}, "status": {"containerStatuses": [container]}}
    problem = diagnose_pods([pod], now=NOW)
    assert problem is not None
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message == (
        "pod ws-0 container ws keeps crashing (exit code 1, 4 restarts): "
        "kaito-inference: error: the model failed to load: config.json is not valid JSON"
    )
    del container["lastState"]["terminated"]["message"]
    problem = diagnose_pods([pod], now=NOW)
    assert problem is not None
    assert problem.message.endswith("(exit code 1, 4 restarts)")
