"""The Kubernetes API emulator behaves like an API server where the operator relies on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
import yaml

from kaito_operator_testing import KubernetesEmulator

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}
        ],
    },
}


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[KubernetesEmulator]:
    async with KubernetesEmulator() as emu, kmock.Server(emu):
        emu.register_crd(CRD)
        yield emu


def widget(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, **extra}


async def send(emu: KubernetesEmulator, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    response = await emu.request(method, url, **kwargs)
    async with response:
        return response.status, await response.json(content_type=None)


MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.mark.asyncio
async def test_create_assigns_metadata_and_answers_201(emulator: KubernetesEmulator) -> None:
    status, body = await send(emulator, "POST", WIDGETS, json=widget("a", size=1))
    assert status == 201
    meta = body["metadata"]
    assert meta["namespace"] == "default"
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["resourceVersion"]
    assert meta["creationTimestamp"]
    status, body = await send(emulator, "POST", WIDGETS, json=widget("a"))
    assert status == 409
    assert body["reason"] == "AlreadyExists"


@pytest.mark.asyncio
async def test_create_needs_an_existing_namespace(emulator: KubernetesEmulator) -> None:
    url = "/apis/example.com/v1/namespaces/nowhere/widgets"
    status, _ = await send(emulator, "POST", url, json=widget("a"))
    assert status == 404
    status, _ = await send(
        emulator, "POST", "/api/v1/namespaces", json={"metadata": {"name": "nowhere"}}
    )
    assert status == 201
    status, _ = await send(emulator, "POST", url, json=widget("a"))
    assert status == 201


@pytest.mark.asyncio
async def test_namespaces_are_cluster_scoped_and_delete_their_contents(
    emulator: KubernetesEmulator,
) -> None:
    await send(emulator, "POST", "/api/v1/namespaces", json={"metadata": {"name": "team"}})
    status, body = await send(emulator, "GET", "/api/v1/namespaces")
    assert status == 200
    assert sorted(i["metadata"]["name"] for i in body["items"]) == ["default", "team"]
    await send(emulator, "POST", "/apis/example.com/v1/namespaces/team/widgets", json=widget("w"))
    status, _ = await send(emulator, "DELETE", "/api/v1/namespaces/team")
    assert status == 200
    assert emulator.read_object("example.com/v1", "widgets", "team", "w") is None
    status, _ = await send(emulator, "GET", "/api/v1/namespaces/team")
    assert status == 404


@pytest.mark.asyncio
async def test_status_subresource_is_isolated(emulator: KubernetesEmulator) -> None:
    _, created = await send(emulator, "POST", WIDGETS, json=widget("a", size=1, status={"x": 1}))
    assert "status" not in created
    # A main-resource write cannot change status; a spec change bumps generation.
    _, body = await send(
        emulator, "PATCH", f"{WIDGETS}/a", json={"size": 2, "status": {"x": 2}}, headers=MERGE
    )
    assert body["size"] == 2
    assert "status" not in body
    assert body["metadata"]["generation"] == 2
    # A status write changes only status and leaves generation alone.
    _, body = await send(
        emulator,
        "PATCH",
        f"{WIDGETS}/a/status",
        json={"size": 99, "status": {"x": 3}},
        headers=MERGE,
    )
    assert body["status"] == {"x": 3}
    assert body["size"] == 2
    assert body["metadata"]["generation"] == 2
    assert int(body["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


@pytest.mark.asyncio
async def test_noop_patch_keeps_resource_version(emulator: KubernetesEmulator) -> None:
    _, created = await send(emulator, "POST", WIDGETS, json=widget("a", size=1))
    _, body = await send(emulator, "PATCH", f"{WIDGETS}/a", json={"size": 1}, headers=MERGE)
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


@pytest.mark.asyncio
async def test_optimistic_concurrency(emulator: KubernetesEmulator) -> None:
    _, created = await send(emulator, "POST", WIDGETS, json=widget("a", size=1))
    rv = created["metadata"]["resourceVersion"]
    await send(emulator, "PATCH", f"{WIDGETS}/a", json={"size": 2}, headers=MERGE)
    stale = {"size": 3, "metadata": {"resourceVersion": rv}}
    status, _ = await send(emulator, "PATCH", f"{WIDGETS}/a", json=stale, headers=MERGE)
    assert status == 409
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/size", "value": 4},
    ]
    json_patch = {"Content-Type": "application/json-patch+json"}
    status, _ = await send(emulator, "PATCH", f"{WIDGETS}/a", json=ops, headers=json_patch)
    assert status == 422
    assert emulator.read_object("example.com/v1", "widgets", "default", "a")["size"] == 2


@pytest.mark.asyncio
async def test_put_replaces_but_keeps_status(emulator: KubernetesEmulator) -> None:
    await send(emulator, "POST", WIDGETS, json=widget("a", size=1, color="red"))
    await emulator.patch_object(
        "example.com/v1", "widgets", "default", "a", {"status": {"ok": True}}, subresource="status"
    )
    status, body = await send(emulator, "PUT", f"{WIDGETS}/a", json=widget("a", size=5))
    assert status == 200
    assert body["size"] == 5
    assert "color" not in body
    assert body["status"] == {"ok": True}


@pytest.mark.asyncio
async def test_label_and_field_selectors_on_list(emulator: KubernetesEmulator) -> None:
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})]:
        await send(
            emulator, "POST", WIDGETS, json=widget(name, metadata={"name": name, "labels": labels})
        )

    async def names(**params: str) -> list[str]:
        _, body = await send(emulator, "GET", WIDGETS, params=params)
        return sorted(i["metadata"]["name"] for i in body["items"])

    assert await names(labelSelector="app=x") == ["a"]
    assert await names(labelSelector="app!=x") == ["b", "c"]
    assert await names(labelSelector="app in (x,y)") == ["a", "b"]
    assert await names(labelSelector="app notin (x)") == ["b", "c"]
    assert await names(labelSelector="app,!tier") == ["b"]
    assert await names(fieldSelector="metadata.name=c") == ["c"]
    status, _ = await send(emulator, "GET", WIDGETS, params={"labelSelector": "a in x"})
    assert status == 400


async def read_events(emu: KubernetesEmulator, params: dict[str, str], count: int) -> list[Any]:
    events: list[Any] = []
    response = await emu.request("GET", WIDGETS, params={"watch": "true", **params})
    async with response:
        async for line in response.content:
            if line.strip():
                events.append(json.loads(line))
                if len(events) == count:
                    break
    return events


@pytest.mark.asyncio
async def test_watch_filters_by_label_and_resumes_from_resource_version(
    emulator: KubernetesEmulator,
) -> None:
    _, first = await send(
        emulator, "POST", WIDGETS, json=widget("a", metadata={"name": "a", "labels": {"app": "x"}})
    )
    watcher = asyncio.create_task(read_events(emulator, {"labelSelector": "app=x"}, 3))
    await asyncio.sleep(0.1)
    await send(
        emulator, "POST", WIDGETS, json=widget("b", metadata={"name": "b", "labels": {"app": "y"}})
    )
    await send(emulator, "PATCH", f"{WIDGETS}/a", json={"size": 1}, headers=MERGE)
    await send(emulator, "DELETE", f"{WIDGETS}/a")
    events = await asyncio.wait_for(watcher, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    # Resuming from the first object's version replays only what happened after it.
    replay = await asyncio.wait_for(
        read_events(emulator, {"resourceVersion": first["metadata"]["resourceVersion"]}, 3), 5
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replay] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]


@pytest.mark.asyncio
async def test_server_side_apply_creates_merges_and_prunes(emulator: KubernetesEmulator) -> None:
    apply = {"Content-Type": "application/apply-patch+yaml"}
    url = f"{WIDGETS}/a?fieldManager=me&force=true"
    manifest = widget("a", metadata={"name": "a", "labels": {"mine": "1"}}, size=1, color="red")
    status, body = await send(emulator, "PATCH", url, data=yaml.safe_dump(manifest), headers=apply)
    assert status == 201
    # Another writer adds a label; the manager re-applies without "color".
    await send(
        emulator,
        "PATCH",
        f"{WIDGETS}/a",
        json={"metadata": {"labels": {"other": "2"}}},
        headers=MERGE,
    )
    manifest = widget("a", metadata={"name": "a", "labels": {"mine": "1"}}, size=2)
    status, body = await send(emulator, "PATCH", url, data=yaml.safe_dump(manifest), headers=apply)
    assert status == 200
    assert body["size"] == 2
    assert "color" not in body
    assert body["metadata"]["labels"] == {"mine": "1", "other": "2"}
    assert body["metadata"]["generation"] == 2
    status, _ = await send(emulator, "PATCH", f"{WIDGETS}/a", data="size: 3", headers=apply)
    assert status == 400  # no fieldManager


@pytest.mark.asyncio
async def test_owner_references_cascade_and_orphan(emulator: KubernetesEmulator) -> None:
    _, owner = await send(emulator, "POST", WIDGETS, json=widget("owner"))
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    _, child = await send(
        emulator,
        "POST",
        WIDGETS,
        json=widget("child", metadata={"name": "child", "ownerReferences": [ref]}),
    )
    grandchild_ref = {**ref, "name": "child", "uid": child["metadata"]["uid"]}
    cm = {"metadata": {"name": "grandchild", "ownerReferences": [grandchild_ref]}, "data": {}}
    await send(emulator, "POST", "/api/v1/namespaces/default/configmaps", json=cm)
    await send(emulator, "DELETE", f"{WIDGETS}/owner")
    assert emulator.read_object("example.com/v1", "widgets", "default", "child") is None
    assert emulator.read_object("v1", "configmaps", "default", "grandchild") is None
    # Orphan propagation keeps the dependents and drops the reference.
    _, owner = await send(emulator, "POST", WIDGETS, json=widget("owner2"))
    ref = {**ref, "name": "owner2", "uid": owner["metadata"]["uid"]}
    await send(
        emulator,
        "POST",
        WIDGETS,
        json=widget("kept", metadata={"name": "kept", "ownerReferences": [ref]}),
    )
    await send(emulator, "DELETE", f"{WIDGETS}/owner2", params={"propagationPolicy": "Orphan"})
    kept = emulator.read_object("example.com/v1", "widgets", "default", "kept")
    assert kept is not None
    assert kept["metadata"]["ownerReferences"] == []


@pytest.mark.asyncio
async def test_finalizers_hold_deletion_until_removed(emulator: KubernetesEmulator) -> None:
    await send(
        emulator, "POST", WIDGETS, json=widget("a", metadata={"name": "a", "finalizers": ["x/y"]})
    )
    status, body = await send(emulator, "DELETE", f"{WIDGETS}/a")
    assert status == 200
    assert body["metadata"]["deletionTimestamp"]
    assert emulator.read_object("example.com/v1", "widgets", "default", "a") is not None
    await send(
        emulator, "PATCH", f"{WIDGETS}/a", json={"metadata": {"finalizers": None}}, headers=MERGE
    )
    assert emulator.read_object("example.com/v1", "widgets", "default", "a") is None


@pytest.mark.asyncio
async def test_discovery_serves_registered_crds_from_yaml(
    emulator: KubernetesEmulator, tmp_path: Path
) -> None:
    crd = json.loads(json.dumps(CRD))
    crd["metadata"]["name"] = "gadgets.example.org"
    crd["spec"].update(group="example.org", scope="Cluster")
    crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget", "shortNames": ["gd"]}
    path = tmp_path / "crds.yaml"
    path.write_text(yaml.safe_dump_all([crd]))
    emulator.register_crd_file(path)
    status, body = await send(emulator, "GET", "/apis/example.org/v1")
    assert status == 200
    names = {r["name"]: r for r in body["resources"]}
    assert names["gadgets"]["namespaced"] is False
    assert names["gadgets"]["shortNames"] == ["gd"]
    assert "gadgets/status" in names
    status, body = await send(
        emulator, "POST", "/apis/example.org/v1/gadgets", json={"metadata": {"name": "g"}}
    )
    assert status == 201
    assert "namespace" not in body["metadata"]
    assert body["kind"] == "Gadget"


@pytest.mark.asyncio
async def test_test_reactions_intercept_before_any_effect(emulator: KubernetesEmulator) -> None:
    emulator["post", kmock.resource("example.com", "v1", "widgets")] << 500
    status, _ = await send(emulator, "POST", WIDGETS, json=widget("a"))
    assert status == 500
    assert emulator.read_object("example.com/v1", "widgets", "default", "a") is None
