"""kopf's last handled state, kept in the operator's memory."""

from __future__ import annotations

from typing import Any

import kopf

from kaito_operator.persistence import MemoryDiffBaseStorage


def body(uid: str, **meta: Any) -> kopf.Body:
    return kopf.Body({"metadata": {"uid": uid, "name": "ws", **meta}, "spec": {"a": 1}})


def test_an_object_is_new_until_its_essence_is_stored() -> None:
    storage = MemoryDiffBaseStorage()
    obj = body("u1")
    assert storage.fetch(body=obj) is None
    essence = storage.build(body=obj)
    storage.store(body=obj, patch=kopf.Patch(), essence=essence)
    assert storage.fetch(body=obj) == {"spec": {"a": 1}}
    assert storage.fetch(body=body("u2")) is None


def test_storing_writes_nothing_to_the_object() -> None:
    storage = MemoryDiffBaseStorage()
    obj = body("u1")
    patch = kopf.Patch()
    storage.store(body=obj, patch=patch, essence=storage.build(body=obj))
    assert not patch


def test_an_object_being_deleted_is_forgotten() -> None:
    storage = MemoryDiffBaseStorage()
    obj = body("u1")
    storage.store(body=obj, patch=kopf.Patch(), essence=storage.build(body=obj))
    deleting = body("u1", deletionTimestamp="2026-11-27T00:00:00Z")
    storage.store(body=deleting, patch=kopf.Patch(), essence=storage.build(body=deleting))
    assert storage.fetch(body=obj) is None
    assert len(storage) == 0
