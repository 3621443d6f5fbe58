"""What each owner kind brings to the generic controller (:mod:`kaito_operator.controller`):
the :class:`Kind` protocol its reconciler implements, and what a reconcile returns."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kaito_operator.reconcilers.observe import Outcome
from kaito_sdk.api import KubeObject
from kaito_sdk.api.base import KubeModel

__all__ = ["Children", "Kind", "Reconciled"]

OwnerT = TypeVar("OwnerT", bound=KubeObject)
#: An owner's children as ``(kind, object)`` pairs (workloads and pods).
Children = list[tuple[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile decided and wrote."""

    target: int | None = None
    """The node count decided (a Workspace keeps it in ``status.targetNodeCount``)."""
    workload: tuple[str, Mapping[str, Any]] | None = None
    """``(kind, object)`` of the workload as the API server answered its write (None:
    not written)."""


class Kind(Protocol[OwnerT]):
    """What one owner kind brings to the generic controller (its reconciler)."""

    @property
    def model(self) -> type[OwnerT]:
        """The SDK model of the owner."""
        ...

    @property
    def summary(self) -> str:
        """The summary condition type (``WorkspaceSucceeded``): where an invalid spec shows."""
        ...

    @property
    def reconcile_on_child_change(self) -> bool:
        """Whether a child's change reconciles the owner again (an InferenceSet's member
        became ready: the rolling update goes on) rather than only recompute its status."""
        ...

    async def reconcile(self, owner: OwnerT) -> Reconciled:
        """Apply the children ``owner`` asks for."""
        ...

    async def observe(
        self, owner: OwnerT, children: Children, outcome: Outcome, *, now: datetime.datetime
    ) -> KubeModel:
        """The owner's typed status (reads what else it needs, such as nodes)."""
        ...

    async def cleanup(self, owner: OwnerT) -> None:
        """Release what was made for ``owner`` outside its namespace (its children go with
        it by garbage collection)."""
        ...
