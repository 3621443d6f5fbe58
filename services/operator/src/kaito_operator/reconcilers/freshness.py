"""What the operator knows to be current, so that a status recompute reads no more than it must.

A status recompute of a Workspace or RAGEngine reads its workload and its pods. A watch
event that brings a child version the last recompute already read (above all the echo of
the operator's own apply) cannot change the result, so it asks for no new recompute.
Events that arrive while a recompute runs are checked once it has finished, against what
it read (:class:`ChildVersions`).

The owner itself is read from kopf's live view of it (a daemon's body, which kopf keeps
current with every watch event), unless the operator has since written or read a version
the view has not caught up with; then it is read from the API (:class:`OwnerViews`).
Resource versions are only compared for equality, as the API allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChildEvent",
    "ChildVersions",
    "OwnerKey",
    "OwnerViews",
    "SeenChildren",
    "seen_children",
]

#: (kind, namespace, name) of a Workspace or RAGEngine.
OwnerKey = tuple[str, str, str]
#: (kind, name) of a child -> the resourceVersion a recompute read.
SeenChildren = dict[tuple[str, str], str]


@dataclass(frozen=True)
class ChildEvent:
    """A watch event of a child: which object, at which version, and whether it is gone."""

    kind: str
    name: str
    resource_version: str
    deleted: bool

    @classmethod
    def of(cls, kind: str, obj: Mapping[str, Any], *, deleted: bool) -> ChildEvent:
        """The event of ``obj`` (a child of ``kind``) as the watch delivered it."""
        meta = obj.get("metadata") or {}
        return cls(kind, str(meta.get("name", "")), str(meta.get("resourceVersion", "")), deleted)

    def seen_by(self, seen: SeenChildren) -> bool:
        """Whether a recompute that read ``seen`` already reflects this event."""
        if self.deleted:
            return (self.kind, self.name) not in seen
        return seen.get((self.kind, self.name)) == self.resource_version


def seen_children(children: Iterable[tuple[str, Mapping[str, Any] | None]]) -> SeenChildren:
    """What a recompute read, from ``(kind, object or None)`` pairs (list items carry no
    ``kind``, so the caller names it)."""
    seen: SeenChildren = {}
    for kind, child in children:
        if child is not None:
            meta = child.get("metadata") or {}
            seen[(kind, str(meta.get("name", "")))] = str(meta.get("resourceVersion", ""))
    return seen


class ChildVersions:
    """Per owner: the child versions its last finished recompute read, and the child events
    that arrived while a recompute was running."""

    def __init__(self) -> None:
        self._seen: dict[OwnerKey, SeenChildren] = {}
        self._running: dict[OwnerKey, int] = {}
        self._deferred: dict[OwnerKey, list[ChildEvent]] = {}

    def needs_recompute(self, key: OwnerKey, event: ChildEvent) -> bool:
        """Whether ``event`` needs a recompute now (False also while one runs: the event is
        checked when it finishes)."""
        if self._running.get(key):
            self._deferred.setdefault(key, []).append(event)
            return False
        seen = self._seen.get(key)
        return seen is None or not event.seen_by(seen)

    def started(self, key: OwnerKey) -> None:
        """A recompute of ``key`` starts reading."""
        self._running[key] = self._running.get(key, 0) + 1
        self._seen.pop(key, None)

    def finished(self, key: OwnerKey, seen: SeenChildren | None) -> bool:
        """A recompute finished having read ``seen`` (None: it failed or the owner is gone);
        True when an event that arrived meanwhile still needs a recompute."""
        self._running[key] -= 1
        if self._running[key]:
            return False  # the last one to finish decides
        del self._running[key]
        deferred = self._deferred.pop(key, [])
        if seen is None:
            return bool(deferred)
        self._seen[key] = seen
        return not all(event.seen_by(seen) for event in deferred)


class OwnerViews:
    """kopf's live views of owners, and the owner version the operator last wrote or read."""

    def __init__(self) -> None:
        self._views: dict[OwnerKey, Mapping[str, Any]] = {}
        self._known: dict[OwnerKey, str] = {}

    def track(self, key: OwnerKey, view: Mapping[str, Any]) -> None:
        """Use ``view`` (kept current by kopf) for ``key`` from now on."""
        self._views[key] = view
        self._known.pop(key, None)

    def untrack(self, key: OwnerKey, view: Mapping[str, Any]) -> None:
        """Stop using ``view`` (a recreated owner may have a new view already)."""
        if self._views.get(key) is view:
            del self._views[key]
            self._known.pop(key, None)

    def current(self, key: OwnerKey) -> dict[str, Any] | None:
        """The owner as the view shows it, or None when there is no view or the operator
        wrote or read a version since that the view does not show (read the API then)."""
        view = self._views.get(key)
        if view is None:
            return None
        known = self._known.get(key)
        if known is not None and known != view["metadata"].get("resourceVersion"):
            return None
        return dict(view)

    def distrust(self, key: OwnerKey) -> None:
        """Read ``key`` from the API next time (a periodic resync does, to be level-based)."""
        self._known[key] = ""  # no stored object has an empty resourceVersion

    def saw(self, key: OwnerKey, obj: Mapping[str, Any] | None) -> None:
        """The operator read or wrote ``obj`` (None: it is gone)."""
        if obj is None:
            self._known.pop(key, None)
        else:
            self._known[key] = str(obj["metadata"].get("resourceVersion", ""))
