"""Pure status logic: conditions that keep their transition time, and honest pod diagnosis.

Nothing here does I/O; the reconcilers read pods, nodes and Jobs and pass them in.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kaito_sdk.api import ConditionReason, WorkspaceState

__all__ = [
    "APPLY_FAILED",
    "FLAP_RESTARTS",
    "FLAP_WINDOW",
    "NodeState",
    "PodProblem",
    "condition",
    "diagnose_pods",
    "inference_status",
    "merge_conditions",
    "pod_is_ready",
    "report_apply_failure",
    "rollout_done",
    "timestamp",
    "tuning_status",
]

#: A container terminated within this window after FLAP_RESTARTS restarts is crash looping.
FLAP_WINDOW = datetime.timedelta(minutes=5)
FLAP_RESTARTS = 3
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
#: Condition reason when the API server refuses the operator's write of a child object.
APPLY_FAILED = "ApplyFailed"
#: The conditions an apply failure is reported on: the workload's and the summary.
_APPLY_CONDITIONS = {
    "InferenceReady",
    "JobStarted",
    "ServiceReady",
    "WorkspaceSucceeded",
    "RAGEngineSucceeded",
}
_START_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class PodProblem:
    """Why a workload's pods are not serving: a condition reason and a message."""

    reason: str
    message: str


def timestamp(now: datetime.datetime) -> str:
    """``metav1.Time`` text of ``now`` (seconds, UTC)."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool, reason: str, message: str, *, generation: int | None, now: str
) -> dict[str, Any]:
    """A ``metav1.Condition`` dict."""
    result: dict[str, Any] = {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def merge_conditions(
    old: Iterable[Mapping[str, Any]] | None, new: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The new conditions, keeping ``lastTransitionTime`` where the status did not change.

    Condition types the new set does not mention are kept as they were.
    """
    previous = {c["type"]: c for c in old or []}
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in previous.items()}
    for fresh in new:
        before = previous.get(fresh["type"])
        if before is not None and before.get("status") == fresh["status"]:
            fresh = {**fresh, "lastTransitionTime": before.get("lastTransitionTime")}  # noqa: PLW2901
        merged[fresh["type"]] = fresh
    return [merged[key] for key in sorted(merged)]


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Ready, every container ready, none waiting (so not in a crash loop) and not deleting."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    containers = status.get("containerStatuses") or []
    return (
        conditions.get("Ready") == "True"
        and bool(containers)
        and all(c.get("ready") and "waiting" not in (c.get("state") or {}) for c in containers)
    )


def _finished_within(last: Mapping[str, Any], now: datetime.datetime | None) -> bool:
    finished = last.get("finishedAt")
    if now is None or not finished:
        return False
    try:
        when = datetime.datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
    except ValueError:
        return False
    return now - when < FLAP_WINDOW


#: The longest cause quoted from a container's termination message.
MAX_CAUSE_CHARS = 300


def _last_line(message: object) -> str:
    """The last non-empty line of a termination message (the services print their fatal
    cause last; the kubelet fills the message from the log tail, see the builders'
    ``terminationMessagePolicy``), shortened to :data:`MAX_CAUSE_CHARS`."""
    if not isinstance(message, str):
        return ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= MAX_CAUSE_CHARS else last[: MAX_CAUSE_CHARS - 3] + "..."


