"""End to end: a watched CRD that the API server stops serving for a while (answered 404,
as just after an apiserver restart or while a CRD is re-created) does not end the
operator: it logs why, waits until the CRD is served and watches again, in the same
process."""

from __future__ import annotations

import logging

import pytest

from kaito_operator_testing.harness import OperatorHarness, inference_workspace

pytestmark = pytest.mark.asyncio
CPU = {"preset": {"name": "smollm2-135m-instruct"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}
WORKSPACES_CRD = "workspaces.kaito.sh"


def _messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_a_workspace_crd_answered_404_is_watched_again_once_served(
    cluster: OperatorHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kaito_operator.supervisor")
    emu = cluster.emulator
    operator = cluster.operator
    assert operator is not None
    await emu.create_object(inference_workspace("before", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(lambda: cluster.status("before"), message="'before' has a status")

    await emu.withdraw_crd(WORKSPACES_CRD)
    await cluster.wait_for(
        lambda: any("answered 404" in m for m in _messages(caplog, "kaito_operator.supervisor")),
        message="the operator's warning that a watch was answered 404",
    )
    await cluster.wait_for(
        lambda: any("not served yet" in m for m in _messages(caplog, "kaito_operator.supervisor")),
        message="a check (with backoff) that finds the CRD still not served",
    )
    assert operator.thread.is_alive()
    assert operator.error is None

    crd_body = emu.read_object(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", None, WORKSPACES_CRD
    )
    assert crd_body is not None
    emu.register_crd(crd_body)
    await cluster.wait_for(
        lambda: any("served again" in m for m in _messages(caplog, "kaito_operator.supervisor")),
        message="the operator watching again",
    )
    await emu.create_object(inference_workspace("after", CPU, annotations=TRANSFORMERS))
    await cluster.wait_for(
        lambda: cluster.status("after"), within=30, message="'after' reconciled after the 404"
    )
    assert emu.read_object("apps/v1", "statefulsets", "default", "after") is not None
    assert operator.thread.is_alive()
    assert operator.error is None
