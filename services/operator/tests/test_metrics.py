"""The operator's Prometheus endpoint counts reconciles and objects by state."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import httpx
import kopf
import pytest

from kaito_operator.handlers import lifecycle, owners
from kaito_operator.memo import OperatorMemo
from kaito_operator_testing.harness import OperatorHarness

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT = free_port()


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"}), "metrics_port": PORT}


async def test_metrics_count_reconciles_and_states(cluster: OperatorHarness) -> None:
    ws = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "m",
            "namespace": "default",
            "annotations": {"kaito.sh/runtime": "transformers"},
        },
        "resource": {"labelSelector": {"matchLabels": {"apps": "m"}}},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}},
    }
    await cluster.emulator.create_object(ws)
    bad = {
        **ws,
        "metadata": {"name": "bad", "namespace": "default"},
        "inference": {"preset": {"name": "nope"}},
    }
    await cluster.emulator.create_object(bad)
    url = f"http://127.0.0.1:{PORT}/metrics"

    async def scrape() -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).text

    expected = (
        'kaito_operator_reconciles_total{kind="Workspace",result="ok"} 1.0',
        'kaito_operator_reconciles_total{kind="Workspace",result="invalid"} 1.0',
        'kaito_operator_objects{kind="Workspace",state="Pending"} 1.0',
        'kaito_operator_objects{kind="Workspace",state="NotReady"} 1.0',
    )
    text = ""
    for _ in range(100):
        text = await scrape()
        if all(line in text for line in expected):
            break
        await asyncio.sleep(0.1)
    for line in expected:
        assert line in text
    assert "kaito_operator_reconcile_seconds_bucket" in text

    # Deleted without a finalizer (BYO): the DELETED event still drops it from the count.
    await cluster.emulator.delete_object("kaito.sh/v1beta1", "workspaces", "default", "m")
    gone = 'kaito_operator_objects{kind="Workspace",state="Pending"} 0.0'
    for _ in range(100):
        text = await scrape()
        if gone in text:
            break
        await asyncio.sleep(0.1)
    assert gone in text


async def test_a_retried_startup_keeps_its_metrics_server(cluster: OperatorHarness) -> None:
    """kopf runs a startup handler again after it failed; the metrics server of the first
    attempt stays (a second bind of the same port would fail: address already in use)."""
    port = free_port()
    config = cluster.operator_settings().model_copy(update={"metrics_port": port})
    memo = OperatorMemo(settings=config)
    log = logging.getLogger("test")
    # kopf passes its (here empty) indexes to startup handlers, by index id.
    indexes = {
        index(param): {}
        for param in ("workspace", "inferenceset", "ragengine")
        for index in (owners.owners_index, owners.children_index)
    }
    await lifecycle.startup(memo=memo, settings=kopf.OperatorSettings(), logger=log, **indexes)
    first = (memo.metrics_server, memo.metrics)
    try:
        await lifecycle.startup(memo=memo, settings=kopf.OperatorSettings(), logger=log, **indexes)
        assert (memo.metrics_server, memo.metrics) == first
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert answer.status_code == 200
    finally:
        await lifecycle.cleanup(memo=memo)
