"""What an InferenceSet becomes: member Workspaces ``<set>-<n>``, one Service across the
members' serving pods, a KEDA ScaledObject (when annotated), the member plan (scale up,
scale down, rolling update) and the status. Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kaito_operator.builders.common import config_hash, owner_reference
from kaito_operator.builders.services import SERVICE_PORT
from kaito_operator.status import condition, merge_conditions
from kaito_sdk import labels
from kaito_sdk.api import (
    ANNOTATION_SCALEDOBJECT_SERVER_ADDRESS,
    InferenceSet,
    InferenceSetStatus,
)
from kaito_sdk.api.inferenceset import member_workspace, scaling_bounds, scaling_metrics

__all__ = [
    "ANNOTATION_TEMPLATE_HASH",
    "DEFAULT_PROMETHEUS_ADDRESS",
    "Member",
    "MemberPlan",
    "inferenceset_status",
    "max_unavailable",
    "member_from",
    "member_manifest",
    "members_service",
    "metric_query",
    "plan_members",
    "scaled_object",
    "selector",
    "template_hash",
]

#: Hash of the template a member Workspace was last written from.
ANNOTATION_TEMPLATE_HASH: Final = "inferenceset.kaito.sh/template-hash"
#: Where KEDA queries Prometheus unless ``scaledobject.kaito.sh/server-address`` says.
DEFAULT_PROMETHEUS_ADDRESS: Final = "http://prometheus-operated.monitoring.svc:9090"
# The same quantity under each runtime's metric name: a ScaledObject asks for the one the
# members' runtime exports.
_RUNTIME_METRICS: Final = {
    "vllm": {
        "kaito_inference_requests_waiting": "vllm:num_requests_waiting",
        "kaito_inference_requests_running": "vllm:num_requests_running",
    },
    "transformers": {
        "vllm:num_requests_waiting": "kaito_inference_requests_waiting",
        "vllm:num_requests_running": "kaito_inference_requests_running",
    },
}


def selector(inference_set: InferenceSet) -> str:
    """``status.selector``: the label selector of the members (and the scale subresource's)."""
    return f"{labels.LABEL_INFERENCESET_CREATED_BY}={inference_set.metadata.name}"


def template_hash(inference_set: InferenceSet) -> str:
    """A hash of everything a member is made from (a change rolls the members)."""
    spec = inference_set.spec
    return config_hash(
        spec.template.model_dump(mode="json", by_alias=True, exclude_none=True),
        spec.label_selector.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def member_manifest(inference_set: InferenceSet, index: int, revision: str) -> dict[str, Any]:
    """The member Workspace number ``index``, owned by the set (garbage-collected with it)
    and stamped with the template hash it was written from."""
    manifest = member_workspace(inference_set, index).to_manifest()
    meta = manifest["metadata"]
    meta["annotations"] = {**meta.get("annotations", {}), ANNOTATION_TEMPLATE_HASH: revision}
    meta["ownerReferences"] = [owner_reference(inference_set)]
    return manifest


def members_service(inference_set: InferenceSet) -> dict[str, Any]:
    """The ClusterIP Service ``<set>`` across the members' pods (the ready ones: those that
    answer the ``/health`` readiness probe on the ``http`` port)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": str(inference_set.metadata.name),
            "namespace": inference_set.metadata.namespace,
            "labels": {labels.LABEL_INFERENCESET_CREATED_BY: str(inference_set.metadata.name)},
            "ownerReferences": [owner_reference(inference_set)],
        },
        "spec": {
            "type": "ClusterIP",
            # No pod-index label: StatefulSets set it only since Kubernetes 1.28.
            "selector": {labels.LABEL_INFERENCESET_CREATED_BY: str(inference_set.metadata.name)},
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def metric_query(inference_set: InferenceSet, metric: str) -> str:
    """PromQL summing ``metric`` over the members' serving pods (``<set>-<n>-0``)."""
    name = inference_set.metadata.name
    return f'sum({metric}{{namespace="{inference_set.metadata.namespace}",pod=~"{name}-[0-9]+-0"}})'


def scaled_object(inference_set: InferenceSet, *, runtime: str) -> dict[str, Any] | None:
    """The KEDA ScaledObject the ``scaledobject.kaito.sh/*`` annotations ask for (None
    without ``scaledobject.kaito.sh/metrics``): one Prometheus trigger per metric, named as
    the members' ``runtime`` exports it, with ``upthreshold`` as the target; the largest
    gap down to a ``downthreshold`` becomes the HPA's scale-down tolerance.

    Raises :class:`ValueError` for a malformed annotation.
    """
    metrics = scaling_metrics(inference_set)
    if not metrics:
        return None
    low, high = scaling_bounds(inference_set)
    annotations = inference_set.metadata.annotations or {}
    address = annotations.get(ANNOTATION_SCALEDOBJECT_SERVER_ADDRESS, DEFAULT_PROMETHEUS_ADDRESS)
    renames = _RUNTIME_METRICS.get(runtime, {})
    triggers = []
    for metric in metrics:
        name = renames.get(metric.name, metric.name)
        triggers.append(
            {
                "type": "prometheus",
                "name": name.replace(":", "-").replace("_", "-"),
                "metricType": metric.type,
                "metadata": {
                    "serverAddress": address,
                    "query": metric_query(inference_set, name),
                    "threshold": _number(metric.upthreshold),
                },
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": inference_set.api_info.api_version,
            "kind": "InferenceSet",
            "name": str(inference_set.metadata.name),
        },
        "minReplicaCount": low,
        "maxReplicaCount": high,
        "triggers": triggers,
    }
    tolerance = max(1 - metric.downthreshold / metric.upthreshold for metric in metrics)
    if tolerance > 0:
        behavior = {"scaleDown": {"tolerance": _number(round(tolerance, 3))}}
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": str(inference_set.metadata.name),
            "namespace": inference_set.metadata.namespace,
            "labels": {labels.LABEL_INFERENCESET_CREATED_BY: str(inference_set.metadata.name)},
            "ownerReferences": [owner_reference(inference_set)],
        },
        "spec": spec,
    }


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


