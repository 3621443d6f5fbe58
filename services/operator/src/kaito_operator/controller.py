"""One generic controller per owner kind: parse, reconcile, observe, patch the status.

A :class:`Controller` drives Workspaces, RAGEngines or InferenceSets through the kind's
:class:`~kaito_operator.reconcilers.kind.Kind`
(its reconciler): parse the body into the SDK model, reconcile (pure builders, applied
through :mod:`kaito_operator.kube`), then compute the status with the kind's pure observe
function from the children kopf's indexes hold, and patch it only when it changed. The
kopf handlers (:mod:`kaito_operator.handlers.owners`) are one line each.

What the controller keeps in memory, each for a need the cluster cannot answer:

* the outcome of each owner's last reconcile (refused by the API server, invalid, waiting):
  no child shows it, and a status recomputed on a child event must keep saying it;
* the status it last wrote, with the owner version it was computed from: until the watch
  delivers that write, a recompute compares against it (no second identical write) and
  keeps its transition times;
* the workload a reconcile just wrote, until the watch delivers its generation: a pod
  event that arrives first must not be judged against an older workload (or none);
* what the last successful reconcile applied (the owner's generation, the workload's
  kind, name and generation): a resync (:meth:`Controller.resync_forever`, one loop over
  all owners of the kind) that finds both unchanged in the cluster skips
  the apply (an edit by anyone bumps the workload's generation and is put back), except
  every ``full_resync_every``-th one, which applies everything again (what is not
  watched, such as Services and ConfigMaps read, converges too);
* per owner, one lock for reconciles and one for recomputes, so that the change handler,
  the resync timer and the children's events (several watches at once) read and write
  one after the other; and whether a reconcile or a recompute asked for by a child's
  change is already queued (however many children change meanwhile, it runs once more,
  reading kopf's indexes, which are current, when its turn comes).

All of it is dropped when the owner is deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import pydantic

from kaito_operator.errors import InvalidSpecError, NotReadyError
from kaito_operator.kube import KubeApiError, KubeClient
from kaito_operator.metrics import OperatorMetrics
from kaito_operator.reconcilers.kind import Children, Kind
from kaito_operator.reconcilers.observe import Outcome
from kaito_operator.status import condition, merge_conditions
from kaito_sdk.api import Condition, ConditionReason, KubeObject
from kaito_sdk.api.base import KubeModel

__all__ = ["ChildIndex", "Controller", "OwnerIndex", "parse_owner"]

log = logging.getLogger(__name__)

OwnerT = TypeVar("OwnerT", bound=KubeObject)
#: A kopf index of children by owner: ``(namespace, owner name)`` -> ``(kind, object)`` values.
ChildIndex = Mapping[tuple[str, str], Iterable[tuple[str, Mapping[str, Any]]]]
#: A kopf index of owners: ``(namespace, name)`` -> the owner's body.
OwnerIndex = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]
_Key = tuple[str, str]


def parse_owner(model: type[OwnerT], body: Mapping[str, Any]) -> OwnerT:
    """The typed owner; a body that does not parse is an :class:`InvalidSpecError`."""
    try:
        return model.from_manifest(dict(body))
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise InvalidSpecError(field, error["msg"]) from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key(body: Mapping[str, Any]) -> _Key:
    meta = body["metadata"]
    return str(meta.get("namespace")), str(meta["name"])


def _generation(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"].get("generation") or 0)


def _dump(status: KubeModel | None) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True) if status else {}


class Controller(Generic[OwnerT]):
    """Reconciles owners of one kind and keeps their status current."""

    def __init__(
        self,
        kind: Kind[OwnerT],
        kube: KubeClient,
        metrics: OperatorMetrics,
        *,
        full_resync_every: int = 10,
    ) -> None:
        self.kind = kind
        self.full_resync_every = full_resync_every
        self.kube = kube
        self.metrics = metrics
        self.name = kind.model.api_info.kind
        self.api_version = f"{kind.model.api_info.group}/{kind.model.api_info.version}"
        self._outcomes: dict[_Key, Outcome] = {}
        self._written: dict[_Key, tuple[str, KubeModel]] = {}
        self._arriving: dict[_Key, tuple[str, Mapping[str, Any]]] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._reconciling: dict[_Key, asyncio.Lock] = {}
        self._queued: set[_Key] = set()
        self._observe_queued: set[_Key] = set()
        self._applied: dict[_Key, tuple[int, str, str, int]] = {}
        self._skipped: dict[_Key, int] = {}
        self._resyncing: dict[_Key, asyncio.Task[None]] = {}

    async def reconcile(self, body: Mapping[str, Any], children: ChildIndex) -> None:
        """Parse, reconcile, then recompute the status; the reconcile's error is re-raised
        for kopf to retry (temporary) or give up (permanent) after the status says why."""
        async with self._reconciling.setdefault(_key(body), asyncio.Lock()):
            await self._reconcile(body, children)

    async def _reconcile(self, body: Mapping[str, Any], children: ChildIndex) -> None:
        if body["metadata"].get("deletionTimestamp"):
            return  # going away: nothing more is written for it
        key = _key(body)
        generation = body["metadata"].get("generation")
        try:
            owner = parse_owner(self.kind.model, body)
        except InvalidSpecError as exc:
            await self._report_unparsable(body, exc)
            raise
        outcome = self._outcomes.get(key, Outcome())
        self._applied.pop(key, None)
        self._skipped.pop(key, None)
        try:
            with self.metrics.reconcile(self.name):
                done = await self.kind.reconcile(owner)
            outcome = Outcome(generation, target=done.target)
            if done.workload is not None:
                self._arriving[key] = done.workload
                kind, obj = done.workload
                applied = (_generation(body), kind, obj["metadata"]["name"], _generation(obj))
                self._applied[key] = applied
        except KubeApiError as exc:
            outcome = Outcome(generation, refused=str(exc))
            raise
        except NotReadyError as exc:
            outcome = Outcome(generation, waiting=str(exc))
            raise
        except InvalidSpecError as exc:
            outcome = Outcome(generation, invalid=str(exc))
            raise
        finally:
            self._outcomes[key] = outcome
            await self._observe_safely(owner, children)

    async def resync(self, body: Mapping[str, Any], children: ChildIndex) -> None:
        """Level-based resync: reconcile and recompute; errors are logged (the status shows
        them), the next change or resync tries again. When the owner and its workload are
        as the last reconcile left them, only the status is recomputed (see the module)."""
        key = _key(body)
        if self._unchanged(key, body, children):
            self._skipped[key] = self._skipped.get(key, 0) + 1
            try:
                owner = parse_owner(self.kind.model, body)
            except InvalidSpecError:
                pass  # unreachable in practice: it parsed when it was applied
            else:
                await self._observe_safely(owner, children)
                return
        try:
            await self.reconcile(body, children)
        except (KubeApiError, InvalidSpecError, NotReadyError) as exc:
            log.info("resync of %s %s/%s: %s", self.name, *_key(body), exc)

    async def resync_forever(
        self, owners: OwnerIndex, children: ChildIndex, interval: float
    ) -> None:
        """Resync every owner once per ``interval`` seconds, spread evenly over it (one
        loop for all owners, instead of a timer per owner that fire in bursts). An owner
        is first resynced once a change handler has reconciled it or it has been in the
        index for an ``interval`` (a handler's retry may be due later); one whose last
        resync still runs is passed over this round."""
        loop = asyncio.get_running_loop()
        first_seen: dict[_Key, float] = {}
        while True:
            now = loop.time()
            listed = list(owners)
            first_seen = {k: first_seen.get(k, now) for k in listed}
            keys = [k for k in listed if k in self._outcomes or now - first_seen[k] >= interval]
            if not keys:
                await asyncio.sleep(interval)
                continue
            start, step = now, interval / len(keys)
            for index, key in enumerate(keys):
                await asyncio.sleep(max(0.0, start + index * step - loop.time()))
                bodies = list(owners.get(key, ()))
                running = self._resyncing.get(key)
                if not bodies or (running and not running.done()):
                    continue
                task = asyncio.create_task(self._resync_logged(bodies[0], children))
                self._resyncing[key] = task
            await asyncio.sleep(max(0.0, start + interval - loop.time()))

    async def _resync_logged(self, body: Mapping[str, Any], children: ChildIndex) -> None:
        try:
            await self.resync(body, children)
        except Exception:  # the next round tries again
            log.exception("resync of %s %s/%s failed", self.name, *_key(body))

    def _unchanged(self, key: _Key, body: Mapping[str, Any], children: ChildIndex) -> bool:
        """Whether the owner and its workload are at the generations the last successful
        reconcile applied, and this is not the resync due to apply everything anyway."""
        applied = self._applied.get(key)
        if applied is None or body["metadata"].get("deletionTimestamp"):
            return False
        if self._skipped.get(key, 0) + 1 >= self.full_resync_every:
            return False
        generation, kind, name, workload_generation = applied
        if _generation(body) != generation:
            return False
        found = [
            obj for k, obj in children.get(key, ()) if k == kind and obj["metadata"]["name"] == name
        ]
        return len(found) == 1 and _generation(found[0]) == workload_generation

    async def child_changed(
        self, owner_key: _Key, owners: OwnerIndex, children: ChildIndex
    ) -> None:
        """A child of ``owner_key`` changed: recompute the owner's status (or, where the
        kind asks for it, reconcile it again once the running reconcile is done)."""
        if self.kind.reconcile_on_child_change:
            if owner_key in self._queued:
                return  # the queued reconcile reads this change too
            self._queued.add(owner_key)
            try:
                async with self._reconciling.setdefault(owner_key, asyncio.Lock()):
                    pass  # wait for the running reconcile
            finally:
                self._queued.discard(owner_key)
            # Read from the API: the owner index may not show a deletion yet, and a
            # reconcile must not write children of an owner that is going away.
            current = await self.kube.get(self.api_version, self.name, owner_key[1], owner_key[0])
            if current is not None and not current["metadata"].get("deletionTimestamp"):
                await self.resync(current, children)
            return
        if owner_key in self._observe_queued:
            return  # the queued recompute reads this change too
        self._observe_queued.add(owner_key)
        try:
            async with self._locks.setdefault(owner_key, asyncio.Lock()):
                pass  # wait for the running recompute
        finally:
            self._observe_queued.discard(owner_key)
        bodies = list(owners.get(owner_key, ()))
        if not bodies:
            return  # not created through this operator's watch yet, or gone
        try:
            owner = parse_owner(self.kind.model, bodies[0])
        except InvalidSpecError:
            return  # its reconcile reported why
        await self._observe_safely(owner, children)

    async def delete(self, body: Mapping[str, Any]) -> None:
        """The owner is being deleted: release what lives outside its namespace, then drop
        what is kept about it."""
        key = _key(body)
        try:
            owner = parse_owner(self.kind.model, body)
        except InvalidSpecError as exc:  # never reconciled: nothing was made for it
            log.warning("%s %s/%s deleted without cleanup: %s", self.name, *key, exc)
        else:
            await self.kind.cleanup(owner)
        self.forget(key)

    def forget(self, key: _Key) -> None:
        """Drop what is kept about a deleted owner (its deletion was seen)."""
        self._outcomes.pop(key, None)
        self._written.pop(key, None)
        self._arriving.pop(key, None)
        self._locks.pop(key, None)
        self._reconciling.pop(key, None)
        self._queued.discard(key)
        self._observe_queued.discard(key)
        self._applied.pop(key, None)
        self._skipped.pop(key, None)
        self._resyncing.pop(key, None)
        self.metrics.set_state(self.name, *key, None)

    def children_of(self, key: _Key, index: ChildIndex) -> Children:
        """The owner's children from the index, with the workload a reconcile just wrote in
        place of an older generation of it (or none) that the index still holds."""
        children: Children = [(kind, obj) for kind, obj in index.get(key, ())]
        arriving = self._arriving.get(key)
        if arriving is None:
            return children
        kind, written = arriving
        name = written["metadata"]["name"]
        same = [
            i for i, (k, obj) in enumerate(children) if (k, obj["metadata"]["name"]) == (kind, name)
        ]
        if same and _generation(children[same[0]][1]) >= _generation(written):
            # Delivered (or something newer): the index is current from here on. Watch
            # events may be merged, so the very version written need not show up.
            del self._arriving[key]
            return children
        return [c for i, c in enumerate(children) if i not in same] + [arriving]

    async def _observe_safely(self, owner: OwnerT, children: ChildIndex) -> None:
        try:
            await self.observe(owner, children)
        except Exception:  # the next event or resync recomputes it
            meta = owner.metadata
            log.exception("status of %s %s/%s not recomputed", self.name, meta.namespace, meta.name)

    async def observe(self, owner: OwnerT, children: ChildIndex) -> None:
        """Recompute the owner's status and patch it if it changed."""
        key = (str(owner.metadata.namespace), str(owner.metadata.name))
        if owner.metadata.deletion_timestamp is not None:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            version = owner.metadata.resource_version or ""
            written = self._written.get(key)
            if written is not None and written[0] == version:
                # The watch has not delivered the last write yet: it is the current status.
                owner = owner.model_copy(update={"status": written[1]})
            outcome = self._outcomes.get(key, Outcome())
            status = await self.kind.observe(
                owner, self.children_of(key, children), outcome, now=_now()
            )
            self.metrics.set_state(self.name, *key, self._state(status))
            new = _dump(status)
            if new == _dump(getattr(owner, "status", None)):
                return
            await self.kube.patch_status(self.api_version, self.name, key[1], key[0], new)
            self._written[key] = (version, status)

    def _state(self, status: KubeModel) -> str:
        state = getattr(status, "state", None)
        if state is not None:
            return str(state)
        conditions: list[Condition] = getattr(status, "conditions", None) or []
        summary = {c.type: c.status for c in conditions}.get(self.kind.summary)
        return "Ready" if summary == "True" else "NotReady"

    async def _report_unparsable(self, body: Mapping[str, Any], error: InvalidSpecError) -> None:
        """The summary condition False (``InvalidSpec``) of an owner that does not parse."""
        meta = body["metadata"]
        stored = (body.get("status") or {}).get("conditions") or []
        try:
            old = [Condition.model_validate(c) for c in stored]
        except pydantic.ValidationError:
            old = []
        invalid = condition(
            self.kind.summary,
            False,
            ConditionReason.INVALID_SPEC,
            str(error),
            generation=meta.get("generation"),
            now=_now(),
        )
        conditions = [_dump(c) for c in merge_conditions(old, [invalid])]
        await self.kube.patch_status(
            self.api_version,
            self.name,
            meta["name"],
            meta.get("namespace"),
            {"conditions": conditions},
        )
