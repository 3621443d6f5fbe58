"""kopf handlers for RAGEngines: parse, reconcile, report status."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pydantic

from kaito_operator.errors import InvalidSpecError
from kaito_operator.kube import KubeApiError
from kaito_sdk import labels
from kaito_sdk.api import RAGEngine

__all__ = [
    "RAGENGINE_CHILDREN",
    "index_ragengine_child",
    "ragengine_child_changed",
    "reconcile_ragengine",
    "register",
    "resync_ragengine",
]

RAGENGINES = ("kaito.sh", "v1beta1", "ragengines")
#: The kopf index of Deployments and pods by RAGEngine (the status reads it).
RAGENGINE_CHILDREN = "ragengine_children"
_OWNED = {labels.LABEL_RAGENGINE: kopf.PRESENT}


def parse_ragengine(body: kopf.Body) -> RAGEngine:
    """The typed RAGEngine; a body that does not parse is a permanent error."""
    try:
        return RAGEngine.from_manifest(dict(body))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise InvalidSpecError(field, error["msg"]) from None


async def reconcile_ragengine(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Apply the RAG service's Deployment and Service, then recompute the status."""
    try:
        engine = parse_ragengine(body)
    except InvalidSpecError as exc:
        await memo.observer.report_invalid(body, exc)
        raise
    written = None
    key = (str(body.metadata.namespace), str(body.metadata.name))
    try:
        with memo.metrics.reconcile("RAGEngine"):
            written = await memo.ragengines.reconcile(engine)
        memo.observer.report_apply_failed("RAGEngine", *key, None)
    except KubeApiError as exc:  # kopf retries; the status says why meanwhile
        memo.observer.report_apply_failed("RAGEngine", *key, str(exc))
        raise
    except InvalidSpecError as exc:
        await memo.observer.report_invalid(body, exc)
        raise
    finally:
        memo.observer.schedule(
            "RAGEngine", body.metadata.namespace, body.metadata.name, written=written
        )


async def resync_ragengine(
    *, body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Recompute the status periodically. The daemon's body (kopf keeps it current) is also
    the status recompute's view of the RAGEngine while it lives."""
    key = ("RAGEngine", body.metadata.namespace, body.metadata.name)
    memo.observer.owners.track(key, body)
    try:
        while not stopped:
            await asyncio.sleep(memo.settings.resync_seconds)
            memo.observer.owners.distrust(key)
            await memo.observer.sync_ragengine(body.metadata.namespace, body.metadata.name)
    finally:
        memo.observer.owners.untrack(key, body)


async def index_ragengine_child(
    *, body: kopf.Body, resource: kopf.Resource, **_: Any
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Index a Deployment or pod under its RAGEngine: ``(namespace, name)``."""
    owner = (str(body.metadata.namespace), str(body.metadata.labels[labels.LABEL_RAGENGINE]))
    return {owner: (resource.kind or "", dict(body))}


async def ragengine_child_changed(
    *, body: kopf.Body, resource: kopf.Resource, type: str | None, memo: Any, **_: Any
) -> None:
    """A Deployment or pod of a RAGEngine changed: recompute the owner's status
    (unless the last recompute already read this version of the child)."""
    namespace = body.metadata.namespace
    name = body.metadata.labels.get(labels.LABEL_RAGENGINE)
    if namespace and name:
        memo.observer.child_changed(
            "RAGEngine", namespace, name, (resource.kind or "", body), deleted=type == "DELETED"
        )


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the RAGEngine controller's handlers."""
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*RAGENGINES, registry=registry)(reconcile_ragengine)
    kopf.daemon(*RAGENGINES, registry=registry, cancellation_timeout=1.0)(resync_ragengine)
    for resource in (("apps", "v1", "deployments"), ("", "v1", "pods")):
        kopf.index(*resource, labels=_OWNED, id=RAGENGINE_CHILDREN, registry=registry)(
            index_ragengine_child
        )
        kopf.on.event(*resource, labels=_OWNED, registry=registry)(ragengine_child_changed)