@dataclass(frozen=True)
class Member:
    """What the set needs to know about one existing member Workspace."""

    name: str
    index: int
    revision: str | None
    """The template hash it was written from."""
    ready: bool
    """Inference ready, observed for its current generation."""
    deleting: bool
    nodes: int
    """Its target node count (1 until the Workspace controller decided)."""


def member_from(inference_set: InferenceSet, workspace: Mapping[str, Any]) -> Member | None:
    """The member a listed Workspace is, or None when it is not ``<set>-<n>``."""
    meta = workspace["metadata"]
    prefix = f"{inference_set.metadata.name}-"
    suffix = str(meta["name"]).removeprefix(prefix)
    if not str(meta["name"]).startswith(prefix) or not suffix.isdigit():
        return None
    if str(int(suffix)) != suffix:  # "<set>-01" is not a name this controller gives
        return None
    status = workspace.get("status") or {}
    generation = meta.get("generation", 1)
    ready = any(
        c.get("type") == "InferenceReady"
        and c.get("status") == "True"
        and c.get("observedGeneration", 0) >= generation
        for c in status.get("conditions") or []
    )
    return Member(
        name=str(meta["name"]),
        index=int(suffix),
        revision=(meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE_HASH),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        nodes=int(status.get("targetNodeCount") or 1),
    )


@dataclass(frozen=True)
class MemberPlan:
    """What one reconcile does to the members."""

    create: tuple[int, ...]
    """Indexes of members to create."""
    update: tuple[int, ...]
    """Indexes of members to rewrite from the current template."""
    delete: tuple[str, ...]
    """Names of members to delete."""
    target: int
    """The replicas aimed for (``spec.replicas``, lowered by ``nodeCountLimit``)."""


def max_unavailable(inference_set: InferenceSet) -> int:
    """``updateStrategy.rollingUpdate.maxUnavailable`` (1 by default)."""
    strategy = inference_set.spec.update_strategy or {}
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1)
    return value if isinstance(value, int) and value >= 1 else 1


def plan_members(
    inference_set: InferenceSet, members: Sequence[Member], revision: str
) -> MemberPlan:
    """Scale to the desired count and roll outdated members, ``maxUnavailable`` at a time.

    Scale-down deletes not-ready members first, then outdated ones, then the highest
    indexes. New members take the lowest free indexes. An outdated member that is not
    ready is rewritten at once (it serves nothing); a ready one only while fewer than
    ``maxUnavailable`` kept members are unavailable.
    """
    live = [m for m in members if not m.deleting]
    target = inference_set.desired_replicas
    limit = inference_set.spec.node_count_limit
    if limit is not None:
        per_replica = max((m.nodes for m in live), default=1)
        target = min(target, limit // per_replica)
    excess = max(len(live) - target, 0)
    victims = sorted(live, key=lambda m: (m.ready, m.revision == revision, -m.index))[:excess]
    kept = sorted((m for m in live if m not in victims), key=lambda m: m.index)
    taken = {m.index for m in members}
    create: list[int] = []
    index = 0
    while len(kept) + len(create) < target:
        if index not in taken:
            create.append(index)
        index += 1
    outdated = [m for m in kept if m.revision != revision]
    update = [m.index for m in outdated if not m.ready]
    unavailable = sum(not m.ready for m in kept) + len(create)
    for member in (m for m in outdated if m.ready):
        if unavailable >= max_unavailable(inference_set):
            break
        update.append(member.index)
        unavailable += 1
    return MemberPlan(
        create=tuple(create),
        update=tuple(update),
        delete=tuple(m.name for m in victims),
        target=target,
    )


def inferenceset_status(
    inference_set: InferenceSet,
    members: Sequence[Member],
    revision: str,
    plan: MemberPlan,
    *,
    now: datetime.datetime,
) -> InferenceSetStatus:
    """``status`` after a reconcile: member counts, the selector and ``InferenceSetReady``."""
    live = [m for m in members if not m.deleting]
    ready = sum(m.ready for m in live)
    desired = inference_set.desired_replicas
    outdated = sum(m.revision != revision for m in live)
    if plan.target < desired:
        ok, reason = False, "NodeCountLimitReached"
        message = (
            f"nodeCountLimit {inference_set.spec.node_count_limit} allows {plan.target} "
            f"of {desired} replicas"
        )
    elif outdated:
        ok, reason = False, "RollingUpdate"
        message = f"{outdated} of {len(live)} member Workspaces run an older template"
    elif ready < desired or len(live) != desired:
        ok, reason = False, "ReplicasNotReady"
        message = f"{ready} of {desired} member Workspaces are ready ({len(live)} exist)"
    else:
        ok, reason = True, "InferenceSetReady"
        message = f"{ready} of {desired} member Workspaces are ready"
    generation = inference_set.metadata.generation
    ready_condition = condition(
        "InferenceSetReady", ok, reason, message, generation=generation, now=now
    )
    old = inference_set.status or InferenceSetStatus()
    return old.model_copy(
        update={
            "replicas": len(live),
            "ready_replicas": ready,
            "selector": selector(inference_set),
            "conditions": merge_conditions(old.conditions, [ready_condition]),
        }
    )
