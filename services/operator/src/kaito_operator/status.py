"""Pure status logic: conditions that keep their transition time, and honest pod diagnosis.

Nothing here does I/O; the reconcilers read pods, nodes and Jobs and pass them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_sdk.api import ConditionReason

__all__ = [
    "PodProblem",
    "condition",
    "diagnose_pods",
    "merge_conditions",
    "pod_is_ready",
]

_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class PodProblem:
    """Why a workload's pods are not serving: a condition reason and a message."""

    reason: str
    message: str


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


def _diagnose_container(pod_name: str, container: Mapping[str, Any]) -> PodProblem | None:
    cname = container.get("name", "?")
    waiting = (container.get("state") or {}).get("waiting") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    reason, detail = waiting.get("reason", ""), waiting.get("message", "")
    restarts = container.get("restartCount", 0)
    where = f"pod {pod_name} container {cname}"
    if reason in _IMAGE_PULL:
        image = container.get("image", "its image")
        return PodProblem(
            ConditionReason.IMAGE_PULL_FAILED,
            f"{where} cannot pull {image}: {reason} {detail}".strip(),
        )
    if last.get("reason") == "OOMKilled":
        message = (
            f"{where} was killed for running out of memory ({restarts} restarts); "
            "raise its memory or pick a larger instance type"
        )
        return PodProblem("OOMKilled", message)
    if reason == "CrashLoopBackOff":
        message = f"{where} keeps crashing (exit code {last.get('exitCode')}, {restarts} restarts)"
        return PodProblem("CrashLoopBackOff", message)
    if reason in _START_FAILURES:
        return PodProblem(
            ConditionReason.CONTAINER_START_FAILED,
            f"{where} cannot start: {reason} {detail}".strip(),
        )
    return None


def _diagnose_pod(pod: Mapping[str, Any]) -> PodProblem | None:
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        message = f"pod {name} was evicted: {status.get('message', '')}"
        return PodProblem(ConditionReason.POD_EVICTED, message)
    for container in _container_statuses(pod):
        problem = _diagnose_container(name, container)
        if problem is not None:
            return problem
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            detail = cond.get("message") or cond.get("reason", "")
            return PodProblem(
                ConditionReason.POD_UNSCHEDULABLE, f"pod {name} cannot be scheduled: {detail}"
            )
    return None


def diagnose_pods(pods: Iterable[Mapping[str, Any]]) -> PodProblem | None:
    """The first real failure among the pods (image pull, OOM, crash loop, unschedulable)."""
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("name", ""))):
        problem = _diagnose_pod(pod)
        if problem is not None:
            return problem
    return None
