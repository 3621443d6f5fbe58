"""KAITO's v1alpha1 RAGEngine (flat storage) on a real apiserver (Kubernetes 1.20), through
the operator's conversion webhook: the operator points the CRD's conversion webhook where
its admission webhook is reached (here loopback, as the conftest configures it); a
v1alpha1 object is stored as v1beta1 with nested storage, reads back as v1alpha1
identical, an update in v1alpha1 reaches the stored object, and the Deployment the
operator builds mounts the claim."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ragengines.kaito.sh"
WARNING = "kaito.sh/v1alpha1 RAGEngine is deprecated; use kaito.sh/v1beta1 RAGEngine"


def v1alpha1_ragengine(namespace: str) -> dict[str, Any]:
    """A v1alpha1 RAGEngine as a KAITO user wrote it: flat storage, service names."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "RAGEngine",
        "metadata": {"name": "rag-alpha", "namespace": namespace},
        "spec": {
            "embedding": {"remote": {"url": "http://embedder.example.com/embed"}},
            "storage": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"},
            "queryServiceName": "rag-query",
            "indexServiceName": "rag-index",
        },
    }


def test_v1alpha1_ragengine_with_flat_storage_converts_both_ways(
    ragengine_operator: Any, cluster: Any, namespace: str, eventually: Any
) -> None:
    port = ragengine_operator.env["KAITO_OPERATOR_WEBHOOK_PORT"]
    url = f"https://127.0.0.1:{port}/convert"

    def pointed_at_operator() -> dict[str, Any] | None:
        conversion = (cluster.get(CRD) or {}).get("spec", {}).get("conversion", {})
        client_config: dict[str, Any] = conversion.get("webhook", {}).get("clientConfig", {})
        return client_config if client_config.get("url") == url else None

    try:
        client_config = eventually(pointed_at_operator, what="the CRD's conversion webhook")
    except pytest.fail.Exception:
        conversion = (cluster.get(CRD) or {}).get("spec", {}).get("conversion")
        pytest.fail(f"CRD conversion {conversion}; operator log:\n{ragengine_operator.logs()}")
    ca_bundle = base64.b64encode(cluster.local.ca_file.read_bytes()).decode()
    assert client_config["caBundle"] == ca_bundle

    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "rag-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.send("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", claim)

    alpha = v1alpha1_ragengine(namespace)
    # ``kubectl create``: no last-applied annotation, so the object is exactly what we wrote.
    created = cluster.kubectl("create", "-f", "-", stdin=json.dumps(alpha))
    assert created.returncode == 0, created.stderr
    assert WARNING in created.stderr

    path = f"namespaces/{namespace}/ragengines/rag-alpha"
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/{path}")
    assert stored["apiVersion"] == "kaito.sh/v1beta1"
    assert stored["spec"]["storage"] == {
        "persistentVolume": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"}
    }
    assert "queryServiceName" not in stored["spec"]
    kept = json.loads(stored["metadata"]["annotations"]["kaito.sh/v1alpha1-fields"])
    assert kept == {"queryServiceName": "rag-query", "indexServiceName": "rag-index"}

    again = cluster.get(f"/apis/kaito.sh/v1alpha1/{path}")
    assert again["apiVersion"] == "kaito.sh/v1alpha1"
    assert again["spec"] == alpha["spec"]
    assert "kaito.sh/v1alpha1-fields" not in (again["metadata"].get("annotations") or {})
    listed = cluster.get(f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/ragengines")
    assert [item["spec"] for item in listed["items"]] == [alpha["spec"]]

    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/rag-alpha"

    def mounted() -> tuple[Any, Any] | None:
        deployment = cluster.get(deployment_path)
        if deployment is None:
            return None
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        return pod.get("volumes"), container.get("volumeMounts")

    volumes, mounts = eventually(mounted, what="the RAGEngine's Deployment")
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "rag-data"}} in volumes
    assert {"name": "data", "mountPath": "/mnt/index"} in mounts

    # An update written in v1alpha1 reaches the stored v1beta1 object and the Deployment.
    cluster.send(
        "PATCH",
        f"/apis/kaito.sh/v1alpha1/{path}",
        {"spec": {"storage": {"mountPath": "/mnt/moved"}}},
        content_type="application/merge-patch+json",
    )
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/{path}")
    assert stored["spec"]["storage"]["persistentVolume"]["mountPath"] == "/mnt/moved"
    eventually(
        lambda: {"name": "data", "mountPath": "/mnt/moved"} in (mounted() or (None, []))[1],
        what="the Deployment mounting the claim at the new path",
    )

    deleted = cluster.kubectl("delete", "ragengine", "rag-alpha", "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    assert ragengine_operator.rbac_denials() == []
