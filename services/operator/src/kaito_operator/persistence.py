"""Where kopf keeps the last handled state of each object: the operator's memory.

kopf compares an object's "essence" (spec, labels, annotations) with the essence it last
handled to tell creations and updates from no-ops. Its default keeps that essence in an
annotation, which costs a PATCH (and a watch event) after every handled change. All the
operator's change handlers run the same idempotent, level-based reconcile, so nothing
needs to survive a restart: a restarted operator sees every object as new and reconciles
it once, as it would resume it anyway.

kopf builds an essence for every watch event of every watched kind, deep-copying the whole
object, though only the kinds with change handlers or daemons use it: the operator's own
API group. Other objects (StatefulSets, pods, Jobs, watched for the status) get an empty
essence.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import kopf

__all__ = ["MemoryDiffBaseStorage"]


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The last handled essence of each object, by uid, in this process only (objects
    outside ``groups``, which have no change handlers, get an empty essence)."""

    def __init__(self, groups: Collection[str]) -> None:
        super().__init__()
        self.groups = frozenset(groups)
        self._essences: dict[str, kopf.BodyEssence] = {}

    def __len__(self) -> int:
        return len(self._essences)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        """kopf's essence for objects in ``groups``; an empty one for the others."""
        if str(body.get("apiVersion", "")).partition("/")[0] not in self.groups:
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """The essence last handled for this object, if any (since this process started)."""
        return self._essences.get(str(body.metadata.uid))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Remember ``essence`` as handled; an object being deleted is forgotten instead
        (its deletion is driven by the finalizer, not by comparing essences)."""
        uid = str(body.metadata.uid)
        if body.metadata.deletion_timestamp:
            self._essences.pop(uid, None)
        else:
            self._essences[uid] = essence
