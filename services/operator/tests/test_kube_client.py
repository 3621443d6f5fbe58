"""The kube client against the emulator: apply is idempotent, 404 is a result, the rest raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import pytest_asyncio

from kaito_operator.kube import ClusterConnection, KubeApiError, KubeClient
from kaito_operator.testing import KubernetesEmulator

pytestmark = pytest.mark.asyncio
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "namespace": "default", "labels": {"a": "1"}},
    "data": {"k": "v"},
}


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[KubernetesEmulator]:
    async with KubernetesEmulator() as emu, kmock.Server(emu):
        yield emu


def url_of(emu: KubernetesEmulator) -> str:
    return str(emu.url).rstrip("/")


async def test_apply_creates_then_is_a_no_op(emulator: KubernetesEmulator) -> None:
    client = KubeClient(ClusterConnection(server=url_of(emulator)))
    try:
        first = await client.apply(CONFIG_MAP)
        again = await client.apply(CONFIG_MAP)
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        changed = await client.apply({**CONFIG_MAP, "data": {"k": "w"}})
        assert changed["data"] == {"k": "w"}
        assert [
            o["metadata"]["name"]
            for o in await client.list("v1", "ConfigMap", "default", labels={"a": "1"})
        ] == ["cm"]
        assert await client.list("v1", "ConfigMap", "default", labels={"a": "2"}) == []
        assert (await client.get("v1", "ConfigMap", "cm", "default")) is not None
        assert await client.delete("v1", "ConfigMap", "cm", "default") is True
    finally:
        await client.aclose()


async def test_missing_objects_are_results_not_errors(emulator: KubernetesEmulator) -> None:
    client = KubeClient(ClusterConnection(server=url_of(emulator)))
    try:
        assert await client.get("v1", "ConfigMap", "nope", "default") is None
        assert await client.delete("v1", "ConfigMap", "nope", "default") is False
        assert await client.patch_status("apps/v1", "StatefulSet", "nope", "default", {}) is None
        with pytest.raises(KubeApiError) as refused:
            await client.apply({**CONFIG_MAP, "metadata": {"name": "cm", "namespace": "missing"}})
        assert refused.value.status == 404
        assert "missing" in refused.value.message
    finally:
        await client.aclose()


async def test_rotated_service_account_token_is_picked_up(
    emulator: KubernetesEmulator, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    client = KubeClient(ClusterConnection(server=url_of(emulator), token_path=str(token)))
    try:
        await client.get("v1", "ConfigMap", "x", "default")
        token.write_text("second\n")
        import os  # noqa: PLC0415

        os.utime(token, (1, 1))  # a new mtime, as the kubelet's atomic swap gives
        await client.get("v1", "ConfigMap", "x", "default")
    finally:
        await client.aclose()
    sent = [r.headers.get("Authorization") for r in emulator.recorded_requests]
    assert sent[-2:] == ["Bearer first", "Bearer second"]
