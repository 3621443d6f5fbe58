"""InferenceSet reconcile: list the member Workspaces, create, rewrite and delete them as
the plan says, apply the Service and the KEDA ScaledObject; the InferenceSet
:class:`~kaito_operator.reconcilers.kind.Kind` of the generic controller, whose status is
the pure :func:`observe_inferenceset` of the members its index holds.

Level-based: each call starts from what the API server lists, so a restarted operator
picks up where the last one stopped. Members are garbage-collected with the set through
their owner reference. A member's change reconciles the set again (a member became
ready: the rolling update goes on).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pydantic

from kaito_operator.builders import inferenceset as builders
from kaito_operator.errors import InvalidSpecError, NotReadyError, refuse_invalid
from kaito_operator.kube import KubeApiError, KubeClient
from kaito_operator.reconcilers import plan
from kaito_operator.reconcilers.kind import Children, Reconciled
from kaito_operator.reconcilers.observe import Outcome, apply_outcome
from kaito_operator.status import merge_conditions
from kaito_sdk import labels
from kaito_sdk.api import InferenceSet, InferenceSetStatus, Workspace
from kaito_sdk.api.inferenceset import member_workspace
from kaito_sdk.validation import validate
from kaito_sdk.validation.update import check_workspace_update

__all__ = ["InferenceSetReconciler", "observe_inferenceset"]

_WORKSPACE = ("kaito.sh/v1beta1", "Workspace")
_SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")


class InferenceSetReconciler:
    """Drives InferenceSets to their member Workspaces, Service and ScaledObject."""

    model: ClassVar[type[InferenceSet]] = InferenceSet
    summary: ClassVar[str] = "InferenceSetReady"
    reconcile_on_child_change: ClassVar[bool] = True

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        # Sets known to have no ScaledObject (saves a DELETE per reconcile).
        self._without_scaler: set[tuple[str | None, str | None]] = set()

    async def cleanup(self, owner: InferenceSet) -> None:
        """Members go by garbage collection; drop what is kept about the set."""
        self._without_scaler.discard((owner.metadata.namespace, owner.metadata.name))

    async def observe(
        self, owner: InferenceSet, children: Children, outcome: Outcome, *, now: datetime.datetime
    ) -> InferenceSetStatus:
        """The status from the member Workspaces (``children``)."""
        members = [obj for kind, obj in children if kind == "Workspace"]
        return observe_inferenceset(owner, members, outcome, now=now)

    async def reconcile(self, owner: InferenceSet) -> Reconciled:
        """One step towards the desired members."""
        inference_set = owner
        refuse_invalid(validate(inference_set))
        namespace, name = inference_set.metadata.namespace, inference_set.metadata.name
        listed = await self.kube.list(
            *_WORKSPACE, namespace, labels={labels.LABEL_INFERENCESET_CREATED_BY: str(name)}
        )
        members = [
            member
            for member in (builders.member_from(inference_set, ws) for ws in listed)
            if member is not None
        ]
        revision = builders.template_hash(inference_set)
        member_plan = builders.plan_members(inference_set, members, revision)
        manifests = {
            index: builders.member_manifest(inference_set, index, revision)
            for index in (*member_plan.create, *member_plan.update)
        }
        # A change to a field a Workspace may not change (instance type, node selector,
        # preset) replaces the member: it is deleted, and a later pass creates a new one.
        by_name = {ws["metadata"]["name"]: ws for ws in listed}
        replaced = [
            manifests[index]["metadata"]["name"]
            for index in member_plan.update
            if _immutable_change(
                by_name.get(manifests[index]["metadata"]["name"]), manifests[index]
            )
        ]
        writes = [
            self.kube.apply(manifest)
            for manifest in manifests.values()
            if manifest["metadata"]["name"] not in replaced
        ]
        deletes = [
            self.kube.delete(*_WORKSPACE, victim, namespace)
            for victim in (*member_plan.delete, *replaced)
        ]
        await asyncio.gather(
            *writes,
            *deletes,
            self.kube.apply(builders.members_service(inference_set)),
            self._scaled_object(inference_set),
        )
        return Reconciled()

    async def _scaled_object(self, inference_set: InferenceSet) -> None:
        key = (inference_set.metadata.namespace, inference_set.metadata.name)
        member = member_workspace(inference_set, 0)
        runtime = plan.runtime_of(member, plan.preset_of(member))
        try:
            scaler = builders.scaled_object(inference_set, runtime=runtime)
        except ValueError as exc:
            raise InvalidSpecError("metadata.annotations", str(exc)) from None
        if scaler is None:
            if key not in self._without_scaler and not await self.kube.delete(
                *_SCALED_OBJECT, str(key[1]), key[0]
            ):
                self._without_scaler.add(key)  # confirmed gone
            return
        self._without_scaler.discard(key)
        try:
            await self.kube.apply(scaler)
        except KubeApiError as exc:
            if exc.status == 404:
                raise NotReadyError(
                    "KEDA is not installed: keda.sh/v1alpha1 ScaledObjects are not served",
                    delay=30,
                ) from None
            raise


def _immutable_change(current: Mapping[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether rewriting ``current`` as ``desired`` changes a field fixed at creation (a
    member that no longer parses as a Workspace is replaced too)."""
    if current is None:
        return False
    try:
        old = Workspace.from_manifest({k: v for k, v in current.items() if k != "status"})
    except pydantic.ValidationError:
        return True
    return any(True for _ in check_workspace_update(old, Workspace.from_manifest(desired)))


def observe_inferenceset(
    inference_set: InferenceSet,
    workspaces: Sequence[Mapping[str, Any]],
    outcome: Outcome,
    *,
    now: datetime.datetime,
) -> InferenceSetStatus:
    """The set's status from its member Workspaces as listed (pure): member counts, the
    selector and ``InferenceSetReady``, with the last reconcile's refusal on it."""
    members = [
        member
        for member in (builders.member_from(inference_set, ws) for ws in workspaces)
        if member is not None
    ]
    revision = builders.template_hash(inference_set)
    member_plan = builders.plan_members(inference_set, members, revision)
    status = builders.inferenceset_status(inference_set, members, revision, member_plan, now=now)
    generation = inference_set.metadata.generation
    conditions, _ = apply_outcome(
        status.conditions or [],
        outcome,
        summary="InferenceSetReady",
        generation=generation,
        now=now,
    )
    return status.model_copy(update={"conditions": merge_conditions(status.conditions, conditions)})
