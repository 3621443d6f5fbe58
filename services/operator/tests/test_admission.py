"""Admission: the SDK's rules and the referenced ConfigMaps, through kopf's webhook server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

from kaito_operator.admission import review
from kaito_operator.handlers.admission import validate
from kaito_operator.kube import KubeClient
from kaito_operator_testing import KubernetesEmulator
from kaito_operator_testing.harness import OperatorHarness

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[KubernetesEmulator, KubeClient]]:
    async with KubernetesEmulator() as emu, kmock.Server(emu) as server:
        client = KubeClient.from_kopf(kopf.ConnectionInfo(server=str(server.url).rstrip("/")))
        yield emu, client
        await client.aclose()


def workspace(**body: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "ws"}}},
        **body,
    }


def config_map(name: str, key: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {key: text},
    }


PRESET = {"preset": {"name": "smollm2-135m-instruct"}}


async def test_valid_workspace_is_admitted(api: tuple[KubernetesEmulator, KubeClient]) -> None:
    _, client = api
    assert await review(client, workspace(inference=PRESET), None) == []


async def test_sdk_rules_name_the_field(api: tuple[KubernetesEmulator, KubeClient]) -> None:
    _, client = api
    both = await review(
        client,
        workspace(inference=PRESET, tuning={"preset": PRESET["preset"], "method": "lora"}),
        None,
    )
    assert any(problem.startswith("inference:") and "exactly one" in problem for problem in both)
    unknown = await review(client, workspace(inference={**PRESET, "replicas": 2}), None)
    assert unknown == ["inference.replicas: unknown field (not part of the KAITO API)"]


async def test_immutable_fields_are_refused_on_update(
    api: tuple[KubernetesEmulator, KubeClient],
) -> None:
    _, client = api
    old = workspace(inference=PRESET)
    new = workspace(inference=PRESET)
    new["resource"] = {"labelSelector": {"matchLabels": {"apps": "other"}}}
    problems = await review(client, new, old)
    assert any("resource.labelSelector" in problem for problem in problems)


async def test_inference_config_map_must_exist_and_parse(
    api: tuple[KubernetesEmulator, KubeClient],
) -> None:
    emu, client = api
    ws = workspace(inference={**PRESET, "config": "cfg"})
    assert await review(client, ws, None) == [
        "inference.config: ConfigMap 'cfg' does not exist in namespace 'default'"
    ]
    await emu.create_object(config_map("cfg", "wrong-key.yaml", "vllm: {}\n"))
    assert await review(client, ws, None) == [
        "inference.config: ConfigMap 'cfg' has no key 'inference_config.yaml'"
    ]
    await emu.patch_object(
        "v1",
        "configmaps",
        "default",
        "cfg",
        {"data": {"inference_config.yaml": "vllm:\n  port: 1\n"}},
    )
    [problem] = await review(client, ws, None)
    assert "port" in problem
    assert "set by the operator" in problem
    await emu.patch_object(
        "v1",
        "configmaps",
        "default",
        "cfg",
        {"data": {"inference_config.yaml": "vllm:\n  max-model-len: 999999\n"}},
    )
    [problem] = await review(client, ws, None)
    assert "exceeds the model's context" in problem
    await emu.patch_object(
        "v1",
        "configmaps",
        "default",
        "cfg",
        {"data": {"inference_config.yaml": "vllm:\n  max-model-len: 2048\n"}},
    )
    assert await review(client, ws, None) == []


async def test_tuning_config_map_must_fit_the_method(
    api: tuple[KubernetesEmulator, KubeClient],
) -> None:
    emu, client = api
    tuning = {
        "preset": PRESET["preset"],
        "method": "qlora",
        "config": "train",
        "input": {"urls": ["https://example.com/d.jsonl"]},
        "output": {"volumeSource": {"emptyDir": {}}},
    }
    text = "training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n"
    await emu.create_object(config_map("train", "training_config.yaml", text))
    [problem] = await review(client, workspace(tuning=tuning), None)
    assert problem.startswith("tuning.config (train/training_config.yaml):")
    assert "load_in_4bit" in problem


async def test_handler_refuses_with_422(api: tuple[KubernetesEmulator, KubeClient]) -> None:
    _, client = api
    memo = kopf.Memo(kube=client)
    body = kopf.Body(workspace())
    with pytest.raises(kopf.AdmissionError) as refused:
        await validate(body=body, memo=memo, old=None)
    assert refused.value.code == 422
    assert "exactly one of inference and tuning" in str(refused.value)


async def test_handler_admits_what_kaito_admits_with_warnings(
    api: tuple[KubernetesEmulator, KubeClient],
) -> None:
    _, client = api
    memo = kopf.Memo(kube=client)
    warnings: list[str] = []
    gated = workspace(inference={"preset": {"name": "llama-3.1-8b-instruct"}})
    await validate(body=kopf.Body(gated), memo=memo, old=None, warnings=warnings)
    [warning] = warnings
    assert warning.startswith("inference.preset.presetOptions.modelAccessSecret: is not set")
    assert "gated" in warning
    # Refused objects carry their warnings too; a clean one has none.
    warnings.clear()
    with pytest.raises(kopf.AdmissionError):
        await validate(
            body=kopf.Body(workspace(inference={"preset": {"name": "falcon-7b"}, "replicas": 2})),
            memo=memo,
            old=None,
            warnings=warnings,
        )
    warnings.clear()
    await validate(
        body=kopf.Body(workspace(inference=PRESET)), memo=memo, old=None, warnings=warnings
    )
    assert warnings == []


CORPUS = Path(__file__).resolve().parents[3] / "sdk" / "tests" / "data" / "kaito_compat"


def corpus_expectation(path: Path) -> tuple[str | None, set[str]]:
    """The corpus file's ``# expect:`` (None: admitted, else the refusal's text) and the
    warning paths of its ``# warnings:`` line (see the corpus README)."""
    refused, warnings = None, set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: refused: "):
            refused = line.removeprefix("# expect: refused: ")
        elif line.startswith("# warnings: "):
            warnings = {w.strip() for w in line.removeprefix("# warnings: ").split(",")}
    return refused, warnings


