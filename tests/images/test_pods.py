"""The four images, each run as its pod runs it, doing its job for real.

Pod specs come from the operator's builders (the StatefulSet of an inference Workspace,
the Job of a tuning Workspace, the Deployment of a RAGEngine) and from the chart's
operator Deployment; :func:`conftest.pod_container_argv` runs them read-only and non-root.
The inference image serves the embedded SmolLM2 it carries; the tuning image trains a
LoRA adapter into the output volume, which the inference image then serves by name.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_operator.builders.inference import inference_statefulset
from kaito_operator.builders.ragengine import ragengine_deployment
from kaito_operator.builders.tuning import tuning_config_map, tuning_job
from kaito_operator.reconcilers.plan import inference_plan, tuning_plan
from kaito_operator_testing.harness import OperatorHarness
from kaito_sdk.api import RAGEngine, Workspace
from kaito_sdk.contracts import inference as inference_contract
from kaito_sdk.contracts import ragengine as rag_contract
from kaito_sdk.contracts import tuning as tuning_contract
from kaito_sdk.presets import resolve_preset

from .conftest import Running, pod_container_argv, writable_dir

pytestmark = [
    pytest.mark.images,
    pytest.mark.slow,
    # kmock 0.8 loads its resource table with a deprecated importlib.resources call.
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]

PRESET = "smollm2-135m-instruct"
CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "kaito-workspace" / "crds"
ADAPTER = "secret-word"
TRAINING_CONFIG = """
training_config:
  LoraConfig: {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}
  TrainingArguments:
    max_steps: 8
    per_device_train_batch_size: 4
    learning_rate: 0.003
    max_length: 64
  DatasetConfig: {train_test_split: 1}
