"""kaito.sh/v1alpha1 beside v1beta1 on a real apiserver (Kubernetes 1.20): objects written
in either version are stored as v1beta1 (conversion None), every CRD stores v1beta1 only,
and the v1alpha1 RAGEngine is deprecated with KAITO's warning, which kubectl prints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

WARNING = "kaito.sh/v1alpha1 RAGEngine is deprecated; use kaito.sh/v1beta1 RAGEngine"


def test_both_versions_are_served_and_v1beta1_is_stored(
    operator: Any, ragengine_operator: Any, cluster: Any, namespace: str, cpu_workspace: Any
) -> None:
    rag = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "RAGEngine",
        "metadata": {"name": "rag", "namespace": namespace},
        "spec": {"embedding": {"remote": {"url": "http://embedder.example.com/embed"}}},
    }
    applied = cluster.apply(rag)
    assert applied.returncode == 0, applied.stderr
    assert WARNING in applied.stderr
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/ragengines/rag")
    assert stored["apiVersion"] == "kaito.sh/v1beta1"
    assert stored["spec"] == rag["spec"]

    workspace = cpu_workspace(namespace, "alpha", version="v1alpha1")
    applied = cluster.apply(json.dumps(workspace))
    assert applied.returncode == 0, applied.stderr
    assert "deprecated" not in applied.stderr
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/alpha")
    assert stored["apiVersion"] == "kaito.sh/v1beta1"
    assert stored["inference"] == workspace["inference"]

    for plural in ("workspaces", "inferencesets", "ragengines"):
        crd = cluster.get(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.kaito.sh"
        )
        assert crd["status"]["storedVersions"] == ["v1beta1"], plural
        assert [v["name"] for v in crd["spec"]["versions"] if v["served"]] == [
            "v1alpha1",
            "v1beta1",
        ]
    for kind, name in (("ragengine", "rag"), ("workspace", "alpha")):
        deleted = cluster.kubectl("delete", kind, name, "-n", namespace, "--wait=false")
        assert deleted.returncode == 0, deleted.stderr
