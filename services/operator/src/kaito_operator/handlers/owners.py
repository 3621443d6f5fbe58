"""kopf handlers of the owner kinds (Workspace, RAGEngine, InferenceSet): one line each into
the kind's generic controller (:class:`kaito_operator.controller.Controller`), picked by
``param`` (given at registration: ``workspace``, ``ragengine`` or ``inferenceset``).

Per kind: reconcile on resume, create and update; a delete handler; kopf indexes of the
owners and of their children (an informer cache the status is computed from); an event
handler per child resource that recomputes the owner's status; and one on the owners that
forgets a deleted one. The resync (level-based: drift is put back every
``resync_seconds``) is one loop per kind over the owners index
(:meth:`~kaito_operator.controller.Controller.resync_forever`, started at startup), not a
kopf timer per owner: kopf adds a finalizer to every object with a timer, and a new
object's handlers then wait for the finalizer's PATCH and its watch event. An owner gets
the finalizer only where its deletion has something to release outside its namespace
(Workspaces whose nodes Karpenter or gpu-provisioner provision).
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
    "needs_finalizer",
    "nodeclaim_changed",
    "owner_event",
    "owners_index",
    "reconcile",
    "register",
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
    """Whether deletion waits for the delete handler when nodes are provisioned (nodes
    to release; see :func:`needs_finalizer`)."""


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


def needs_finalizer(param: str, settings: OperatorSettings) -> bool:
    """Whether an owner's deletion must wait for the operator: only a Workspace whose
    NodePool or NodeClaims (cluster-scoped, no owner reference) are to be deleted."""
    return OWNERS[param].finalizer and settings.node_provisioner != "byo"


async def owner_event(
    *, event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, param: Any = None, **_: Any
) -> None:
    """An owner is gone (also where no finalizer made the delete handler run): forget it."""
    if event.get("type") == "DELETED":
        key = (str(body.metadata.namespace), str(body.metadata.name))
        memo.controllers[param].forget(key)


async def delete(*, body: kopf.Body, memo: OperatorMemo, param: Any = None, **_: Any) -> None:
    """Release what was provisioned outside the namespace; children go by garbage collection."""
    await memo.controllers[param].delete(body)


def _slim(body: kopf.Body) -> dict[str, Any]:
    """The body as indexed: without ``metadata.managedFields``, which nothing here reads
    and which is often the largest part of a server-side-applied object."""
    obj = dict(body)
    obj["metadata"] = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return obj


async def index_owner(*, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Index an owner under ``(namespace, name)``."""
    return {(str(body.metadata.namespace), str(body.metadata.name)): _slim(body)}


async def index_child(
    *, body: kopf.Body, resource: kopf.Resource, param: Any = None, **_: Any
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Index a child (workload, pod, member Workspace) under its owner's ``(namespace, name)``."""
    owner = str(body.metadata.labels[OWNERS[param].label])
    return {(str(body.metadata.namespace), owner): (resource.kind or "", _slim(body))}


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
    # Without a finalizer the handler runs only where the operator sees the owner being
    # deleted (another finalizer holds it); owner_event forgets it in any case.
    optional = not needs_finalizer(param, settings)
    kopf.on.delete(*resource, param=param, optional=optional, registry=registry)(delete)
    kopf.on.event(*resource, id=f"{param}_gone", param=param, registry=registry)(owner_event)
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
