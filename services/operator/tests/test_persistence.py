"""kopf's last handled state, kept in the operator's memory."""

from __future__ import annotations

from typing import Any

import kopf

from kaito_operator.persistence import MemoryDiffBaseStorage


def body(uid: str, api_version: str = "kaito.sh/v1beta1", **meta: Any) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": api_version,
            "kind": "Workspace",
            "metadata": {"uid": uid, "name": "ws", **meta},
            "spec": {"a": 1},
        }
    )


def test_an_object_is_new_until_its_essence_is_stored() -> None:
    storage = MemoryDiffBaseStorage({"kaito.sh"})
    obj = body("u1")
    assert storage.fetch(body=obj) is None
    essence = storage.build(body=obj)
    storage.store(body=obj, patch=kopf.Patch(), essence=essence)
    assert storage.fetch(body=obj) == {"spec": {"a": 1}}
    assert storage.fetch(body=body("u2")) is None


def test_storing_writes_nothing_to_the_object() -> None:
    storage = MemoryDiffBaseStorage({"kaito.sh"})
    obj = body("u1")
    patch = kopf.Patch()
    storage.store(body=obj, patch=patch, essence=storage.build(body=obj))
    assert not patch


def test_an_object_being_deleted_is_forgotten() -> None:
    storage = MemoryDiffBaseStorage({"kaito.sh"})
    obj = body("u1")
    storage.store(body=obj, patch=kopf.Patch(), essence=storage.build(body=obj))
    deleting = body("u1", deletionTimestamp="2026-11-27T00:00:00Z")
    storage.store(body=deleting, patch=kopf.Patch(), essence=storage.build(body=deleting))
    assert storage.fetch(body=obj) is None
    assert len(storage) == 0


def test_kinds_without_change_handlers_get_an_empty_essence() -> None:
    storage = MemoryDiffBaseStorage({"kaito.sh"})
    assert storage.build(body=body("u1", api_version="apps/v1")) == {}
    assert storage.build(body=body("u2", api_version="v1")) == {}
    assert storage.build(body=body("u3")) == {"spec": {"a": 1}}