def _diagnose_container(
    pod_name: str, container: Mapping[str, Any], now: datetime.datetime | None
) -> PodProblem | None:
    cname = container.get("name", "?")
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    reason, detail = waiting.get("reason", ""), waiting.get("message", "")
    restarts = container.get("restartCount", 0)
    where = f"pod {pod_name} container {cname}"
    healthy = bool(container.get("ready")) and "running" in state
    if reason in _IMAGE_PULL:
        image = container.get("image", "its image")
        return PodProblem(
            ConditionReason.IMAGE_PULL_FAILED,
            f"{where} cannot pull {image}: {reason} {detail}".strip(),
        )
    if last.get("reason") == "OOMKilled" and (not healthy or _finished_within(last, now)):
        message = (
            f"{where} was killed for running out of memory ({restarts} restarts); "
            "raise its memory or pick a larger instance type"
        )
        return PodProblem("OOMKilled", message)
    if reason == "CrashLoopBackOff":
        message = f"{where} keeps crashing (exit code {last.get('exitCode')}, {restarts} restarts)"
        cause = _last_line(last.get("message"))
        return PodProblem("CrashLoopBackOff", f"{message}: {cause}" if cause else message)
    if restarts >= FLAP_RESTARTS and _finished_within(last, now):
        # Up right now, but it keeps dying: readiness between crashes is not serving.
        message = (
            f"{where} restarted {restarts} times, the last at {last.get('finishedAt')} "
            f"({last.get('reason', 'exit')} {last.get('exitCode')})"
        )
        return PodProblem("CrashLoopBackOff", message)
    if reason in _START_FAILURES:
        return PodProblem(
            ConditionReason.CONTAINER_START_FAILED,
            f"{where} cannot start: {reason} {detail}".strip(),
        )
    return None


def _diagnose_pod(pod: Mapping[str, Any], now: datetime.datetime | None) -> PodProblem | None:
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        message = f"pod {name} was evicted: {status.get('message', '')}"
        return PodProblem(ConditionReason.POD_EVICTED, message)
    for container in _container_statuses(pod):
        problem = _diagnose_container(name, container, now)
        if problem is not None:
            return problem
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            detail = cond.get("message") or cond.get("reason", "")
            return PodProblem(
                ConditionReason.POD_UNSCHEDULABLE, f"pod {name} cannot be scheduled: {detail}"
            )
    return None


def diagnose_pods(
    pods: Iterable[Mapping[str, Any]], *, now: datetime.datetime | None = None
) -> PodProblem | None:
    """The first real failure among the pods (image pull, OOM, crash loop, unschedulable).

    With ``now``, a container that is up but terminated recently after many restarts (or
    was OOM-killed recently) counts as crash looping too.
    """
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("name", ""))):
        problem = _diagnose_pod(pod, now)
        if problem is not None:
            return problem
    return None


@dataclass
class NodeState:
    """Whether a Workspace has the nodes it needs."""

    ready: bool
    reason: str
    message: str
    worker_nodes: list[str] = field(default_factory=list)
    claim_condition: tuple[bool, str, str] | None = None
    """(ok, reason, message) of ``NodeClaimReady``; only the gpu-provisioner path sets it."""


def rollout_done(workload: Mapping[str, Any] | None, replicas: int) -> bool:
    """The controller saw the current generation and ``replicas`` are updated and ready."""
    if workload is None:
        return False
    status = workload.get("status") or {}
    generation = workload["metadata"].get("generation", 1)
    return bool(
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= replicas
        and status.get("readyReplicas", 0) >= replicas
    )


