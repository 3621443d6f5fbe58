"""End to end: the Kubernetes Events the operator posts (failures and retries, not every
handled change)."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_operator_testing.harness import OperatorHarness, inference_workspace

pytestmark = pytest.mark.asyncio
CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"}), "post_events": True}


def events_about(cluster: OperatorHarness, name: str) -> list[dict[str, Any]]:
    return [
        event
        for event in cluster.emulator.list_objects("v1", "events", "default")
        if event.get("involvedObject", {}).get("name") == name
    ]


async def test_a_retried_reconcile_is_an_event_a_successful_one_is_not(
    cluster: OperatorHarness,
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("fine", CPU, annotations=TRANSFORMERS))
    await emu.create_object(
        inference_workspace("late", {**CPU, "config": "later"}, annotations=TRANSFORMERS)
    )
    warnings = await cluster.wait_for(
        lambda: events_about(cluster, "late"), message="an Event about the missing ConfigMap"
    )
    assert any("ConfigMap 'later' does not exist" in e["message"] for e in warnings)
    assert all(e["type"] in ("Warning", "Error") for e in warnings)
    await cluster.wait_for(
        lambda: emu.read_object("apps/v1", "statefulsets", "default", "fine"),
        message="the other Workspace's StatefulSet",
    )
    await cluster.wait_for(lambda: cluster.status("fine"), message="its status")
    assert events_about(cluster, "fine") == []
