"""Pure status primitives: typed conditions that keep their transition time, and honest
pod diagnosis (image pull, OOM, crash loops with their cause, unschedulable, eviction).

Nothing here does I/O or reads the clock; callers pass ``now``. The observe functions
(:mod:`kaito_operator.reconcilers.observe`) build the owners' typed status from these.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_sdk.api import Condition, ConditionReason

__all__ = [
    "APPLY_FAILED",
    "FLAP_RESTARTS",
    "FLAP_WINDOW",
    "MAX_CAUSE_CHARS",
    "NodeState",
    "PodProblem",
    "condition",
    "diagnose_pods",
    "merge_conditions",
    "pod_is_ready",
    "rollout_done",
]

#: A container terminated within this window after FLAP_RESTARTS restarts is crash looping.
FLAP_WINDOW = datetime.timedelta(minutes=5)
FLAP_RESTARTS = 3
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
#: Condition reason when the API server refuses the operator's write of a child object.
APPLY_FAILED = "ApplyFailed"
_START_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class PodProblem:
    """Why a workload's pods are not serving: a condition reason and a message."""

    reason: str
    message: str


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime.datetime,
) -> Condition:
    """A ``metav1.Condition`` (transition time ``now``, to the second)."""
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        last_transition_time=now.astimezone(datetime.UTC).replace(microsecond=0),
        observed_generation=generation,
    )


def merge_conditions(old: Sequence[Condition] | None, new: Iterable[Condition]) -> list[Condition]:
    """The new conditions, keeping ``lastTransitionTime`` where the status did not change,
    sorted by type. Condition types the new set does not mention are kept as they were."""
    previous = {c.type: c for c in old or []}
    merged: dict[str, Condition] = dict(previous)
    for fresh in new:
        before = previous.get(fresh.type)
        if before is not None and before.status == fresh.status:
            fresh = fresh.model_copy(  # noqa: PLW2901
                update={"last_transition_time": before.last_transition_time}
            )
        merged[fresh.type] = fresh
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
