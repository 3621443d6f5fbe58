"""Status from what really runs: pods, StatefulSets, Jobs, Deployments, nodes, NodeClaims.

``sync_workspace``/``sync_ragengine`` recompute the whole status and write it only when it
changed; handlers call them after reconciling, on child events and on a timer. Workloads
and pods are read from kopf indexes of the operator's watches (an informer cache: kopf
runs no handler before their initial listings are in), the owner from kopf's live view
of it unless that may be behind (:mod:`kaito_operator.reconcilers.freshness`), nodes and
NodeClaims from the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kaito_operator.errors import InvalidSpecError
from kaito_operator.kube import KubeClient
from kaito_operator.metrics import OperatorMetrics
from kaito_operator.reconcilers import plan
from kaito_operator.reconcilers.freshness import (
    ChildEvent,
    ChildVersions,
    OwnerKey,
    OwnerViews,
    SeenChildren,
    seen_children,
)
from kaito_operator.reconcilers.nodes import NodeProvisioner
from kaito_operator.status import (
    condition,
    diagnose_pods,
    inference_status,
    merge_conditions,
    pod_is_ready,
    report_apply_failure,
    rollout_done,
    timestamp,
    tuning_status,
)
from kaito_sdk.api import ConditionReason, RAGEngine, Workspace, WorkspaceState

__all__ = ["StatusObserver"]

log = logging.getLogger(__name__)
#: Child events within this window share one status recompute.
_COALESCE_S = 0.2
#: How long a recompute waits for the watch to deliver a workload the reconcile wrote.
_ARRIVAL_S = 2.0


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _now() -> str:
    return timestamp(_utcnow())


#: A kopf index of children by owner: (namespace, owner name) -> (kind, object) values.
ChildIndex = Mapping[tuple[str, str], Iterable[tuple[str, Mapping[str, Any]]]]


def _pod_nodes(pods: list[dict[str, Any]]) -> list[str]:
    return sorted({p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")})


class StatusObserver:
    """Computes and writes Workspace and RAGEngine status."""

    def __init__(
        self,
        kube: KubeClient,
        nodes: NodeProvisioner,
        metrics: OperatorMetrics,
        children: Mapping[str, ChildIndex],
    ) -> None:
        """``children``: the child index of each owner kind (``"Workspace"``, ``"RAGEngine"``)."""
        self.kube = kube
        self.children = children
        self.nodes = nodes
        self.metrics = metrics
        self._invalid: dict[tuple[str, str, str], tuple[int | None, str]] = {}
        self._waiting: dict[tuple[str, str, str], str] = {}
        self._refused: dict[tuple[str, str, str], str] = {}
        self._pending: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._targets: dict[tuple[str, str, str], int] = {}
        self._versions = ChildVersions()
        self._arrivals: dict[OwnerKey, tuple[ChildEvent, asyncio.Event]] = {}
        self.owners = OwnerViews()

    def schedule(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        target: int | None = None,
        written: ChildEvent | None = None,
    ) -> None:
        """Recompute a status soon; a reconcile and the child events it causes coalesce
        into one recompute (``target``: a node count just decided, to be stored;
        ``written``: the workload version the reconcile wrote, which the recompute waits
        for in the child index, up to ``_ARRIVAL_S``, rather than report it missing)."""
        key = (kind, namespace, name)
        if target is not None:
            self._targets[key] = target
        if written is not None and not self._indexed(key, written):
            self._arrivals[key] = (written, asyncio.Event())
        if key in self._pending:
            return

        async def later() -> None:
            await asyncio.sleep(_COALESCE_S)
            arrival = self._arrivals.get(key)
            if arrival is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrival[1].wait(), _ARRIVAL_S)
                if self._arrivals.get(key) is arrival:
                    del self._arrivals[key]
            del self._pending[key]  # events from now on schedule the next recompute
            decided = self._targets.pop(key, None)
            try:
                await self.sync(kind, namespace, name, target=decided)
            except Exception:  # a failed recompute is retried by the next event or resync
                log.exception("status of %s %s/%s not recomputed", kind, namespace, name)

        self._pending[key] = asyncio.get_running_loop().create_task(later())

    def child_changed(
        self,
        kind: str,
        namespace: str,
        name: str,
        child: tuple[str, Mapping[str, Any]],
        *,
        deleted: bool,
    ) -> None:
        """A watch event of an owner's child (``(kind, object)``: workload or pod): recompute
        the owner's status unless the last recompute already read this version of the child
        (:mod:`kaito_operator.reconcilers.freshness`)."""
        key = (kind, namespace, name)
        event = ChildEvent.of(child[0], child[1], deleted=deleted)
        arrival = self._arrivals.get(key)
        if arrival is not None and arrival[0] == event:
            arrival[1].set()
        if self._versions.needs_recompute(key, event):
            self.schedule(kind, namespace, name)

    async def close(self) -> None:
        """Cancel scheduled recomputes."""
        for task in list(self._pending.values()):
            task.cancel()
        self._pending.clear()

    def report_waiting(self, kind: str, namespace: str, name: str, reason: str | None) -> None:
        """Record what the last reconcile waits for (None: nothing); shown while the
        workload does not exist yet."""
        key = (kind, namespace, name)
        if reason is None:
            self._waiting.pop(key, None)
        else:
            self._waiting[key] = reason

    def report_apply_failed(self, kind: str, namespace: str, name: str, error: str | None) -> None:
        """Record the API server's refusal of the last reconcile's writes (None: they went
        through); shown on the workload and summary conditions until a reconcile succeeds."""
        key = (kind, namespace, name)
        if error is None:
            self._refused.pop(key, None)
        else:
            self._refused[key] = error

    async def report_invalid(self, body: Mapping[str, Any], error: InvalidSpecError) -> None:
        """Record that this generation of an object cannot be reconciled, and say why."""
        meta = body["metadata"]
        key = (body["kind"], meta["namespace"], meta["name"])
        self._invalid[key] = (meta.get("generation"), str(error))
        await self.sync(body["kind"], meta["namespace"], meta["name"])

    def _invalid_message(self, raw: Mapping[str, Any]) -> str | None:
        meta = raw["metadata"]
        known = self._invalid.get((raw["kind"], meta["namespace"], meta["name"]))
        if known is None or known[0] != meta.get("generation"):
            return None
        return known[1]

    async def _owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The Workspace or RAGEngine: kopf's live view if current, else read from the API."""
        key = (kind, namespace, name)
        raw = self.owners.current(key)
        if raw is None:
            raw = await self.kube.get("kaito.sh/v1beta1", kind, name, namespace)
            self.owners.saw(key, raw)
        return raw

    def _indexed(self, key: OwnerKey, event: ChildEvent) -> bool:
        """Whether the child index holds this version of the child already."""
        for child_kind, obj in self.children[key[0]].get((key[1], key[2]), ()):
            meta = obj["metadata"]
            if (child_kind, meta["name"]) == (event.kind, event.name):
                return bool(meta.get("resourceVersion") == event.resource_version)
        return False

    def _children(
        self, kind: str, namespace: str, name: str, workload_kind: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The owner's workload (named as the owner) and pods, from the child index."""
        workload = None
        pods = []
        for child_kind, obj in self.children[kind].get((namespace, name), ()):
            if child_kind == "Pod":
                pods.append(dict(obj))
            elif child_kind == workload_kind and obj["metadata"]["name"] == name:
                workload = dict(obj)
        return workload, pods

    async def sync(
        self, kind: str, namespace: str, name: str, *, target: int | None = None
    ) -> None:
        """Recompute the status of a Workspace or RAGEngine."""
        if kind == "Workspace":
            await self.sync_workspace(namespace, name, target=target)
        else:
            await self.sync_ragengine(namespace, name)

    async def _write(self, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        invalid = self._invalid_message(obj)
        if invalid is not None:
            summary = "WorkspaceSucceeded" if obj["kind"] == "Workspace" else "RAGEngineSucceeded"
            generation = obj["metadata"].get("generation")
            refusal = condition(
                summary,
                False,
                ConditionReason.INVALID_SPEC,
                invalid,
                generation=generation,
                now=_now(),
            )
            status["conditions"] = [c for c in status["conditions"] if c["type"] != summary] + [
                refusal
            ]
            if obj["kind"] == "Workspace":
                status["state"] = (
                    WorkspaceState.FAILED.value
                    if obj.get("tuning")
                    else WorkspaceState.NOT_READY.value
                )
        meta = obj["metadata"]
        refused = self._refused.get((obj["kind"], meta["namespace"], meta["name"]))
        if refused is not None and invalid is None:
            generation = meta.get("generation")
            report_apply_failure(status, refused, generation=generation, now=_now())
        state = status.get("state")
        if state is None:  # RAGEngine: ready or not
            by_type = {c["type"]: c["status"] for c in status["conditions"]}
            state = "Ready" if by_type.get("RAGEngineSucceeded") == "True" else "NotReady"
        self.metrics.set_state(obj["kind"], meta["namespace"], meta["name"], state)
        old = obj.get("status") or {}
        status["conditions"] = merge_conditions(old.get("conditions"), status.get("conditions", []))
        merged = {**old, **status}
        if merged != old:
            written = await self.kube.patch_status(
                obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), status
            )
            self.owners.saw((obj["kind"], meta["namespace"], meta["name"]), written)

    async def sync_workspace(self, namespace: str, name: str, *, target: int | None = None) -> None:
        """Recompute and store the status of one Workspace (``target``: a node count just
        decided by the reconciler, stored once)."""
        key = ("Workspace", namespace, name)
        self._versions.started(key)
        seen = None
        try:
            seen = await self._sync_workspace(namespace, name, target=target)
        finally:
            if self._versions.finished(key, seen):
                self.schedule(*key)

    async def _sync_workspace(
        self, namespace: str, name: str, *, target: int | None
    ) -> SeenChildren | None:
        raw = await self._owner("Workspace", namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self.metrics.set_state("Workspace", namespace, name, None)
            return None
        ws = Workspace.from_manifest(raw)
        workload_kind = "Job" if ws.tuning is not None else "StatefulSet"
        workload, pods = self._children("Workspace", namespace, name, workload_kind)
        try:
            preset = plan.preset_of(ws)
        except InvalidSpecError:
            preset = None  # the reconciler reported why (``report_invalid``)
        gpu = plan.needs_gpu(ws, preset)
        stored = ws.status.target_node_count if ws.status else None
        decided = stored or target
        nodes = await self.nodes.observe(ws, target=decided or 1, gpu=gpu)
        generation = raw["metadata"].get("generation")
        waiting = self._waiting.get(("Workspace", namespace, name))
        conditions = [
            condition(
                "ResourceReady",
                nodes.ready,
                nodes.reason,
                nodes.message,
                generation=generation,
                now=_now(),
            )
        ]
        if nodes.claim_condition is not None:
            ok, reason, message = nodes.claim_condition
            conditions.append(
                condition("NodeClaimReady", ok, reason, message, generation=generation, now=_now())
            )
        if ws.tuning is not None:
            status = tuning_status(workload, pods, nodes, generation, waiting, now=_utcnow())
        else:
            status = inference_status(workload, pods, nodes, generation, waiting, now=_utcnow())
        status["conditions"] = conditions + status["conditions"]
        if not stored and target is not None:
            status["targetNodeCount"] = target
        # The nodes the pods run on; before scheduling, the ready GPU nodes set aside.
        status["workerNodes"] = _pod_nodes(pods) or (nodes.worker_nodes if gpu else [])
        await self._write(raw, status)
        return seen_children([(workload_kind, workload), *(("Pod", pod) for pod in pods)])

    async def sync_ragengine(self, namespace: str, name: str) -> None:
        """Recompute and store the status of one RAGEngine."""
        key = ("RAGEngine", namespace, name)
        self._versions.started(key)
        seen = None
        try:
            seen = await self._sync_ragengine(namespace, name)
        finally:
            if self._versions.finished(key, seen):
                self.schedule(*key)

    async def _sync_ragengine(self, namespace: str, name: str) -> SeenChildren | None:
        raw = await self._owner("RAGEngine", namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self.metrics.set_state("RAGEngine", namespace, name, None)
            return None
        engine = RAGEngine.from_manifest(raw)
        generation = raw["metadata"].get("generation")
        deployment, pods = self._children("RAGEngine", namespace, name, "Deployment")
        compute = engine.spec.compute
        if compute is not None and compute.label_selector is not None:
            matching = await self.nodes.matching_nodes(compute.label_selector)
            nodes_ok = bool(matching)
            node_message = f"{len(matching)} nodes match the compute label selector"
        else:
            nodes_ok, node_message = True, "no compute constraints: runs on any node"
        problem = diagnose_pods(pods, now=_utcnow())
        ready_pods = [p for p in pods if pod_is_ready(p)]
        ready = problem is None and bool(ready_pods) and rollout_done(deployment, 1)
        reason: str
        if ready:
            reason, message = ConditionReason.SERVICE_READY, "the RAG service is ready"
        elif problem is not None:
            reason, message = problem.reason, problem.message
        else:
            reason, message = (
                ConditionReason.SERVICE_NOT_READY,
                f"{len(ready_pods)}/1 replicas ready",
            )
        node_reason = ConditionReason.NODES_READY if nodes_ok else ConditionReason.NODES_NOT_READY
        status = {
            "workerNodes": _pod_nodes(pods),
            "conditions": [
                condition(
                    "ResourceReady",
                    nodes_ok,
                    node_reason,
                    node_message,
                    generation=generation,
                    now=_now(),
                ),
                condition(
                    "ServiceReady", ready, reason, message, generation=generation, now=_now()
                ),
                condition(
                    "RAGEngineSucceeded",
                    ready and nodes_ok,
                    "Succeeded" if ready else "Pending",
                    message,
                    generation=generation,
                    now=_now(),
                ),
            ],
        }
        await self._write(raw, status)
        return seen_children([("Deployment", deployment), *(("Pod", pod) for pod in pods)])
