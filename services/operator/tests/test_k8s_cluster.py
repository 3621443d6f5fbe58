"""The operator against a real cluster (``KAITO_E2E_KUBECONFIG``); skipped without one.

The cluster needs the Workspace CRD installed (``charts/kaito-workspace/crds``). The test
runs the operator locally with that kubeconfig, in a fresh namespace it deletes after.
The CPU counterpart of every check here is in ``test_e2e_*.py`` against the emulator.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import kopf
import pytest
import pytest_asyncio

from kaito_operator.kube import KubeClient
from kaito_operator.settings import OperatorSettings
from kaito_operator_testing.harness import RunningOperator

KUBECONFIG = os.environ.get("KAITO_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.k8s,
    pytest.mark.asyncio,
    pytest.mark.skipif(not KUBECONFIG, reason="KAITO_E2E_KUBECONFIG is not set (no real cluster)"),
]


@pytest_asyncio.fixture
async def cluster(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[KubeClient, str]]:
    assert KUBECONFIG is not None
    monkeypatch.setenv("KUBECONFIG", KUBECONFIG)
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None, "the kubeconfig has no usable context"
    client = KubeClient.from_kopf(info)
    namespace = f"kaito-e2e-{uuid.uuid4().hex[:6]}"
    await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    operator = RunningOperator(
        OperatorSettings(controllers=frozenset({"workspace"}), post_events=False)
    )
    await operator.start(within=60)
    try:
        yield client, namespace
    finally:
        await operator.stop()
        await client.delete("v1", "Namespace", namespace)
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[object]], within: float = 60) -> object:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(1)
    raise TimeoutError("condition not reached on the cluster")


async def test_cpu_workspace_gets_its_children_and_loses_them_on_delete(
    cluster: tuple[KubeClient, str],
) -> None:
    client, namespace = cluster
    workspace = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "smollm2",
            "namespace": namespace,
            "annotations": {"kaito.sh/runtime": "transformers"},
        },
        "resource": {"labelSelector": {"matchLabels": {"apps": "smollm2"}}},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}},
    }
    await client.apply(workspace)

    async def children() -> bool:
        sts = await client.get("apps/v1", "StatefulSet", "smollm2", namespace)
        svc = await client.get("v1", "Service", "smollm2", namespace)
        return sts is not None and svc is not None

    await eventually(children)

    async def status() -> object:
        ws = await client.get("kaito.sh/v1beta1", "Workspace", "smollm2", namespace)
        return (ws or {}).get("status", {}).get("conditions")

    await eventually(status)
    await client.delete("kaito.sh/v1beta1", "Workspace", "smollm2", namespace)

    async def gone() -> bool:
        return await client.get("kaito.sh/v1beta1", "Workspace", "smollm2", namespace) is None

    await eventually(gone)