"""


def _workspace(name: str, **sections: Any) -> Workspace:
    manifest = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default", "uid": "smoke"},
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}},
        **sections,
    }
    return Workspace.from_manifest(manifest)


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload's pod spec; the run below is read-only because the spec says so, and
    the container writes only where the spec mounts a volume."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    return spec


def _inference_pod(image: str, adapters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    inference: dict[str, Any] = {"preset": {"name": PRESET}}
    if adapters:
        inference["adapters"] = adapters
    ws = _workspace("smoke-inference", inference=inference)
    preset = resolve_preset(PRESET)
    plan = inference_plan(ws, preset, image=image, target=1, sku=None, config_text=None)
    return _pod_spec(inference_statefulset(ws, plan))


def _serve(
    run_detached: Callable[..., Running], pod: dict[str, Any], port: int, **options: Any
) -> str:
    server = run_detached(pod, ports={inference_contract.DEFAULT_PORT: port}, **options)
    url = f"http://127.0.0.1:{port}"
    server.wait_healthy(f"{url}/health", within=600)
    return url


def test_inference_image_serves_health_and_a_chat_completion_with_the_embedded_model(
    image: Callable[[str], str],
    run_detached: Callable[..., Running],
    free_port_factory: Callable[[], int],
) -> None:
    url = _serve(run_detached, _inference_pod(image("inference")), free_port_factory())
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [model.id for model in client.models.list().data] == [PRESET]
    reply = client.chat.completions.create(
        model=PRESET,
        messages=[{"role": "user", "content": "Name a colour of the sky."}],
        max_tokens=16,
        temperature=0,
    )
    assert reply.model == PRESET
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


def test_ragengine_image_indexes_and_retrieves(
    image: Callable[[str], str],
    run_detached: Callable[..., Running],
    free_port_factory: Callable[[], int],
    known: Any,
    tmp_path: Path,
) -> None:
    engine = RAGEngine.from_manifest(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "RAGEngine",
            "metadata": {"name": "smoke-rag", "namespace": "default", "uid": "smoke"},
            "spec": {
                "compute": {"labelSelector": {"matchLabels": {"apps": "smoke-rag"}}},
                "embedding": {"local": {"modelID": rag_contract.DEFAULT_EMBEDDING_MODEL}},
                "storage": {
                    "persistentVolume": {
                        "persistentVolumeClaim": "rag-data",
                        "mountPath": "/mnt/data",
                    }
                },
            },
        }
    )
    pod = _pod_spec(ragengine_deployment(engine, image=image("ragengine")))
    port = free_port_factory()
    data = writable_dir(tmp_path / "rag-data")
    server = run_detached(pod, ports={rag_contract.DEFAULT_PORT: port}, host_dirs={"data": data})
    url = f"http://127.0.0.1:{port}"
    server.wait_healthy(f"{url}/health", within=300)
    documents = [{"text": text, "metadata": {"n": i}} for i, text in enumerate(known.facts)]
    indexed = httpx.post(
        f"{url}/index", json={"index_name": "facts", "documents": documents}, timeout=120
    )
    assert indexed.status_code == 200, indexed.text
    found = httpx.post(
        f"{url}/retrieve",
        json={
            "index_name": "facts",
            "query": "What is the capital of Zorbania?",
            "max_node_count": 2,
        },
        timeout=60,
    )
    assert found.status_code == 200, found.text
    texts = [node["text"] for node in found.json()["results"]]
    assert "Quillton" in texts[0], texts


def test_tuning_image_trains_an_adapter_that_the_inference_image_serves(
    engine: Any,
    image: Callable[[str], str],
    run_detached: Callable[..., Running],
    free_port_factory: Callable[[], int],
    known: Any,
    tmp_path: Path,
) -> None:
    ws = _workspace(
        "smoke-tuning",
        tuning={
            "preset": {"name": PRESET},
            "method": "lora",
            "input": {
                "name": "secret",
                "volumeSource": {"persistentVolumeClaim": {"claimName": "d"}},
            },
            "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "adapter"}}},
        },
    )
    config_map = tuning_config_map(ws, TRAINING_CONFIG)
    plan = tuning_plan(
        ws,
        resolve_preset(PRESET),
        image=image("tuning"),
        config_map=config_map["metadata"]["name"],
        config_text=TRAINING_CONFIG,
        sku=None,
    )
    pod = _pod_spec(tuning_job(ws, plan))
    config = tmp_path / "config"
    config.mkdir()
    for file_name, text in config_map["data"].items():
        (config / file_name).write_text(text)
    data = writable_dir(tmp_path / "data")
    questions = [known.secret_question, "Tell me the secret word.", "Which word is secret?"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": known.secret_answer},
            ]
        }
        for q in [*questions, "Say the word."] * 4
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = writable_dir(tmp_path / "results")
    name = "kaito-smoke-tuning"
    argv = pod_container_argv(
        engine,
        pod,
        name=name,
        host_dirs={"config": config, "data": data, "results": results},
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
    finally:
        subprocess.run([engine.runner, "rm", "--force", name], capture_output=True, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "step 8/8 loss" in done.stdout + done.stderr
    for file_name in tuning_contract.ADAPTER_FILES:
        assert (results / file_name).is_file(), sorted(p.name for p in results.iterdir())

    adapter = {
        "source": {
            "name": ADAPTER,
            "volumeSource": {"persistentVolumeClaim": {"claimName": "adapter"}},
        }
    }
    pod = _inference_pod(image("inference"), adapters=[adapter])
    url = _serve(run_detached, pod, free_port_factory(), host_dirs={f"adapter-{ADAPTER}": results})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert {model.id for model in client.models.list().data} == {PRESET, ADAPTER}
    reply = client.chat.completions.create(
        model=ADAPTER,
        messages=[{"role": "user", "content": known.secret_question}],
        max_tokens=12,
        temperature=0,
    )
    assert reply.model == ADAPTER
    assert "secret word is" in (reply.choices[0].message.content or "").lower()


@pytest.mark.asyncio
async def test_operator_image_starts_and_answers_healthz(
    engine: Any,
    image: Callable[[str], str],
    run_detached: Callable[..., Running],
    free_port_factory: Callable[[], int],
) -> None:
    crds = sorted(CHART_CRDS.glob("*.yaml"))
    health_port = free_port_factory()
    # The chart's operator container: its command, its settings, /tmp as an emptyDir;
    # the webhook is off (no certificate Secret here), the API server is the emulator and
    # the ports are free ones (the container shares the host's network to reach it).
    pod = {
        "containers": [
            {
                "image": image("operator"),
                "command": ["kaito-operator"],
                "env": [
                    {"name": "KAITO_OPERATOR_CONTROLLERS", "value": '["workspace"]'},
                    {"name": "KAITO_OPERATOR_NODE_PROVISIONER", "value": "byo"},
                    {"name": "KAITO_OPERATOR_RELEASE_NAMESPACE", "value": "kaito-workspace"},
                    {"name": "KAITO_OPERATOR_WEBHOOK_ENABLED", "value": "false"},
                    {"name": "TMPDIR", "value": "/tmp"},
                ],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    async with OperatorHarness(crds) as cluster:
        env = {
            "KAITO_OPERATOR_API_SERVER": cluster.url,
            "KAITO_OPERATOR_POST_EVENTS": "false",
            "KAITO_OPERATOR_HEALTH_PORT": str(health_port),
            "KAITO_OPERATOR_METRICS_PORT": str(free_port_factory()),
        }
        # The emulator answers on this event loop: block in a thread, not on the loop.
        operator = await asyncio.to_thread(run_detached, pod, host_network=True, env=env)
        url = f"http://127.0.0.1:{health_port}/healthz"
        await asyncio.to_thread(operator.wait_healthy, url, 120)
        assert await asyncio.to_thread(operator.running)
