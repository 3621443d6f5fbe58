"""The whole mission in one test, on a real control plane (Kubernetes 1.20).

``kubectl apply -f examples/workspace-smollm2-cpu.yaml``: the operator (as the chart's
ServiceAccount) writes the StatefulSet, the real StatefulSet controller makes the pod,
the real scheduler binds it to the test's Node, and the node agent runs the pod's own
container command (the installed ``kaito-inference serve`` with the pod's arguments and
env) as a local process, marking the pod Ready from its real readiness path. The
Workspace reports ``InferenceReady``, and the official ``openai`` client gets a chat
completion from that process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

pytestmark = pytest.mark.k8s

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workspace-smollm2-cpu.yaml"


def test_cpu_example_serves_a_chat_completion(
    operator: Any, cluster: Any, node: Any, eventually: Any, tmp_path: Path
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    preset = manifest["inference"]["preset"]["name"]
    node.register(manifest["resource"]["labelSelector"]["matchLabels"])
    applied = cluster.kubectl("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    pod = node.bound_pod(namespace, f"kaito.sh/workspace={name}")
    process, port = node.serve(pod, tmp_path)
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
