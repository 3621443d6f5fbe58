"""End to end: what a new Workspace costs in API requests (the scale benchmark's budget)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from kaito_operator_testing.harness import OperatorHarness, inference_workspace

pytestmark = pytest.mark.asyncio
CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    # No periodic resync inside the test: it reads and re-applies on purpose.
    return {"controllers": frozenset({"workspace"}), "resync_seconds": 60.0}


def _request(request: Any) -> str:
    plural = request.resource.plural if request.resource is not None else "?"
    sub = f"/{request.subresource}" if request.subresource else ""
    verb = "WATCH" if request.params.get("watch") == "true" else request.method.value
    return f"{verb} {plural}{sub}"


async def test_a_new_workspace_costs_three_applies_and_one_status_write(
    cluster: OperatorHarness,
) -> None:
    """BYO nodes: nothing to release at deletion, so no finalizer (kopf would patch it in
    first and run the create handler only on the event of that patch)."""
    emu = cluster.emulator
    await asyncio.sleep(0.5)  # the operator's watches are up
    mark = len(emu.recorded_requests)
    await emu.create_object(inference_workspace("cheap", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(lambda: cluster.status("cheap"), message="status")
    await asyncio.sleep(1.0)  # anything that would follow (a second recompute, a re-read)

    sent = Counter(_request(r) for r in emu.recorded_requests[mark:])
    # kopf's watch reconnects are not per Workspace.
    sent = Counter({key: n for key, n in sent.items() if not key.startswith("WATCH ")})
    assert sent == {
        "PATCH services": 2,
        "PATCH statefulsets": 1,
        "PATCH workspaces/status": 1,
    }
