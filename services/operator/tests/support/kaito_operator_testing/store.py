"""The object store behind the API emulator: what each write does to the stored objects.

Every method that changes state must be called with :attr:`ObjectStore.lock` held; the
emulator's HTTP layer (:mod:`kaito_operator_testing.emulator`) does so. Writes return the
stored object itself, not a copy: the HTTP layer serialises it before anything else runs,
and the emulator's methods for tests copy it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import random
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jsonpatch
import jsonpointer
import kmock
from kmock._internal import aiobus

from kaito_operator_testing import semantics
from kaito_operator_testing.semantics import clone

__all__ = ["ObjectIndex", "ObjectKey", "ObjectStore", "api_error"]

#: (group, plural, namespace or None, name): versions share one storage.
ObjectKey = tuple[str, str, str | None, str]

_WATCH_LOG_SIZE = 20_000
_SYSTEM_FIELDS = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure the emulator answers with."""
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


class ObjectIndex(dict[ObjectKey, dict[str, Any]]):
    """The stored objects, also indexed by (group, plural) so a list reads only its kind."""

    def __init__(self) -> None:
        super().__init__()
        self.by_kind: dict[tuple[str, str], dict[ObjectKey, dict[str, Any]]] = {}

    def __setitem__(self, key: ObjectKey, value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        self.by_kind.setdefault((key[0], key[1]), {})[key] = value

    def pop(self, key: ObjectKey) -> dict[str, Any]:  # type: ignore[override]  # pop without a default: a missing key is a test bug
        """Remove and return an object."""
        self.by_kind[(key[0], key[1])].pop(key, None)
        return super().pop(key)


class ObjectStore:
    """Stored objects, the resource version counter and the watch event log."""

    def __init__(self, resources: kmock.ResourcesArray) -> None:
        self.resources = resources
        self.objects = ObjectIndex()
        self.applied: dict[tuple[ObjectKey, str, str], dict[str, Any]] = {}
        self.revision = 0
        self._random = random.Random()
        self.lock = asyncio.Lock()
        self.buses: dict[tuple[str, str], aiobus.Bus[Any]] = collections.defaultdict(aiobus.Bus)
        self.logs: dict[tuple[str, str], collections.deque[tuple[int, dict[str, Any]]]] = (
            collections.defaultdict(lambda: collections.deque(maxlen=_WATCH_LOG_SIZE))
        )

    def _namespaced(self, ref: kmock.resource) -> bool:
        return bool(self.resources[ref].namespaced)

    def _has_status(self, ref: kmock.resource) -> bool:
        return "status" in self.resources[ref].subresources

    def key(self, ref: kmock.resource, namespace: str | None, name: str) -> ObjectKey:
        return (str(ref.group), str(ref.plural), namespace if self._namespaced(ref) else None, name)

    def select(
        self,
        ref: kmock.resource,
        namespace: str | None,
        labels: list[semantics.LabelRequirement],
        fields: list[semantics.FieldRequirement],
    ) -> list[dict[str, Any]]:
        """Copies of the stored objects of ``ref`` matching namespace and selectors."""
        return [
            clone(obj)
            for (_, _, ns, _), obj in self.objects.by_kind.get(
                (str(ref.group), str(ref.plural)), {}
            ).items()
            if namespace is None or ns == namespace
            if semantics.matches_labels(obj, labels) and semantics.matches_fields(obj, fields)
        ]

    def initial_events(
        self,
        ref: kmock.resource,
        namespace: str | None,
        labels: list[semantics.LabelRequirement],
        fields: list[semantics.FieldRequirement],
        since: str,
    ) -> list[dict[str, Any]]:
        """What a new watch starts with: every object, or the events after ``since``."""
        if not since or since == "0":
            objs = self.select(ref, namespace, labels, fields)
            return [{"type": "ADDED", "object": obj} for obj in objs]
        log = self.logs[(str(ref.group), str(ref.plural))]
        revision = int(since) if since.isdigit() else 0
        if len(log) == log.maxlen and log[0][0] > revision + 1:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since}",
            }
            return [{"type": "ERROR", "object": gone}]
        return [event for rv, event in log if rv > revision]  # events are snapshots

    def stamp_new(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        meta = obj.setdefault("metadata", {})
        meta.update(
            uid=str(uuid.UUID(int=self._random.getrandbits(128), version=4)),
            resourceVersion=str(self.revision),
            generation=1,
            creationTimestamp=_now(),
        )
        meta.pop("deletionTimestamp", None)
        return obj

    async def _emit(self, ref: kmock.resource, kind: str, obj: Mapping[str, Any]) -> None:
        event = {"type": kind, "object": clone(obj)}
        group_plural = (str(ref.group), str(ref.plural))
        self.logs[group_plural].append((self.revision, event))
        await self.buses[group_plural].put(event)

    async def create(
        self, ref: kmock.resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if not meta.get("name"):
            raise api_error(422, "Invalid", "metadata.name: Required value: name is required")
        if self._namespaced(ref):
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise api_error(400, "BadRequest", "a namespaced object needs a namespace")
            if meta.get("namespace", namespace) != namespace:
                raise api_error(400, "BadRequest", "metadata.namespace does not match the request")
            if ("", "namespaces", None, namespace) not in self.objects:
                raise api_error(404, "NotFound", f'namespaces "{namespace}" not found')
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = self.key(ref, namespace, meta["name"])
        if key in self.objects:
            raise api_error(409, "AlreadyExists", f'{ref.plural} "{meta["name"]}" already exists')
        info = self.resources[ref]
        obj.setdefault("apiVersion", f"{ref.group}/{ref.version}" if ref.group else ref.version)
        obj.setdefault("kind", info.kind)
        if self._has_status(ref):
            obj.pop("status", None)
        self.objects[key] = self.stamp_new(obj)
        await self._emit(ref, "ADDED", obj)
        return obj

    def applied_part(self, body: Mapping[str, Any], subresource: str | None) -> dict[str, Any]:
        if subresource == "status":
            return {"status": clone(body.get("status", {}))}
        return clone({k: v for k, v in body.items() if k != "status"})  # one copy, not one per key

    async def patch(
        self,
        ref: kmock.resource,
        *,
        namespace: str | None,
        name: str,
        subresource: str | None,
        kind: str,
        body: Any,
        params: Mapping[str, str],
    ) -> dict[str, Any]:
        """Apply a ``json``/``merge``/``replace``/``apply`` write to an object or its status."""
        key = self.key(ref, namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise kmock.KubernetesObjectNotFoundError()
        if subresource not in (None, "status"):
            raise api_error(404, "NotFound", f"subresource {subresource!r} is not served")
        if subresource == "status" and not self._has_status(ref):
            raise api_error(404, "NotFound", f"{ref.plural} have no status subresource")
        new = self._patched(
            key=key, old=old, subresource=subresource, kind=kind, body=body, params=params
        )
        requested_rv = new.get("metadata", {}).get("resourceVersion")
        if kind in ("merge", "replace") and requested_rv not in (
            None,
            old["metadata"]["resourceVersion"],
        ):
            raise api_error(
                409, "Conflict", "the object has been modified; apply to the latest version"
            )
        new = self._isolate(ref, old, new, subresource)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old
        self.revision += 1
        new["metadata"]["resourceVersion"] = str(self.revision)
        if semantics.spec_changed(old, new):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self.objects[key] = new
        await self._emit(ref, "MODIFIED", new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            await self._remove(ref, key)
        return new

    def _isolate(
        self, ref: kmock.resource, old: dict[str, Any], new: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        """Keep a status write to status, and a main write off status and system metadata."""
        if subresource == "status":
            isolated = {**clone(old), "status": new.get("status")}
            if isolated["status"] is None:
                del isolated["status"]
            return isolated
        if self._has_status(ref):
            new.pop("status", None)
            if "status" in old:
                new["status"] = clone(old["status"])
        meta = new.setdefault("metadata", {})
        for field in _SYSTEM_FIELDS:
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        return new

    def _patched(
        self,
        *,
        key: ObjectKey,
        old: dict[str, Any],
        subresource: str | None,
        kind: str,
        body: Any,
        params: Mapping[str, str],
    ) -> dict[str, Any]:
        if kind == "json":
            try:
                result: dict[str, Any] = jsonpatch.apply_patch(old, body)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise api_error(
                    422, "Invalid", f"the JSON patch cannot be applied: {exc}"
                ) from None
            return result
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the patch body must be an object")
        if kind == "merge":
            return dict(semantics.merge_patch(old, body))
        if kind == "replace":
            return clone(body)
        manager = params.get("fieldManager", "")
        if not manager:
            raise api_error(400, "BadRequest", "fieldManager is required for apply patch")
        applied = self.applied_part(body, subresource)
        slot = (key, manager, subresource or "")
        result = semantics.apply_merge(old, applied, self.applied.get(slot))
        self.applied[slot] = applied
        return result

    async def delete(
        self, ref: kmock.resource, namespace: str | None, name: str, policy: str
    ) -> dict[str, Any]:
        key = self.key(ref, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        if policy == "Orphan":
            self._orphan(obj["metadata"]["uid"])
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                self.revision += 1
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = str(self.revision)
                await self._emit(ref, "MODIFIED", obj)
            return obj
        await self._remove(ref, key)
        return obj

    def _orphan(self, uid: str) -> None:
        for obj in self.objects.values():
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != uid]
            if len(kept) != len(refs):
                obj["metadata"]["ownerReferences"] = kept

    async def _remove(self, ref: kmock.resource, key: ObjectKey) -> None:
        obj = self.objects.pop(key)
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        await self._emit(ref, "DELETED", obj)
        for (group, plural), ns, name in self._dependents(obj):
            dependent_ref = self._ref_for(group, plural)
            if dependent_ref is not None and self.key(dependent_ref, ns, name) in self.objects:
                await self.delete(dependent_ref, ns, name, "Background")

    def _dependents(
        self, owner: Mapping[str, Any]
    ) -> Iterable[tuple[tuple[str, str], str | None, str]]:
        uid = owner["metadata"]["uid"]
        existing = {obj["metadata"].get("uid") for obj in self.objects.values()}
        in_namespace = owner.get("kind") == "Namespace" and owner.get("apiVersion") == "v1"
        found = []
        for (group, plural, ns, name), obj in self.objects.items():
            owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
            alive = [u for u in owners if u != uid and u in existing]
            if (uid in owners and not alive) or (in_namespace and ns == owner["metadata"]["name"]):
                found.append(((group, plural), ns, name))
        return found

    def _ref_for(self, group: str, plural: str) -> kmock.resource | None:
        for ref in self.resources:
            if ref.group == group and ref.plural == plural:
                return ref
        return None
