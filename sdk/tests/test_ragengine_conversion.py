"""RAGEngine v1alpha1 <-> v1beta1 conversion: every field, both directions, exact round trips."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from kaito_sdk.api import (
    ConversionError,
    RAGEngine,
    RAGEngineV1Alpha1,
    convert_manifest,
    parse_manifest,
    to_v1alpha1,
    to_v1beta1,
)
from kaito_sdk.api.ragengine_v1alpha1 import V1ALPHA1_FIELDS, V1BETA1_FIELDS

ALPHA = "kaito.sh/v1alpha1"
BETA = "kaito.sh/v1beta1"

STATUS = {
    "workerNodes": ["node-1"],
    "conditions": [
        {
            "type": "ServiceReady",
            "status": "True",
            "reason": "DeploymentReady",
            "message": "ready",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 2,
        }
    ],
}
COMMON_SPEC = {
    "compute": {
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"apps": "rag"}},
    },
    "embedding": {
        "local": {
            "modelID": "BAAI/bge-small-en-v1.5",
            "imagePullSecret": "pull",
            "modelAccessSecret": "hf-token",
        }
    },
    "inferenceService": {
        "url": "http://phi.default.svc/v1/chat/completions",
        "accessSecret": "llm-token",
        "contextWindowSize": 4096,
    },
    "guardrails": {"enabled": True, "configMapRef": {"name": "rails"}},
}
METADATA = {
    "name": "rag",
    "namespace": "default",
    "labels": {"team": "search"},
    "annotations": {"kaito.sh/runtime": "keep-me"},
    "uid": "b1c2",
    "resourceVersion": "42",
    "generation": 2,
}
#: Every v1alpha1 field set.
FULL_ALPHA: dict[str, Any] = {
    "apiVersion": ALPHA,
    "kind": "RAGEngine",
    "metadata": METADATA,
    "spec": {
        **COMMON_SPEC,
        "storage": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"},
        "queryServiceName": "rag-query",
        "indexServiceName": "rag-index",
    },
    "status": STATUS,
}
#: Every v1beta1 field set.
FULL_BETA: dict[str, Any] = {
    "apiVersion": BETA,
    "kind": "RAGEngine",
    "metadata": METADATA,
    "spec": {
        **COMMON_SPEC,
        "storage": {
            "persistentVolume": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"},
            "vectorDB": {"engine": "qdrant", "url": "http://qdrant:6333", "accessSecret": "db"},
        },
    },
    "status": STATUS,
}


def _annotation(manifest: dict[str, Any], name: str) -> Any:
    return json.loads(manifest["metadata"]["annotations"][name])


def test_v1alpha1_to_v1beta1_nests_the_storage_and_keeps_the_service_names() -> None:
    original = copy.deepcopy(FULL_ALPHA)
    beta = convert_manifest(FULL_ALPHA, BETA)
    assert original == FULL_ALPHA  # the input is untouched
    assert beta["apiVersion"] == BETA
    assert beta["spec"]["storage"] == {
        "persistentVolume": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"}
    }
    assert "queryServiceName" not in beta["spec"]
    assert _annotation(beta, V1ALPHA1_FIELDS) == {
        "queryServiceName": "rag-query",
        "indexServiceName": "rag-index",
    }
    assert beta["metadata"]["annotations"]["kaito.sh/runtime"] == "keep-me"
    for field in COMMON_SPEC:
        assert beta["spec"][field] == FULL_ALPHA["spec"][field]
    assert beta["status"] == STATUS
    assert RAGEngine.from_manifest(beta).to_manifest() == beta  # valid v1beta1
    assert convert_manifest(beta, ALPHA) == FULL_ALPHA


def test_v1beta1_to_v1alpha1_flattens_the_storage_and_keeps_the_vector_db() -> None:
    alpha = convert_manifest(FULL_BETA, ALPHA)
    assert alpha["spec"]["storage"] == {
        "persistentVolumeClaim": "rag-data",
        "mountPath": "/mnt/index",
    }
    assert _annotation(alpha, V1BETA1_FIELDS) == {
        "storage": {
            "vectorDB": {"engine": "qdrant", "url": "http://qdrant:6333", "accessSecret": "db"}
        }
    }
    assert alpha["status"] == STATUS
    assert RAGEngineV1Alpha1.from_manifest(alpha).to_manifest() == alpha  # valid v1alpha1
    assert convert_manifest(alpha, BETA) == FULL_BETA


@pytest.mark.parametrize(
    "alpha_spec",
    [
        {"storage": {"mountPath": "/only/a/path"}},  # no claim: v1beta1 cannot hold it
        {"storage": {}},
        {"storage": {"persistentVolumeClaim": "claim"}},
        {"queryServiceName": "q"},
        {},
    ],
    ids=["mount-path-only", "empty-storage", "claim-only", "query-service-only", "none"],
)
def test_every_v1alpha1_storage_shape_round_trips_exactly(alpha_spec: dict[str, Any]) -> None:
    alpha = {
        "apiVersion": ALPHA,
        "kind": "RAGEngine",
        "metadata": {"name": "rag"},
        "spec": {"embedding": {"remote": {"url": "http://embed/"}}, **alpha_spec},
    }
    beta = convert_manifest(alpha, BETA)
    RAGEngine.from_manifest(beta)  # always a valid v1beta1 object
    assert convert_manifest(beta, ALPHA) == alpha


@pytest.mark.parametrize(
    "storage",
    [
        {"vectorDB": {"engine": "qdrant", "url": "http://q"}},
        {"persistentVolume": {"persistentVolumeClaim": "claim"}},
        {},
        None,
    ],
    ids=["vector-db-only", "volume-only", "empty", "none"],
)
def test_every_v1beta1_storage_shape_round_trips_exactly(storage: dict[str, Any] | None) -> None:
    spec: dict[str, Any] = {"embedding": {"remote": {"url": "http://embed/"}}}
    if storage is not None:
        spec["storage"] = storage
    beta = {"apiVersion": BETA, "kind": "RAGEngine", "metadata": {"name": "r"}, "spec": spec}
    alpha = convert_manifest(beta, ALPHA)
    RAGEngineV1Alpha1.from_manifest(alpha)
    assert convert_manifest(alpha, BETA) == beta


def test_an_edit_in_the_other_version_survives_beside_the_kept_fields() -> None:
    alpha = convert_manifest(FULL_BETA, ALPHA)
    alpha["spec"]["storage"]["persistentVolumeClaim"] = "bigger-claim"
    alpha["spec"]["queryServiceName"] = "new-query"
    beta = convert_manifest(alpha, BETA)
    assert beta["spec"]["storage"]["persistentVolume"]["persistentVolumeClaim"] == "bigger-claim"
    assert beta["spec"]["storage"]["vectorDB"] == FULL_BETA["spec"]["storage"]["vectorDB"]
    assert _annotation(beta, V1ALPHA1_FIELDS) == {"queryServiceName": "new-query"}


def test_typed_conversions_agree_with_the_manifest_ones() -> None:
    alpha = RAGEngineV1Alpha1.from_manifest(FULL_ALPHA)
    beta = to_v1beta1(alpha)
    assert beta.to_manifest() == convert_manifest(FULL_ALPHA, BETA)
    assert to_v1alpha1(beta) == alpha


def test_other_kinds_change_only_their_api_version() -> None:
    workspace = {
        "apiVersion": BETA,
        "kind": "Workspace",
        "metadata": {"name": "w"},
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    assert convert_manifest(workspace, ALPHA) == {**workspace, "apiVersion": ALPHA}
    assert convert_manifest(FULL_BETA, BETA) == FULL_BETA


@pytest.mark.parametrize(
    ("manifest", "target", "message"),
    [
        (FULL_BETA, "kaito.sh/v2", "desiredAPIVersion: 'kaito.sh/v2'"),
        ({**FULL_BETA, "apiVersion": "v1"}, ALPHA, "apiVersion: 'v1'"),
        (
            {**FULL_ALPHA, "metadata": {"annotations": {V1BETA1_FIELDS: "{not json"}}},
            BETA,
            f"metadata.annotations[{V1BETA1_FIELDS}]: not JSON",
        ),
        (
            {**FULL_BETA, "metadata": {"annotations": {V1ALPHA1_FIELDS: "[1]"}}},
            ALPHA,
            f"metadata.annotations[{V1ALPHA1_FIELDS}]: must be a JSON object",
        ),
    ],
    ids=["unknown-target", "unknown-source", "broken-annotation", "annotation-not-object"],
)
def test_what_cannot_be_converted_is_refused_naming_the_field(
    manifest: dict[str, Any], target: str, message: str
) -> None:
    with pytest.raises(ConversionError) as caught:
        convert_manifest(manifest, target)
    assert str(caught.value).startswith(message)


def test_the_v1beta1_model_takes_a_v1alpha1_manifest_as_parse_manifest_does() -> None:
    """``RAGEngine.from_manifest`` accepts what KAITO's v1alpha1 RAGEngine accepts and
    gives the object ``parse_manifest`` gives (the API server's stored form)."""
    got = RAGEngine.from_manifest(copy.deepcopy(FULL_ALPHA))
    assert got == parse_manifest(copy.deepcopy(FULL_ALPHA))
    assert got.api_version == "kaito.sh/v1beta1"
    assert got.spec.storage is not None
    assert got.spec.storage.persistent_volume is not None
    assert _annotation(got.to_manifest(), V1ALPHA1_FIELDS) == {
        "indexServiceName": FULL_ALPHA["spec"]["indexServiceName"],
        "queryServiceName": FULL_ALPHA["spec"]["queryServiceName"],
    }
    with pytest.raises(ValidationError, match="storage"):
        RAGEngine.from_manifest({**FULL_ALPHA, "spec": {**FULL_ALPHA["spec"], "storage": 3}})
