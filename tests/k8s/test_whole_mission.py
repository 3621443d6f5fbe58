"""The whole mission in one test, on a real control plane (Kubernetes 1.20).

``kubectl apply -f examples/workspace-smollm2-cpu.yaml``: the operator (as the chart's
ServiceAccount) writes the StatefulSet, the real StatefulSet controller makes the pod,
the real scheduler binds it to the test's Node, and the node agent runs the pod's own
container command (the installed ``kaito-inference serve`` with the pod's arguments and
env) as a local process, marking the pod Ready from its real readiness path. The
Workspace reports ``InferenceReady``, and the official ``openai`` client gets a chat
completion from that process. Then a RAGEngine (its operator as the ragengine chart's
ServiceAccount) pointing at the Workspace's Service runs the same way (``kaito-ragengine
serve`` with the pod's env; the Service's DNS name resolves to the inference process, as
cluster DNS and the Service proxy would), indexes documents and answers a RAG chat
through the inference process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

pytestmark = pytest.mark.k8s

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workspace-smollm2-cpu.yaml"
FACTS = [
    "The capital of Zorbania is Quillton, a harbour city famous for blue lanterns.",
    "Zorbania's national dish is fried kelp with honey.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]


def condition_true(cluster: Any, path: str, kind: str) -> Any:
    """A check for ``eventually``: the object at ``path`` has condition ``kind`` True."""

    def check() -> bool:
        found = {
            c["type"]: c
            for c in ((cluster.get(path) or {}).get("status") or {}).get("conditions", [])
        }
        return bool(found.get(kind, {}).get("status") == "True")

    return check


def rag_chat(
    ragengine_operator: Any,
    cluster: Any,
    node: Any,
    eventually: Any,
    workdir: Path,
    *,
    workspace: str,
    inference_port: int,
    model: str,
) -> None:
    """A RAGEngine answering through the Workspace's Service: index, then a RAG chat."""
    service_host = f"{workspace}.default.svc.cluster.local"
    engine = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "RAGEngine",
        "metadata": {"name": "rag-mission", "namespace": "default"},
        "spec": {
            "compute": {"labelSelector": {"matchLabels": {"rag": "e2e"}}},
            "embedding": {"local": {"modelID": "sentence-transformers/all-MiniLM-L6-v2"}},
            "inferenceService": {
                "url": f"http://{service_host}/v1/chat/completions",
                "contextWindowSize": 2048,
            },
        },
    }
    applied = cluster.apply(engine)
    assert applied.returncode == 0, applied.stderr
    pod = node.bound_pod("default", "kaito.sh/ragengine=rag-mission")
    services = {service_host: f"127.0.0.1:{inference_port}"}
    process, port = node.serve(pod, workdir, services=services)
    try:
        path = "/apis/kaito.sh/v1beta1/namespaces/default/ragengines/rag-mission"
        eventually(condition_true(cluster, path, "RAGEngineSucceeded"), what="RAGEngine ready")
        documents = [{"text": text, "metadata": {"n": i}} for i, text in enumerate(FACTS)]
        indexed = httpx.post(
            f"http://127.0.0.1:{port}/index",
            json={"index_name": "facts", "documents": documents},
            timeout=120,
        )
        assert indexed.status_code == 200, indexed.text
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is the capital of Zorbania?"}],
            max_tokens=24,
            temperature=0,
            extra_body={"index_name": "facts"},
        )
        answer = reply.choices[0].message.content or ""
        assert "quillton" in answer.lower(), answer
        assert (reply.model_extra or {})["source_nodes"][0]["text"] == FACTS[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        cluster.kubectl("delete", "ragengine", "rag-mission", "-n", "default", "--wait=false")
        eventually(
            lambda: node.finish_deletions("default", "kaito.sh/ragengine=rag-mission") == 0,
            what="the RAG pod collected",
        )
    assert ragengine_operator.rbac_denials() == []


def test_cpu_example_serves_a_chat_completion(
    operator: Any, ragengine_operator: Any, cluster: Any, node: Any, eventually: Any, tmp_path: Path
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    preset = manifest["inference"]["preset"]["name"]
    node.register({**manifest["resource"]["labelSelector"]["matchLabels"], "rag": "e2e"})
    applied = cluster.kubectl("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    pod = node.bound_pod(namespace, f"kaito.sh/workspace={name}")
    process, port = node.serve(pod, tmp_path / "inference")
    try:

        def inference_ready() -> bool:
            ws = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/{name}")
            found = {c["type"]: c for c in ((ws or {}).get("status") or {}).get("conditions", [])}
            return bool(found.get("InferenceReady", {}).get("status") == "True")

        eventually(inference_ready, what="InferenceReady True")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        assert preset in {model.id for model in client.models.list()}
        reply = client.chat.completions.create(
            model=preset,
            messages=[{"role": "user", "content": "Say hello in one short sentence."}],
            max_tokens=16,
            temperature=0,
        )
        text = reply.choices[0].message.content or ""
        assert text.strip(), reply
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
        rag_chat(
            ragengine_operator,
            cluster,
            node,
            eventually,
            tmp_path / "ragengine",
            workspace=name,
            inference_port=port,
            model=preset,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        deleted = cluster.kubectl("delete", "-f", str(EXAMPLE), "--wait=false")
        assert deleted.returncode == 0, deleted.stderr
        eventually(
            lambda: node.finish_deletions(namespace, f"kaito.sh/workspace={name}") == 0,
            what="the pod collected",
        )