def inference_status(
    workload: Mapping[str, Any] | None,
    pods: list[dict[str, Any]],
    nodes: NodeState,
    generation: int | None,
    waiting: str | None,
    *,
    now: datetime.datetime,
) -> dict[str, Any]:
    replicas = int((workload or {}).get("spec", {}).get("replicas", 1))
    ready_pods = [p for p in pods if pod_is_ready(p)]
    problem = diagnose_pods(pods, now=now)
    reason: str
    ready = (
        nodes.ready
        and problem is None
        and len(ready_pods) >= replicas
        and rollout_done(workload, replicas)
    )
    if ready:
        reason, message = (
            ConditionReason.INFERENCE_READY,
            f"{replicas}/{replicas} replicas ready",
        )
    elif problem is not None:
        reason, message = problem.reason, problem.message
    elif workload is None:
        reason, message = (
            ConditionReason.INFERENCE_NOT_READY,
            f"waiting: {waiting}" if waiting else "the StatefulSet does not exist yet",
        )
    else:
        reason = ConditionReason.INFERENCE_NOT_READY
        message = f"{len(ready_pods)}/{replicas} replicas ready"
    failed = problem is not None or nodes.reason == ConditionReason.NODE_PROVISIONING_FAILED
    state = (
        WorkspaceState.READY
        if ready
        else WorkspaceState.NOT_READY
        if failed
        else WorkspaceState.PENDING
    )
    summary = "Succeeded" if ready else "Pending"
    return {
        "state": state.value,
        "conditions": [
            condition(
                "InferenceReady", ready, reason, message, generation=generation, now=timestamp(now)
            ),
            condition(
                "WorkspaceSucceeded",
                ready,
                summary,
                message,
                generation=generation,
                now=timestamp(now),
            ),
        ],
    }


def tuning_status(
    job: Mapping[str, Any] | None,
    pods: list[dict[str, Any]],
    nodes: NodeState,
    generation: int | None,
    waiting: str | None,
    *,
    now: datetime.datetime,
) -> dict[str, Any]:
    job_status = (job or {}).get("status") or {}
    failed_cond = next(
        (
            c
            for c in job_status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    started = bool(
        job_status.get("startTime") or job_status.get("active") or job_status.get("succeeded")
    )
    succeeded = int(job_status.get("succeeded") or 0) > 0
    problem = diagnose_pods(pods, now=now)
    started_reason: str
    reason: str
    if job is None:
        started_reason = "JobNotCreated"
        started_message = f"waiting: {waiting}" if waiting else "the tuning Job does not exist yet"
    elif started:
        started_reason, started_message = ConditionReason.JOB_STARTED, "the tuning Job started"
    else:
        started_reason, started_message = (
            "JobPending",
            problem.message if problem else "waiting for the Job to start",
        )
    if succeeded:
        state, reason, message = (
            WorkspaceState.SUCCEEDED,
            ConditionReason.JOB_SUCCEEDED,
            "the tuning Job succeeded",
        )
    elif failed_cond is not None:
        state, reason = WorkspaceState.FAILED, ConditionReason.JOB_FAILED
        detail = f"{failed_cond.get('reason', '')} {failed_cond.get('message', '')}".strip()
        message = f"the tuning Job failed: {detail}"
    elif problem is not None:
        state, reason, message = (
            WorkspaceState.PENDING if not started else WorkspaceState.RUNNING,
            problem.reason,
            problem.message,
        )
    elif started:
        state, reason, message = (
            WorkspaceState.RUNNING,
            ConditionReason.JOB_STARTED,
            "the tuning Job is running",
        )
    else:
        state, reason, message = (
            WorkspaceState.PENDING,
            ConditionReason.PENDING,
            started_message,
        )
    return {
        "state": state.value,
        "conditions": [
            condition(
                "JobStarted",
                started,
                started_reason,
                started_message,
                generation=generation,
                now=timestamp(now),
            ),
            condition(
                "WorkspaceSucceeded",
                succeeded,
                reason,
                message,
                generation=generation,
                now=timestamp(now),
            ),
        ],
    }


def report_apply_failure(
    status: dict[str, Any], message: str, *, generation: int | None, now: str
) -> None:
    """Put the API server's refusal of a child write (``message``) on the workload's and
    the summary condition: both False with reason ``ApplyFailed``. Whatever still runs
    from an earlier write is not what the spec asks for, so a Ready state becomes NotReady.
    """
    status["conditions"] = [
        condition(c["type"], False, APPLY_FAILED, message, generation=generation, now=now)
        if c["type"] in _APPLY_CONDITIONS
        else c
        for c in status["conditions"]
    ]
    if status.get("state") == WorkspaceState.READY.value:
        status["state"] = WorkspaceState.NOT_READY.value
