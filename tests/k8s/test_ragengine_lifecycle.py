"""A RAGEngine on a real control plane (Kubernetes 1.20), its operator as the ragengine
chart's ServiceAccount: admission, the Deployment through the real Deployment and
ReplicaSet controllers, the pod bound by the real scheduler, status from the pod the
node agent runs, and deletion by the real garbage collector."""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytestmark = pytest.mark.k8s


def ragengine(namespace: str) -> dict[str, Any]:
    """A CPU RAGEngine embedding locally and answering through a Workspace's Service."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "RAGEngine",
        "metadata": {"name": "rag", "namespace": namespace},
        "spec": {
            "compute": {"labelSelector": {"matchLabels": {"apps": "rag-e2e"}}},
            "embedding": {"local": {"modelID": "sentence-transformers/all-MiniLM-L6-v2"}},
            "inferenceService": {
                "url": f"http://workspace-smollm2.{namespace}.svc.cluster.local/v1/chat/completions",
                "contextWindowSize": 2048,
            },
        },
    }


def test_ragengine_ready_then_collected(
    ragengine_operator: Any, cluster: Any, node: Any, namespace: str, eventually: Any
) -> None:
    invalid = copy.deepcopy(ragengine(namespace))
    invalid["spec"]["inferenceService"]["url"] = "ftp://nowhere"
    refused = cluster.apply(invalid, "--validate=false")
    assert refused.returncode != 0
    assert 'admission webhook "validation.ragengine.kaito.sh" denied' in refused.stderr, (
        refused.stderr
    )
    assert "spec.inferenceService.url" in refused.stderr, refused.stderr

    node.register({"apps": "rag-e2e"})
    applied = cluster.apply(ragengine(namespace))
    assert applied.returncode == 0, applied.stderr
    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/rag"
    deployment = eventually(lambda: cluster.get(deployment_path), what="the Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "RAGEngine"
    pod = node.bound_pod(namespace, "kaito.sh/ragengine=rag")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    node.run(pod)

    def service_ready() -> dict[str, Any] | None:
        engine = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/ragengines/rag")
        found = {c["type"]: c for c in ((engine or {}).get("status") or {}).get("conditions", [])}
        ready = found.get("RAGEngineSucceeded")
        return ready if ready and ready["status"] == "True" else None

    eventually(service_ready, what="RAGEngineSucceeded True")

    deleted = cluster.kubectl("delete", "ragengine", "rag", "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    eventually(lambda: cluster.get(deployment_path) is None, what="the Deployment collected")
    eventually(
        lambda: node.finish_deletions(namespace, "kaito.sh/ragengine=rag") == 0,
        what="the pod collected",
    )
    assert ragengine_operator.rbac_denials() == []
