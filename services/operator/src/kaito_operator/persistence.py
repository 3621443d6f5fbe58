"""Where kopf keeps the last handled state of each object: the operator's memory.

kopf compares an object's "essence" (spec, labels, annotations) with the essence it last
handled to tell creations and updates from no-ops. Its default keeps that essence in an
annotation, which costs a PATCH (and a watch event) after every handled change. All the
operator's change handlers run the same idempotent, level-based reconcile, so nothing
needs to survive a restart: a restarted operator sees every object as new and reconciles
it once, as it would resume it anyway.
"""

from __future__ import annotations

import kopf

__all__ = ["MemoryDiffBaseStorage"]


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The last handled essence of each object, by uid, in this process only."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def __len__(self) -> int:
        return len(self._essences)

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
