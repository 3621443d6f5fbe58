"""kopf handlers for Workspaces: parse, reconcile, report status. Nothing else lives here."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from kaito_operator.errors import InvalidSpecError, NotReadyError
from kaito_operator.kube import KubeApiError
from kaito_operator.settings import OperatorSettings
from kaito_sdk import labels
from kaito_sdk.api import Workspace

__all__ = [
    "WORKSPACE_CHILDREN",
    "delete_workspace",
    "index_workspace_child",
    "nodeclaim_changed",
    "reconcile_workspace",
    "register",
    "resync_workspace",
    "workspace_child_changed",
]

WORKSPACES = ("kaito.sh", "v1beta1", "workspaces")
#: The kopf index of StatefulSets, Jobs and pods by Workspace (the status reads it).
WORKSPACE_CHILDREN = "workspace_children"
_OWNED = {labels.LABEL_WORKSPACE: kopf.PRESENT}
_CHILDREN = (("apps", "v1", "statefulsets"), ("batch", "v1", "jobs"), ("", "v1", "pods"))


def parse_workspace(body: Mapping[str, Any]) -> Workspace:
    """The typed Workspace; a body that does not parse is a permanent error."""
    try:
        return Workspace.from_manifest(dict(body))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise InvalidSpecError(field, error["msg"]) from None


async def reconcile_workspace(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Bring the Workspace's children to the desired state, then recompute its status."""
    try:
        ws = parse_workspace(body)
    except InvalidSpecError as exc:
        await memo.observer.report_invalid(body, exc)
        raise
    done = None
    namespace, name = body.metadata.namespace, body.metadata.name
    try:
        with memo.metrics.reconcile("Workspace"):
            done = await memo.workspaces.reconcile(ws)
        memo.observer.report_waiting("Workspace", namespace, name, None)
        memo.observer.report_apply_failed("Workspace", namespace, name, None)
    except KubeApiError as exc:  # kopf retries; the status says why meanwhile
        memo.observer.report_apply_failed("Workspace", namespace, name, str(exc))
        raise
    except NotReadyError as exc:
        memo.observer.report_waiting("Workspace", namespace, name, str(exc))
        raise
    except InvalidSpecError as exc:
        await memo.observer.report_invalid(body, exc)
        raise
    finally:
        # Coalesces with the recomputes the new children's events ask for.
        memo.observer.schedule(
            "Workspace",
            namespace,
            name,
            target=done.target if done else None,
            written=done.workload if done else None,
        )


async def delete_workspace(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Release the nodes provisioned for the Workspace (children go by garbage collection)."""
    await memo.workspaces.cleanup(parse_workspace(body))


async def resync_workspace(
    *, body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, logger: Any, **_: Any
) -> None:
    """Level-based resync: re-apply the desired children (catching ConfigMap edits that
    roll the pods) and recompute the status, every ``resync_seconds``. The daemon's body
    is also the status recompute's view of the Workspace while it lives."""
    namespace, name = body.metadata.namespace, body.metadata.name
    key = ("Workspace", namespace, name)
    memo.observer.owners.track(key, body)  # kopf keeps a daemon's body current
    try:
        while not stopped:
            await asyncio.sleep(memo.settings.resync_seconds)
            raw = await memo.kube.get("kaito.sh/v1beta1", "Workspace", name, namespace)
            memo.observer.owners.saw(key, raw)
            if raw is None or raw["metadata"].get("deletionTimestamp"):
                return
            target = None
            try:
                target = (await memo.workspaces.reconcile(parse_workspace(raw))).target
                memo.observer.report_apply_failed("Workspace", namespace, name, None)
            except KubeApiError as exc:
                memo.observer.report_apply_failed("Workspace", namespace, name, str(exc))
                logger.warning("resync of %s/%s refused: %s", namespace, name, exc)
            except (kopf.PermanentError, kopf.TemporaryError) as exc:
                logger.info("resync of %s/%s postponed: %s", namespace, name, exc)
            await memo.observer.sync_workspace(namespace, name, target=target)
    finally:
        memo.observer.owners.untrack(key, body)


async def index_workspace_child(
    *, body: kopf.Body, resource: kopf.Resource, **_: Any
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Index a StatefulSet, Job or pod under its Workspace: ``(namespace, name)``."""
    owner = (str(body.metadata.namespace), str(body.metadata.labels[labels.LABEL_WORKSPACE]))
    return {owner: (resource.kind or "", dict(body))}


async def workspace_child_changed(
    *, body: kopf.Body, resource: kopf.Resource, type: str | None, memo: Any, **_: Any
) -> None:
    """A StatefulSet, Job or pod of a Workspace changed: recompute the owner's status
    (unless the last recompute already read this version of the child)."""
    namespace = body.metadata.namespace
    name = body.metadata.labels.get(labels.LABEL_WORKSPACE)
    if namespace and name:
        memo.observer.child_changed(
            "Workspace", namespace, name, (resource.kind or "", body), deleted=type == "DELETED"
        )


async def nodeclaim_changed(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A NodeClaim of a Workspace changed: recompute the owner's status."""
    owner = body.metadata.labels
    memo.observer.schedule(
        "Workspace", owner[labels.LABEL_WORKSPACE_NAMESPACE], owner[labels.LABEL_WORKSPACE]
    )


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the Workspace controller's handlers."""
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*WORKSPACES, registry=registry)(reconcile_workspace)
    kopf.on.delete(*WORKSPACES, registry=registry)(delete_workspace)
    kopf.daemon(*WORKSPACES, registry=registry, cancellation_timeout=1.0)(resync_workspace)
    for resource in _CHILDREN:
        kopf.index(*resource, labels=_OWNED, id=WORKSPACE_CHILDREN, registry=registry)(
            index_workspace_child
        )
        kopf.on.event(*resource, labels=_OWNED, registry=registry)(workspace_child_changed)
    if settings.node_provisioner == "gpu-provisioner":
        claim_labels = {
            labels.LABEL_WORKSPACE: kopf.PRESENT,
            labels.LABEL_WORKSPACE_NAMESPACE: kopf.PRESENT,
        }
        kopf.on.event("karpenter.sh", "v1", "nodeclaims", labels=claim_labels, registry=registry)(
            nodeclaim_changed
        )
