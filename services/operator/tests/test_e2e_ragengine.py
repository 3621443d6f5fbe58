"""End to end: the real operator turns RAGEngines into a Deployment and a Service whose
environment the RAG service really reads; status follows the (simulated) kubelet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator_testing import kubelet
from kaito_operator_testing.harness import OperatorHarness
from kaito_sdk.contracts import ragengine as rag_contract

pytestmark = pytest.mark.asyncio


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"ragengine"})}


RAG = ("kaito.sh/v1beta1", "ragengines")


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if obj is None:
        return {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def ragengine(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "RAGEngine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


async def test_ragengine_deployment_env_status_and_cleanup(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    spec = {
        "embedding": {
            "remote": {"url": "http://embedder.default.svc/v1/embeddings", "accessSecret": "emb"}
        },
        "inferenceService": {
            "url": "http://phi.default.svc/v1/chat/completions",
            "accessSecret": "llm",
            "contextWindowSize": 4096,
        },
        "storage": {"persistentVolume": {"persistentVolumeClaim": "rag-data"}},
    }
    await emu.create_object(ragengine("rag", **spec))
    deployment = await cluster.wait_for(
        lambda: emu.read_object("apps/v1", "deployments", "default", "rag"), message="Deployment"
    )
    service = await cluster.wait_for(
        lambda: emu.read_object("v1", "services", "default", "rag"), message="Service"
    )
    validate_k8s(deployment)
    validate_k8s(service)
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[rag_contract.env_name("embedding_source")]["value"] == "remote"
    assert env[rag_contract.env_name("llm_context_window")]["value"] == "4096"
    assert env[rag_contract.env_name("persist_dir")]["value"] == "/mnt/data/rag"
    assert (
        env[rag_contract.env_name("llm_access_secret")]["valueFrom"]["secretKeyRef"]["name"]
        == "llm"
    )
    assert container["ports"] == [{"name": "http", "containerPort": rag_contract.DEFAULT_PORT}]

    rag = await cluster.wait_for(
        cluster.object_with_condition(RAG, "rag", "ServiceReady", "False"), message="not ready"
    )
    [pod] = await kubelet.create_pods(emu, deployment, 1, names=["rag-xyz"])
    await kubelet.set_pod_state(emu, pod, ready=True)
    await kubelet.set_workload_ready(emu, deployment, 1)
    rag = await cluster.wait_for(
        cluster.object_with_condition(RAG, "rag", "RAGEngineSucceeded", "True"), message="ready"
    )
    assert rag["status"]["workerNodes"] == ["node-0"]

    # A spec change re-renders the environment and rolls the pod (revision annotation).
    revision = deployment["spec"]["template"]["metadata"]["annotations"][
        "ragengine.kaito.io/revision"
    ]
    patch = {"spec": {"inferenceService": {"contextWindowSize": 8192}}}
    await emu.patch_object(*RAG, "default", "rag", patch)

    def rolled() -> Any:
        current = emu.read_object("apps/v1", "deployments", "default", "rag") or deployment
        template = current["spec"]["template"]
        return (
            template
            if template["metadata"]["annotations"]["ragengine.kaito.io/revision"] != revision
            else None
        )

    template = await cluster.wait_for(rolled, message="rollout")
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env[rag_contract.env_name("llm_context_window")]["value"] == "8192"
    await emu.delete_object(*RAG, "default", "rag")
    await cluster.wait_for(lambda: emu.read_object(*RAG, "default", "rag") is None, message="gone")
    assert emu.read_object("apps/v1", "deployments", "default", "rag") is None
    assert emu.read_object("v1", "services", "default", "rag") is None


async def test_ragengine_with_an_unsupported_field_says_which(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    spec = {
        "embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}},
        "guardrails": {"enabled": True},
    }
    await emu.create_object(ragengine("rag2", **spec))

    def refused() -> Any:
        cond = conditions(emu.read_object(*RAG, "default", "rag2")).get("RAGEngineSucceeded")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    cond = await cluster.wait_for(refused, message="InvalidSpec")
    assert "spec.guardrails" in cond["message"]
    assert emu.read_object("apps/v1", "deployments", "default", "rag2") is None


async def test_every_request_is_allowed_by_the_ragengine_rbac(
    cluster: OperatorHarness, rbac_violations: Callable[..., list[str]]
) -> None:
    await cluster.emulator.create_object(
        ragengine("r", embedding={"local": {"modelID": "sentence-transformers/all-MiniLM-L6-v2"}})
    )
    await cluster.wait_for(
        lambda: cluster.emulator.read_object("apps/v1", "deployments", "default", "r"),
        message="Deployment",
    )
    await cluster.emulator.delete_object(*RAG, "default", "r")
    await cluster.wait_for(
        lambda: cluster.emulator.read_object(*RAG, "default", "r") is None, message="gone"
    )
    assert rbac_violations(cluster, "ragengine") == []
