"""kopf handlers of the owner kinds (Workspace, RAGEngine, InferenceSet): one line each into
the kind's generic controller (:class:`kaito_operator.controller.Controller`), picked by
``param`` (given at registration: ``workspace``, ``ragengine`` or ``inferenceset``).

Per kind: reconcile on resume, create and update; a timer that reconciles again every
``resync_seconds`` (level-based: drift is put back); a delete handler; kopf indexes of the
owners and of their children (an informer cache the status is computed from); and an
event handler per child resource that recomputes the owner's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from kaito_operator.memo import OperatorMemo
from kaito_operator.settings import OperatorSettings
from kaito_sdk import labels

__all__ = [
    "OWNERS",
    "OwnerKind",
    "child_changed",
    "children_index",
    "delete",
    "index_child",
    "index_owner",
    "nodeclaim_changed",
    "owners_index",
    "reconcile",
    "register",
    "resync",
]

_STATEFULSETS = ("apps", "v1", "statefulsets")
_JOBS = ("batch", "v1", "jobs")
_DEPLOYMENTS = ("apps", "v1", "deployments")
_PODS = ("", "v1", "pods")


@dataclass(frozen=True)
class OwnerKind:
    """What kopf watches for one owner kind."""

    resource: tuple[str, str, str]
    """(group, version, plural) of the owner."""
    label: str
    """The label every child carries, naming its owner."""
    children: tuple[tuple[str, str, str], ...]
    """The child resources its status is computed from."""
    finalizer: bool
    """Whether deletion waits for the delete handler (nodes to release)."""


#: The owner kinds by controller name (``OperatorSettings.controllers``).
OWNERS = {
    "workspace": OwnerKind(
        ("kaito.sh", "v1beta1", "workspaces"),
        labels.LABEL_WORKSPACE,
        (_STATEFULSETS, _JOBS, _PODS),
        finalizer=True,
    ),
    "ragengine": OwnerKind(
        ("kaito.sh", "v1beta1", "ragengines"),
        labels.LABEL_RAGENGINE,
        (_DEPLOYMENTS, _PODS),
        finalizer=False,
    ),
    # Part of the workspace controller: member Workspaces go with the set (owner reference).
    "inferenceset": OwnerKind(
        ("kaito.sh", "v1beta1", "inferencesets"),
        labels.LABEL_INFERENCESET_CREATED_BY,
        (("kaito.sh", "v1beta1", "workspaces"),),
        finalizer=False,
    ),
}


def children_index(param: str) -> str:
    """The kopf index id of a kind's children (kopf passes it to handlers by this name)."""
    return f"{param}_children"


def owners_index(param: str) -> str:
    """The kopf index id of a kind's owners."""
    return f"{param}_owners"


async def reconcile(
    *, body: kopf.Body, memo: OperatorMemo, param: Any = None, **kwargs: Any
) -> None:
    """Parse, reconcile, recompute the status."""
    await memo.controllers[param].reconcile(body, kwargs[children_index(param)])


async def resync(*, body: kopf.Body, memo: OperatorMemo, param: Any = None, **kwargs: Any) -> None:
    """Reconcile again (puts back what another field manager changed) and recompute."""
    await memo.controllers[param].resync(body, kwargs[children_index(param)])


async def delete(*, body: kopf.Body, memo: OperatorMemo, param: Any = None, **_: Any) -> None:
    """Release what was provisioned outside the namespace; children go by garbage collection."""
    await memo.controllers[param].delete(body)


async def index_owner(*, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Index an owner under ``(namespace, name)``."""
    return {(str(body.metadata.namespace), str(body.metadata.name)): dict(body)}


async def index_child(
    *, body: kopf.Body, resource: kopf.Resource, param: Any = None, **_: Any
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Index a child (workload, pod, member Workspace) under its owner's ``(namespace, name)``."""
    owner = str(body.metadata.labels[OWNERS[param].label])
    return {(str(body.metadata.namespace), owner): (resource.kind or "", dict(body))}


def _owner_key(meta: Mapping[str, Any], label: str, namespace_label: str | None) -> tuple[str, str]:
    owner_labels = meta.get("labels") or {}
    namespace = owner_labels[namespace_label] if namespace_label else meta.get("namespace")
    return str(namespace), str(owner_labels[label])


async def child_changed(
    *, body: kopf.Body, memo: OperatorMemo, param: Any = None, **kwargs: Any
) -> None:
    """A child changed: recompute its owner's status (an InferenceSet: reconcile it)."""
    key = _owner_key(body.metadata, OWNERS[param].label, None)
    await memo.controllers[param].child_changed(
        key, kwargs[owners_index(param)], kwargs[children_index(param)]
    )


async def nodeclaim_changed(*, body: kopf.Body, memo: OperatorMemo, **kwargs: Any) -> None:
    """A NodeClaim of a Workspace (cluster-scoped, labelled with its owner) changed."""
    key = _owner_key(body.metadata, labels.LABEL_WORKSPACE, labels.LABEL_WORKSPACE_NAMESPACE)
    await memo.controllers["workspace"].child_changed(
        key, kwargs[owners_index("workspace")], kwargs[children_index("workspace")]
    )


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings, param: str) -> None:
    """Register the handlers of one owner kind (``param``: a key of :data:`OWNERS`)."""
    kind = OWNERS[param]
    resource = kind.resource
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*resource, param=param, registry=registry)(reconcile)
    # Without a finalizer the handler still runs when the operator sees the deletion.
    kopf.on.delete(*resource, param=param, optional=not kind.finalizer, registry=registry)(delete)
    interval = settings.resync_seconds
    kopf.timer(
        *resource, interval=interval, initial_delay=interval, param=param, registry=registry
    )(resync)
    kopf.index(*resource, id=owners_index(param), registry=registry)(index_owner)
    owned = {kind.label: kopf.PRESENT}
    for child in kind.children:
        kopf.index(*child, labels=owned, id=children_index(param), param=param, registry=registry)(
            index_child
        )
        kopf.on.event(*child, labels=owned, id=f"{param}_child", param=param, registry=registry)(
            child_changed
        )
    if param == "workspace" and settings.node_provisioner == "gpu-provisioner":
        claim_labels = {
            labels.LABEL_WORKSPACE: kopf.PRESENT,
            labels.LABEL_WORKSPACE_NAMESPACE: kopf.PRESENT,
        }
        kopf.on.event("karpenter.sh", "v1", "nodeclaims", labels=claim_labels, registry=registry)(
            nodeclaim_changed
        )
