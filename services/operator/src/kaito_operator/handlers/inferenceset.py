"""kopf handlers for InferenceSets: parse, reconcile, and wake the set when a member
Workspace changes. Nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from kaito_operator.controller import parse_owner
from kaito_operator.errors import InvalidSpecError
from kaito_operator.memo import OperatorMemo
from kaito_operator.status import condition, merge_conditions
from kaito_sdk import labels
from kaito_sdk.api import ConditionReason, InferenceSet, InferenceSetStatus

__all__ = [
    "INFERENCESETS",
    "member_changed",
    "parse_inferenceset",
    "reconcile_inferenceset",
    "register",
    "resync_inferenceset",
]

INFERENCESETS = ("kaito.sh", "v1beta1", "inferencesets")
_MEMBERS = {labels.LABEL_INFERENCESET_CREATED_BY: kopf.PRESENT}


def parse_inferenceset(body: Mapping[str, Any]) -> InferenceSet:
    """The typed InferenceSet; a body that does not parse is a permanent error."""
    return parse_owner(InferenceSet, body)


async def _report_invalid(
    memo: OperatorMemo, body: Mapping[str, Any], error: InvalidSpecError
) -> None:
    """``InferenceSetReady`` False with reason ``InvalidSpec`` naming the field."""
    meta = body["metadata"]
    invalid = condition(
        "InferenceSetReady",
        False,
        ConditionReason.INVALID_SPEC,
        str(error),
        generation=meta.get("generation"),
        now=datetime.datetime.now(datetime.UTC),
    )
    try:
        old = InferenceSetStatus.model_validate(body.get("status") or {}).conditions
    except pydantic.ValidationError:
        old = None
    conditions = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True)
        for c in merge_conditions(old, [invalid])
    ]
    await memo.kube.patch_status(
        "kaito.sh/v1beta1",
        "InferenceSet",
        meta["name"],
        meta.get("namespace"),
        {"conditions": conditions},
    )


async def _reconcile(memo: OperatorMemo, body: Mapping[str, Any]) -> None:
    try:
        inference_set = parse_inferenceset(body)
        with memo.metrics.reconcile("InferenceSet"):
            await memo.inferencesets.reconcile(inference_set)
    except InvalidSpecError as exc:
        await _report_invalid(memo, body, exc)
        raise


async def reconcile_inferenceset(*, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Create, rewrite or delete member Workspaces towards the spec; write the status."""
    await _reconcile(memo, body)


async def resync_inferenceset(
    *, body: kopf.Body, memo: OperatorMemo, stopped: kopf.DaemonStopped, logger: Any, **_: Any
) -> None:
    """Reconcile again whenever a member Workspace changes (a member became ready: the
    rolling update goes on), and every ``resync_seconds`` regardless."""
    namespace, name = body.metadata.namespace, body.metadata.name
    wakeups = memo.inferenceset_wakeups
    wake = wakeups.setdefault((namespace, name), asyncio.Event())
    try:
        while not stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=memo.settings.resync_seconds)
            wake.clear()
            raw = await memo.kube.get("kaito.sh/v1beta1", "InferenceSet", name, namespace)
            if raw is None or raw["metadata"].get("deletionTimestamp"):
                memo.inferencesets.forget(namespace, name)
                return
            try:
                await _reconcile(memo, raw)
            except (kopf.PermanentError, kopf.TemporaryError) as exc:
                logger.info("resync of InferenceSet %s/%s postponed: %s", namespace, name, exc)
    finally:
        if wakeups.get((namespace, name)) is wake:
            del wakeups[(namespace, name)]


async def member_changed(*, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """A member Workspace changed (status included): wake its InferenceSet's resync."""
    owner = body.metadata.labels.get(labels.LABEL_INFERENCESET_CREATED_BY)
    wake = memo.inferenceset_wakeups.get((body.metadata.namespace, owner))
    if wake is not None:
        wake.set()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the InferenceSet controller's handlers (part of the workspace controller)."""
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*INFERENCESETS, registry=registry)(reconcile_inferenceset)
    kopf.daemon(*INFERENCESETS, registry=registry, cancellation_timeout=1.0)(resync_inferenceset)
    kopf.on.event("kaito.sh", "v1beta1", "workspaces", labels=_MEMBERS, registry=registry)(
        member_changed
    )
