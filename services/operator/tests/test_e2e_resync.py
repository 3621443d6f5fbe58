"""End to end: the resync loop (every 0.5 s here) applies nothing while a Workspace and its
StatefulSet are as the last reconcile left them, puts back what someone else changed, and
applies everything again every ``full_resync_every``-th resync."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kaito_operator_testing.harness import OperatorHarness, inference_workspace

pytestmark = pytest.mark.asyncio
STS = ("apps/v1", "statefulsets")
CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


def _applies(cluster: OperatorHarness, mark: int) -> list[str]:
    return [
        r.resource.plural
        for r in cluster.emulator.recorded_requests[mark:]
        if r.resource is not None
        and r.method.value == "PATCH"
        and r.resource.plural in ("statefulsets", "services")
    ]


async def test_an_unchanged_workspace_is_not_reapplied_by_each_resync(
    cluster: OperatorHarness,
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("quiet", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(lambda: cluster.status("quiet"), message="status")
    await asyncio.sleep(1.0)  # the first resync finds the StatefulSet in the index
    mark = len(emu.recorded_requests)
    await asyncio.sleep(2.0)  # about four resyncs, fewer than full_resync_every (10)
    assert _applies(cluster, mark) == []


async def test_a_scaled_statefulset_is_put_back_by_the_next_resync(
    cluster: OperatorHarness,
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("drift", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(lambda: emu.read_object(*STS, "default", "drift"), message="sts")
    await asyncio.sleep(1.0)
    await emu.patch_object(*STS, "default", "drift", {"spec": {"replicas": 3}})

    def put_back() -> bool:
        sts = emu.read_object(*STS, "default", "drift")
        return sts is not None and sts["spec"]["replicas"] == 1

    await cluster.wait_for(put_back, message="replicas put back to 1")


async def test_every_tenth_resync_applies_everything(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_workspace("full", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(lambda: cluster.status("full"), message="status")
    mark = len(emu.recorded_requests)
    await asyncio.sleep(6.5)  # twelve resyncs or so
    assert sorted(_applies(cluster, mark)) in (
        ["services", "services", "statefulsets"],
        ["services", "services", "services", "services", "statefulsets", "statefulsets"],
    )