def corpus_cluster_objects(path: Path, repo_root: Path) -> tuple[list[Any], list[Any]]:
    """The corpus file's documents, and the ConfigMaps the cluster holds for it: the
    file's own and the chart's parameter templates (a tuning Workspace may name them)."""
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    config_maps = [
        config_map(
            f"{method}-params-template",
            "training_config.yaml",
            (repo_root / "presets" / "tuning" / f"{method}-params.yaml").read_text(),
        )
        for method in ("lora", "qlora")
    ]
    config_maps += [in_default(d) for d in documents if d["kind"] == "ConfigMap"]
    return documents, config_maps


def in_default(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "metadata": {**document["metadata"], "namespace": "default"}}


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
async def test_the_webhook_agrees_with_kaito_validate_on_the_compat_corpus(
    api: tuple[KubernetesEmulator, KubeClient], path: Path, repo_root: Path
) -> None:
    """The admission handler over the KAITO-shaped corpus, its ConfigMaps in the cluster."""
    emu, client = api
    documents, config_maps = corpus_cluster_objects(path, repo_root)
    for item in config_maps:
        await emu.create_object(item)
    memo = kopf.Memo(kube=client)
    refusals: list[tuple[int | None, str]] = []
    warnings: list[str] = []
    for document in documents:
        if not document["apiVersion"].startswith("kaito.sh/"):
            continue
        body = kopf.Body(in_default(document))
        try:
            await validate(body=body, memo=memo, old=None, warnings=warnings)
        except kopf.AdmissionError as refused:
            refusals.append((refused.code, str(refused)))
    expected_refusal, expected_warnings = corpus_expectation(path)
    if expected_refusal is None:
        assert refusals == []
    else:
        assert any(expected_refusal in text for _, text in refusals), refusals
        assert {code for code, _ in refusals} == {422}
    assert {warning.partition(": ")[0] for warning in warnings} == expected_warnings


async def test_webhook_server_answers_admission_reviews(
    tls_dir: Path, repo_root: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    crds = [repo_root / "charts" / "kaito-workspace" / "crds" / "kaito.sh_workspaces.yaml"]
    settings = {
        "controllers": frozenset({"workspace"}),
        "webhook_enabled": True,
        "webhook_port": port,
        "webhook_cert_dir": str(tls_dir),
    }
    async with OperatorHarness(crds, **settings) as cluster:
        await cluster.start_operator()
        request = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0000-1111",
                "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
                "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": workspace(inference={"preset": {"name": "no-such-model"}}),
            },
        }
        async with httpx.AsyncClient(verify=False) as client:
            url = f"https://127.0.0.1:{port}/validate-workspace"

            async def server_up() -> bool:
                try:
                    await client.get(f"https://127.0.0.1:{port}/")
                except httpx.TransportError:
                    return False
                return True

            for _ in range(100):  # kopf reports ready before the webhook server listens
                if await server_up():
                    break
                await asyncio.sleep(0.1)
            refused = (await client.post(url, json=request)).json()["response"]
            request["request"]["object"] = workspace(inference=PRESET)
            admitted = (await client.post(url, json=request)).json()["response"]
            gated = {"preset": {"name": "llama-3.1-8b-instruct"}}  # no modelAccessSecret
            request["request"]["object"] = workspace(inference=gated)
            warned = (await client.post(url, json=request)).json()["response"]
    assert refused["uid"] == "0000-1111"
    assert refused["allowed"] is False
    assert refused["status"]["code"] == 422
    assert "no-such-model" in refused["status"]["message"]
    assert admitted["allowed"] is True
    assert "warnings" not in admitted
    assert warned["allowed"] is True
    [warning] = warned["warnings"]
    assert warning.startswith("inference.preset.presetOptions.modelAccessSecret: is not set")
