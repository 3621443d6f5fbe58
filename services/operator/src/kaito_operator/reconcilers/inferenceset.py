"""InferenceSet reconcile: list the member Workspaces, create, rewrite and delete them as
the plan says, apply the Service and the KEDA ScaledObject, write the status.

Level-based: each call starts from what the API server lists, so a restarted operator
picks up where the last one stopped. Members are garbage-collected with the set through
their owner reference.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

import pydantic

from kaito_operator.builders import inferenceset as builders
from kaito_operator.errors import InvalidSpecError, NotReadyError, refuse_invalid
from kaito_operator.kube import KubeApiError, KubeClient
from kaito_operator.reconcilers import plan
from kaito_sdk import labels
from kaito_sdk.api import InferenceSet, Workspace
from kaito_sdk.api.inferenceset import member_name, member_workspace
from kaito_sdk.validation import validate
from kaito_sdk.validation.update import check_workspace_update

__all__ = ["InferenceSetReconciler"]

_WORKSPACE = ("kaito.sh/v1beta1", "Workspace")
_SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")


class InferenceSetReconciler:
    """Drives one InferenceSet to its member Workspaces, Service and ScaledObject."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        # Sets known to have no ScaledObject (saves a DELETE per reconcile).
        self._without_scaler: set[tuple[str | None, str | None]] = set()
        # One reconcile of a set at a time: the change handler and the resync daemon
        # must not interleave their writes.
        self._locks: dict[tuple[str | None, str | None], asyncio.Lock] = {}

    def forget(self, namespace: str | None, name: str | None) -> None:
        """Drop what is kept about a set that is gone."""
        self._locks.pop((namespace, name), None)
        self._without_scaler.discard((namespace, name))

    async def reconcile(self, inference_set: InferenceSet) -> builders.MemberPlan:
        """One step towards the desired members; returns what it did."""
        key = (inference_set.metadata.namespace, inference_set.metadata.name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            return await self._reconcile(inference_set)

    async def _reconcile(self, inference_set: InferenceSet) -> builders.MemberPlan:
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
        status = builders.inferenceset_status(
            inference_set,
            _after(inference_set, members, member_plan, revision),
            revision,
            member_plan,
            now=datetime.datetime.now(datetime.UTC),
        )
        new = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        current = inference_set.status
        old = current.model_dump(mode="json", by_alias=True, exclude_none=True) if current else {}
        if new != old:
            await self.kube.patch_status(
                "kaito.sh/v1beta1", "InferenceSet", str(name), namespace, new
            )
        return member_plan

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


def _after(
    inference_set: InferenceSet,
    members: list[builders.Member],
    member_plan: builders.MemberPlan,
    revision: str,
) -> list[builders.Member]:
    """The members as this reconcile leaves them (created and rewritten ones not ready)."""
    deleted = set(member_plan.delete)
    rewritten = set(member_plan.update)
    result = [
        builders.Member(m.name, m.index, revision, False, m.deleting, m.nodes)
        if m.index in rewritten
        else m
        for m in members
        if m.name not in deleted
    ]
    result += [
        builders.Member(member_name(inference_set, index), index, revision, False, False, 1)
        for index in member_plan.create
    ]
    return result
