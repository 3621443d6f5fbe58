"""kaito.sh/v1alpha1 beside v1beta1: one model per kind, one schema per CRD, conversion None."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_sdk.api import (
    KINDS,
    InferenceSet,
    KubeObject,
    RAGEngine,
    Workspace,
    dump_yaml,
    load_yaml,
    parse_manifest,
)
from kaito_sdk.crd import build_crd
from kaito_sdk.validation import validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = [Workspace, RAGEngine, InferenceSet]

MANIFESTS: dict[str, dict[str, Any]] = {
    "Workspace": {
        "kind": "Workspace",
        "metadata": {"name": "phi", "namespace": "default"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi"}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    },
    "RAGEngine": {
        "kind": "RAGEngine",
        "metadata": {"name": "rag", "namespace": "default"},
        "spec": {
            "embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}},
            "storage": {"persistentVolume": {"persistentVolumeClaim": "rag-data"}},
        },
    },
    "InferenceSet": {
        "kind": "InferenceSet",
        "metadata": {"name": "phi-set", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "labelSelector": {"matchLabels": {"apps": "phi"}},
            "template": {
                "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                "inference": {"preset": {"name": "phi-4-mini-instruct"}},
            },
        },
    },
}


def test_every_kind_is_known_in_both_versions() -> None:
    assert set(KINDS) == {
        (version, model.api_info.kind)
        for model in MODELS
        for version in ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
    }
    for model in MODELS:
        assert KINDS["kaito.sh/v1alpha1", model.api_info.kind] is model
        assert KINDS["kaito.sh/v1beta1", model.api_info.kind] is model


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_v1alpha1_round_trips_and_converts_by_apiversion_alone(kind: str) -> None:
    alpha = {"apiVersion": "kaito.sh/v1alpha1", **MANIFESTS[kind]}
    obj = parse_manifest(alpha)
    assert obj.api_version == "kaito.sh/v1alpha1"
    assert obj.to_manifest() == alpha
    (again,) = load_yaml(dump_yaml(obj))
    assert again == obj
    # What the API server does with conversion None: rewrite apiVersion, keep the rest.
    beta = parse_manifest({**alpha, "apiVersion": "kaito.sh/v1beta1"})
    assert beta.to_manifest() == {**alpha, "apiVersion": "kaito.sh/v1beta1"}
    assert beta.model_copy(update={"api_version": "kaito.sh/v1alpha1"}) == obj
    assert validate_manifest(alpha) == validate_manifest(beta.to_manifest()) == []


def test_a_new_object_defaults_to_the_storage_version() -> None:
    for kind, manifest in MANIFESTS.items():
        model = KINDS["kaito.sh/v1beta1", kind]
        body = {k: v for k, v in manifest.items() if k != "kind"}
        assert model.model_validate(body).api_version == "kaito.sh/v1beta1"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.api_info.kind)
def test_crd_serves_both_versions_with_one_schema_and_stores_v1beta1(
    model: type[KubeObject],
) -> None:
    spec = build_crd(model)["spec"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert list(versions) == ["v1alpha1", "v1beta1"]
    assert [v["name"] for v in spec["versions"] if v["storage"]] == ["v1beta1"]
    assert all(v["served"] for v in spec["versions"])
    alpha, beta = versions["v1alpha1"], versions["v1beta1"]
    assert alpha["schema"] == beta["schema"]
    assert alpha["subresources"] == beta["subresources"]
    assert alpha["additionalPrinterColumns"] == beta["additionalPrinterColumns"]
    assert spec["conversion"] == {"strategy": "None"}
    assert "deprecated" not in beta
    # As in KAITO, only the v1alpha1 RAGEngine is deprecated (with a warning per request).
    if model is RAGEngine:
        assert alpha["deprecated"] is True
        assert "use kaito.sh/v1beta1 RAGEngine" in alpha["deprecationWarning"]
    else:
        assert "deprecated" not in alpha
    # Not shared objects: editing one version's schema must not change the other.
    alpha["schema"]["openAPIV3Schema"]["description"] = "changed"
    assert beta["schema"]["openAPIV3Schema"]["description"] != "changed"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_as_v1alpha1_too(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not document or document.get("apiVersion") != "kaito.sh/v1beta1":
            continue
        alpha = {**document, "apiVersion": "kaito.sh/v1alpha1"}
        assert parse_manifest(alpha).to_manifest() == alpha
