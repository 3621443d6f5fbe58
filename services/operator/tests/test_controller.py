"""The generic controller without kopf: child changes that arrive while a recompute runs."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, ClassVar

import pytest

from kaito_operator.controller import Controller
from kaito_operator.metrics import OperatorMetrics
from kaito_operator.reconcilers.kind import Children, Reconciled
from kaito_operator.reconcilers.observe import Outcome
from kaito_operator_testing.harness import inference_workspace
from kaito_sdk.api import Workspace, WorkspaceStatus

KEY = ("default", "ws")


class SlowKind:
    """A Workspace kind whose observe waits until the test lets it finish."""

    model: ClassVar[type[Workspace]] = Workspace
    summary: ClassVar[str] = "WorkspaceSucceeded"
    reconcile_on_child_change: ClassVar[bool] = False

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.release = asyncio.Event()

    async def reconcile(self, owner: Workspace) -> Reconciled:
        return Reconciled()

    async def observe(
        self, owner: Workspace, children: Children, outcome: Outcome, *, now: datetime.datetime
    ) -> WorkspaceStatus:
        self.seen.append(len(children))
        await self.release.wait()
        return WorkspaceStatus(target_node_count=len(children))

    async def cleanup(self, owner: Workspace) -> None:
        return None


class Kube:
    """Records status writes."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.writes.append(args[-1])
        return {}


@pytest.mark.asyncio
async def test_changes_during_a_recompute_make_one_more_recompute_that_sees_them_all() -> None:
    kind, kube = SlowKind(), Kube()
    controller: Controller[Workspace] = Controller(kind, kube, OperatorMetrics())  # type: ignore[arg-type]  # fakes of the protocol's parts used here
    body = inference_workspace("ws", {"preset": {"name": "smollm2-135m-instruct"}})
    body["metadata"]["uid"] = "u1"
    owners = {KEY: [body]}
    children: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {KEY: []}

    def pod(index: int) -> tuple[str, dict[str, Any]]:
        return "Pod", {"metadata": {"name": f"ws-{index}", "namespace": "default"}}

    children[KEY].append(pod(0))
    first = asyncio.create_task(controller.child_changed(KEY, owners, children))
    await asyncio.sleep(0.01)  # the first recompute is running (waiting in observe)
    later = []
    for index in range(1, 5):  # four more changes while it runs
        children[KEY].append(pod(index))
        later.append(asyncio.create_task(controller.child_changed(KEY, owners, children)))
        await asyncio.sleep(0.01)
    kind.release.set()
    await asyncio.gather(first, *later)
    assert kind.seen == [1, 5]  # one recompute more, after the running one, seeing all five
    assert [w["targetNodeCount"] for w in kube.writes] == [1, 5]
