"""The pure status of a Workspace or RAGEngine: ``observe(owner, children, outcome) -> status``.

What really runs (the workload, its pods, the nodes and NodeClaims) and how the last
reconcile ended (:class:`Outcome`: refused by the API server, invalid, waiting for
something) go in; the SDK's typed status comes out, with condition transition times kept
from the owner's current status. No I/O and no clock: the controller
(:mod:`kaito_operator.controller`) reads the children, passes ``now`` and patches the
status only when the result differs from what is stored.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_operator.errors import InvalidSpecError
from kaito_operator.reconcilers import plan
from kaito_operator.reconcilers.nodes import NodeInventory, node_state
from kaito_operator.status import (
    APPLY_FAILED,
    NodeState,
    condition,
    diagnose_pods,
    merge_conditions,
    pod_is_ready,
    rollout_done,
)
from kaito_sdk.api import (
    Condition,
    ConditionReason,
    RAGEngine,
    RAGEngineStatus,
    Workspace,
    WorkspaceState,
    WorkspaceStatus,
)

__all__ = [
    "Outcome",
    "RAGEngineChildren",
    "WorkspaceChildren",
    "apply_outcome",
    "observe_ragengine",
    "observe_workspace",
]

#: The conditions an apply failure is reported on: the workload's and the summary.
_APPLY_CONDITIONS = {
    "InferenceReady",
    "JobStarted",
    "ServiceReady",
    "WorkspaceSucceeded",
    "RAGEngineSucceeded",
    "InferenceSetReady",
}


@dataclass(frozen=True)
class Outcome:
    """How the last reconcile of an owner ended: what its children cannot tell."""

    generation: int | None = None
    """The owner's ``metadata.generation`` the reconcile worked on."""
    invalid: str | None = None
    """Why this generation cannot be reconciled (field and rule)."""
    refused: str | None = None
    """The API server's refusal of a child write (until a reconcile's writes go through)."""
    waiting: str | None = None
    """What the reconcile waits for (shown while the workload does not exist)."""
    target: int | None = None
    """The node count the reconcile decided (stored once in ``targetNodeCount``)."""


@dataclass(frozen=True)
class WorkspaceChildren:
    """What runs for a Workspace."""

    workload: Mapping[str, Any] | None = None
    """The StatefulSet (inference) or Job (tuning) named as the Workspace."""
    pods: Sequence[Mapping[str, Any]] = ()
    """Its pods."""
    inventory: NodeInventory = field(default_factory=NodeInventory)
    """Matching nodes and NodeClaims (read for GPU workloads only)."""


@dataclass(frozen=True)
class RAGEngineChildren:
    """What runs for a RAGEngine."""

    deployment: Mapping[str, Any] | None = None
    """The Deployment named as the RAGEngine."""
    pods: Sequence[Mapping[str, Any]] = ()
    """Its pods."""
    nodes: Sequence[Mapping[str, Any]] | None = None
    """Nodes matching ``spec.compute.labelSelector`` (None: no selector)."""


