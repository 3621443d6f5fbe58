"""kaito.sh/v1alpha1 beside v1beta1: Workspace and InferenceSet have one model and one
schema (conversion None); the v1alpha1 RAGEngine has its own model and schema, converted
by the operator's webhook (round trips: test_ragengine_conversion.py)."""

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
    RAGEngineV1Alpha1,
    Workspace,
    convert_manifest,
    dump_yaml,
    load_yaml,
    parse_manifest,
)
from kaito_sdk.crd import build_crd
from kaito_sdk.validation import validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = [Workspace, RAGEngine, InferenceSet]
SAME_SCHEMA = [Workspace, InferenceSet]

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
        assert KINDS["kaito.sh/v1beta1", model.api_info.kind] is model
    for model in SAME_SCHEMA:
        assert KINDS["kaito.sh/v1alpha1", model.api_info.kind] is model
    assert KINDS["kaito.sh/v1alpha1", "RAGEngine"] is RAGEngineV1Alpha1


def test_a_v1alpha1_ragengine_with_nested_storage_is_refused_with_the_field() -> None:
    alpha = {"apiVersion": "kaito.sh/v1alpha1", **MANIFESTS["RAGEngine"]}
    errors = validate_manifest(alpha)
    assert [error.path for error in errors] == ["spec.storage.persistentVolume"]
    with pytest.raises(ValueError, match=r"spec\.storage\.persistentVolume|persistentVolume"):
        RAGEngine.from_manifest(alpha)


def test_a_v1alpha1_ragengine_parses_into_the_storage_version() -> None:
    alpha = convert_manifest(
        {"apiVersion": "kaito.sh/v1beta1", **MANIFESTS["RAGEngine"]}, "kaito.sh/v1alpha1"
    )
    assert alpha["spec"]["storage"] == {"persistentVolumeClaim": "rag-data"}
    assert validate_manifest(alpha) == []
    obj = parse_manifest(alpha)
    assert isinstance(obj, RAGEngine)
    assert obj.to_manifest() == {"apiVersion": "kaito.sh/v1beta1", **MANIFESTS["RAGEngine"]}
    assert RAGEngineV1Alpha1.from_manifest(alpha).to_manifest() == alpha


@pytest.mark.parametrize("kind", ["InferenceSet", "Workspace"])
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


@pytest.mark.parametrize("model", SAME_SCHEMA, ids=lambda m: m.api_info.kind)
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
    assert "deprecated" not in alpha
    # Not shared objects: editing one version's schema must not change the other.
    alpha["schema"]["openAPIV3Schema"]["description"] = "changed"
    assert beta["schema"]["openAPIV3Schema"]["description"] != "changed"


def test_ragengine_crd_has_a_schema_per_version_and_a_conversion_webhook() -> None:
    spec = build_crd(RAGEngine)["spec"]
    alpha, beta = spec["versions"]
    assert (alpha["name"], alpha["storage"], beta["name"], beta["storage"]) == (
        "v1alpha1",
        False,
        "v1beta1",
        True,
    )
    alpha_spec = alpha["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    beta_spec = beta["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(alpha_spec["storage"]["properties"]) == {"persistentVolumeClaim", "mountPath"}
    assert set(beta_spec["storage"]["properties"]) == {"persistentVolume", "vectorDB"}
    assert set(alpha_spec) - set(beta_spec) == {"queryServiceName", "indexServiceName"}
    assert set(beta_spec) - set(alpha_spec) == set()
    assert alpha["subresources"] == beta["subresources"]
    assert alpha["additionalPrinterColumns"] == beta["additionalPrinterColumns"]
    # As in KAITO, only the v1alpha1 RAGEngine is deprecated (with a warning per request).
    assert alpha["deprecated"] is True
    assert "use kaito.sh/v1beta1 RAGEngine" in alpha["deprecationWarning"]
    assert "deprecated" not in beta
    assert spec["conversion"] == {
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {
                "service": {
                    "namespace": "kaito-ragengine",
                    "name": "kaito-ragengine-webhook",
                    "path": "/convert",
                    "port": 9443,
                }
            },
        },
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_as_v1alpha1_too(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not document or document.get("apiVersion") != "kaito.sh/v1beta1":
            continue
        if document["kind"] == "RAGEngine":
            alpha = convert_manifest(document, "kaito.sh/v1alpha1")
            assert RAGEngineV1Alpha1.from_manifest(alpha).to_manifest() == alpha
            assert parse_manifest(alpha).to_manifest() == document
            continue
        alpha = {**document, "apiVersion": "kaito.sh/v1alpha1"}
        assert parse_manifest(alpha).to_manifest() == alpha
