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

from kaito_operator.errors import InvalidSpecError
from kaito_operator.status import condition, merge_conditions, timestamp
from kaito_sdk import labels
from kaito_sdk.api import InferenceSet

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
    try:
        return InferenceSet.from_manifest(dict(body))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise InvalidSpecError(field, error["msg"]) from None


async def _report_invalid(memo: Any, body: Mapping[str, Any], error: InvalidSpecError) -> None:
    """``InferenceSetReady`` False with reason ``InvalidSpec`` naming the field."""
    meta = body["metadata"]
    now = timestamp(datetime.datetime.now(datetime.UTC))
    invalid = condition(
        "InferenceSetReady",
        False,
        "InvalidSpec",
        str(error),
        generation=meta.get("generation"),
        now=now,
    )
    old = (body.get("status") or {}).get("conditions")
    status = {"conditions": merge_conditions(old, [invalid])}
    await memo.kube.patch_status(
        "kaito.sh/v1beta1", "InferenceSet", meta["name"], meta.get("namespace"), status
    )


async def _reconcile(memo: Any, body: Mapping[str, Any]) -> None:
    try:
        inference_set = parse_inferenceset(body)
        with memo.metrics.reconcile("InferenceSet"):
            await memo.inferencesets.reconcile(inference_set)
    except InvalidSpecError as exc:
        await _report_invalid(memo, body, exc)
        raise


async def reconcile_inferenceset(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Create, rewrite or delete member Workspaces towards the spec; write the status."""
    await _reconcile(memo, body)


async def resync_inferenceset(
    *, body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, logger: Any, **_: Any
) -> None:
    """Reconcile again whenever a member Workspace changes (a member became ready: the
    rolling update goes on), and every ``resync_seconds`` regardless."""
    namespace, name = body.metadata.namespace, body.metadata.name
    wakeups: dict[tuple[str | None, str | None], asyncio.Event] = memo.inferenceset_wakeups
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


async def member_changed(*, body: kopf.Body, memo: Any, **_: Any) -> None:
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