def _pod_nodes(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")})


def _inference(
    workload: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    nodes: NodeState,
    *,
    generation: int | None,
    waiting: str | None,
    now: datetime.datetime,
) -> tuple[WorkspaceState, list[Condition]]:
    replicas = int((workload or {}).get("spec", {}).get("replicas", 1))
    ready_pods = [p for p in pods if pod_is_ready(p)]
    problem = diagnose_pods(pods, now=now)
    ready = (
        nodes.ready
        and problem is None
        and len(ready_pods) >= replicas
        and rollout_done(workload, replicas)
    )
    reason: str
    if ready:
        reason, message = ConditionReason.INFERENCE_READY, f"{replicas}/{replicas} replicas ready"
    elif problem is not None:
        reason, message = problem.reason, problem.message
    elif workload is None:
        reason = ConditionReason.INFERENCE_NOT_READY
        message = f"waiting: {waiting}" if waiting else "the StatefulSet does not exist yet"
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
    summary = ConditionReason.SUCCEEDED if ready else ConditionReason.PENDING
    return state, [
        condition("InferenceReady", ready, reason, message, generation=generation, now=now),
        condition("WorkspaceSucceeded", ready, summary, message, generation=generation, now=now),
    ]


def _tuning(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    *,
    generation: int | None,
    waiting: str | None,
    now: datetime.datetime,
) -> tuple[WorkspaceState, list[Condition]]:
    job_status = (job or {}).get("status") or {}
    failed = next(
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
    if job is None:
        started_reason = "JobNotCreated"
        started_message = f"waiting: {waiting}" if waiting else "the tuning Job does not exist yet"
    elif started:
        started_reason, started_message = ConditionReason.JOB_STARTED, "the tuning Job started"
    else:
        started_reason = "JobPending"
        started_message = problem.message if problem else "waiting for the Job to start"
    reason: str
    if succeeded:
        state, reason = WorkspaceState.SUCCEEDED, ConditionReason.JOB_SUCCEEDED
        message = "the tuning Job succeeded"
    elif failed is not None:
        state, reason = WorkspaceState.FAILED, ConditionReason.JOB_FAILED
        detail = f"{failed.get('reason', '')} {failed.get('message', '')}".strip()
        message = f"the tuning Job failed: {detail}"
    elif problem is not None:
        state = WorkspaceState.RUNNING if started else WorkspaceState.PENDING
        reason, message = problem.reason, problem.message
    elif started:
        state, reason = WorkspaceState.RUNNING, ConditionReason.JOB_STARTED
        message = "the tuning Job is running"
    else:
        state, reason, message = WorkspaceState.PENDING, ConditionReason.PENDING, started_message
    return state, [
        condition(
            "JobStarted", started, started_reason, started_message, generation=generation, now=now
        ),
        condition("WorkspaceSucceeded", succeeded, reason, message, generation=generation, now=now),
    ]


def apply_outcome(
    conditions: list[Condition],
    outcome: Outcome,
    *,
    summary: str,
    generation: int | None,
    now: datetime.datetime,
) -> tuple[list[Condition], bool]:
    """The conditions with the reconcile's refusal on them: an invalid generation on the
    summary condition (reason ``InvalidSpec``), else an API server refusal on the workload's
    and the summary condition (reason ``ApplyFailed``). True: what runs is not what the
    spec asks for."""
    if outcome.invalid is not None and outcome.generation == generation:
        invalid = condition(
            summary,
            False,
            ConditionReason.INVALID_SPEC,
            outcome.invalid,
            generation=generation,
            now=now,
        )
        return [c for c in conditions if c.type != summary] + [invalid], True
    if outcome.refused is not None:
        return [
            condition(c.type, False, APPLY_FAILED, outcome.refused, generation=generation, now=now)
            if c.type in _APPLY_CONDITIONS
            else c
            for c in conditions
        ], True
    return conditions, False


def observe_workspace(
    ws: Workspace,
    children: WorkspaceChildren,
    outcome: Outcome,
    *,
    now: datetime.datetime,
    byo: bool = False,
) -> WorkspaceStatus:
    """The Workspace's status from what runs for it (``byo``: nodes are the user's own)."""
    generation = ws.metadata.generation
    try:
        preset = plan.preset_of(ws)
    except InvalidSpecError:
        preset = None  # the reconcile's outcome says why
    gpu = plan.needs_gpu(ws, preset)
    old = ws.status or WorkspaceStatus()
    target = old.target_node_count or outcome.target
    nodes = node_state(children.inventory, target=target or 1, gpu=gpu, byo=byo)
    conditions = [
        condition(
            "ResourceReady",
            nodes.ready,
            nodes.reason,
            nodes.message,
            generation=generation,
            now=now,
        )
    ]
    if nodes.claim_condition is not None:
        ok, reason, message = nodes.claim_condition
        conditions.append(
            condition("NodeClaimReady", ok, reason, message, generation=generation, now=now)
        )
    if ws.tuning is not None:
        state, workload = _tuning(
            children.workload,
            children.pods,
            generation=generation,
            waiting=outcome.waiting,
            now=now,
        )
    else:
        state, workload = _inference(
            children.workload,
            children.pods,
            nodes,
            generation=generation,
            waiting=outcome.waiting,
            now=now,
        )
    conditions, refused = apply_outcome(
        conditions + workload,
        outcome,
        summary="WorkspaceSucceeded",
        generation=generation,
        now=now,
    )
    if refused and outcome.invalid is not None and outcome.generation == generation:
        state = WorkspaceState.FAILED if ws.tuning is not None else WorkspaceState.NOT_READY
    elif refused and state == WorkspaceState.READY:
        state = WorkspaceState.NOT_READY
    return old.model_copy(
        update={
            "conditions": merge_conditions(old.conditions, conditions),
            "state": state.value,
            "target_node_count": target,
            # The nodes the pods run on; before scheduling, the ready GPU nodes set aside.
            "worker_nodes": _pod_nodes(children.pods) or (nodes.worker_nodes if gpu else []),
        }
    )


def observe_ragengine(
    engine: RAGEngine,
    children: RAGEngineChildren,
    outcome: Outcome,
    *,
    now: datetime.datetime,
) -> RAGEngineStatus:
    """The RAGEngine's status from its Deployment, pods and the nodes it may run on."""
    generation = engine.metadata.generation
    if children.nodes is not None:
        nodes_ok = bool(children.nodes)
        node_message = f"{len(children.nodes)} nodes match the compute label selector"
    else:
        nodes_ok, node_message = True, "no compute constraints: runs on any node"
    problem = diagnose_pods(children.pods, now=now)
    ready_pods = [p for p in children.pods if pod_is_ready(p)]
    ready = problem is None and bool(ready_pods) and rollout_done(children.deployment, 1)
    reason: str
    if ready:
        reason, message = ConditionReason.SERVICE_READY, "the RAG service is ready"
    elif problem is not None:
        reason, message = problem.reason, problem.message
    else:
        reason = ConditionReason.SERVICE_NOT_READY
        message = f"{len(ready_pods)}/1 replicas ready"
    node_reason = ConditionReason.NODES_READY if nodes_ok else ConditionReason.NODES_NOT_READY
    summary = ConditionReason.SUCCEEDED if ready else ConditionReason.PENDING
    conditions, _ = apply_outcome(
        [
            condition(
                "ResourceReady",
                nodes_ok,
                node_reason,
                node_message,
                generation=generation,
                now=now,
            ),
            condition("ServiceReady", ready, reason, message, generation=generation, now=now),
            condition(
                "RAGEngineSucceeded",
                ready and nodes_ok,
                summary,
                message,
                generation=generation,
                now=now,
            ),
        ],
        outcome,
        summary="RAGEngineSucceeded",
        generation=generation,
        now=now,
    )
    old = engine.status or RAGEngineStatus()
    return old.model_copy(
        update={
            "conditions": merge_conditions(old.conditions, conditions),
            "worker_nodes": _pod_nodes(children.pods),
        }
    )
