"""Every RAGEngine admission rule, each with failing and passing cases (see the Workspace
rule tests for the case format)."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_sdk.api import RAGEngine
from kaito_sdk.validation import check_manifest, validate, validate_manifest


def case(change: dict[str, Any], path: str | None, fragment: str = "", *, id: str) -> Any:
    """One rule check: ``path`` None means the patched manifest must be valid."""
    return pytest.param(change, path, fragment, id=id)


def local_image(image: str) -> dict[str, Any]:
    return {"spec": {"embedding": {"local": {"modelID": None, "image": image}}}}


def remote_url(url: str) -> dict[str, Any]:
    return {"spec": {"embedding": {"local": None, "remote": {"url": url}}}}


def service(**fields: Any) -> dict[str, Any]:
    return {
        "spec": {
            "inferenceService": {"url": "http://llm.default.svc/v1/chat/completions", **fields}
        }
    }


CASES = [
    case({"metadata": {"name": "RAG"}}, "metadata.name", "DNS-1123 label", id="name-bad"),
    # exactly one of local and remote embedding
    case(
        {"spec": {"embedding": {"remote": {"url": "https://e.example.com"}}}},
        "spec.embedding",
        "both are set",
        id="embedding-both",
    ),
    case(
        {"spec": {"embedding": {"local": None}}},
        "spec.embedding",
        "neither is set",
        id="embedding-none",
    ),
    case(remote_url("https://embed.example.com/embed"), None, id="embedding-remote-ok"),
    # local: image XOR modelID, image is repo/name:tag
    case(
        {"spec": {"embedding": {"local": {"image": "ghcr.io/org/bge:1"}}}},
        "spec.embedding.local",
        "exactly one of image or modelID",
        id="local-both",
    ),
    case(
        {"spec": {"embedding": {"local": {"modelID": None}}}},
        "spec.embedding.local",
        "exactly one of image or modelID",
        id="local-none",
    ),
    case(local_image("bge"), "spec.embedding.local.image", "repo/name:tag", id="image-bare"),
    case(local_image("org/bge"), "spec.embedding.local.image", "repo/name:tag", id="image-no-tag"),
    case(local_image("Org/BGE:1"), "spec.embedding.local.image", "repo/name:tag", id="image-upper"),
    case(local_image("org/bge:v1.5"), None, id="image-ok"),
    case(local_image("ghcr.io/org/models/bge:2024-06"), None, id="image-registry-ok"),
    case(local_image("localhost:5000/org/bge:1"), None, id="image-registry-port-ok"),
    case(
        {"spec": {"embedding": {"local": {"imagePullSecret": "Bad_Secret"}}}},
        "spec.embedding.local.imagePullSecret",
        "DNS-1123",
        id="local-secret-bad",
    ),
    # URLs parse
    case(
        remote_url("not a url"),
        "spec.embedding.remote.url",
        "not a valid URL",
        id="remote-url-garbage",
    ),
    case(
        remote_url("ftp://e.example.com/x"),
        "spec.embedding.remote.url",
        "not a valid URL",
        id="remote-url-ftp",
    ),
    case(
        remote_url("http://[::1/x"),
        "spec.embedding.remote.url",
        "not a valid URL",
        id="remote-url-bracket",
    ),
    case(
        remote_url("http://e.example.com:99999/"),
        "spec.embedding.remote.url",
        "not a valid URL",
        id="remote-url-port",
    ),
    case(
        remote_url("http://embeddings.default.svc.cluster.local:8080/embed"),
        None,
        id="remote-url-in-cluster-ok",
    ),
    # inferenceService: contextWindowSize > 0, URL parses
    case(service(), "spec.inferenceService.contextWindowSize", "greater than 0", id="ctx-missing"),
    case(
        service(contextWindowSize=0),
        "spec.inferenceService.contextWindowSize",
        "greater than 0",
        id="ctx-0",
    ),
    case(
        service(contextWindowSize=-5),
        "spec.inferenceService.contextWindowSize",
        "got -5",
        id="ctx-negative",
    ),
    case(service(contextWindowSize=8192), None, id="ctx-ok"),
    case(
        service(contextWindowSize=8192, url="llm:80"),
        "spec.inferenceService.url",
        "not a valid URL",
        id="service-url-bad",
    ),
    case(
        service(contextWindowSize=8192, accessSecret="llm-token"),
        None,
        id="service-secret-ok",
    ),
    # compute: the same resource rules as a Workspace
    case(
        {
            "spec": {
                "compute": {
                    "instanceType": "m5.large",
                    "labelSelector": {"matchLabels": {"a": "b"}},
                }
            }
        },
        "spec.compute.instanceType",
        "not in the GPU SKU catalog",
        id="compute-sku-bad",
    ),
    case(
        {
            "spec": {
                "compute": {
                    "labelSelector": {
                        "matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]
                    }
                }
            }
        },
        "spec.compute.labelSelector.matchExpressions[0].operator",
        "only 'In'",
        id="compute-selector-bad",
    ),
    case(
        {
            "spec": {
                "compute": {
                    "instanceType": "Standard_NV36ads_A10_v5",
                    "labelSelector": {"matchLabels": {"a": "b"}},
                }
            }
        },
        None,
        id="compute-ok",
    ),
    # storage
    case(  # KAITO's webhook admits any engine name (milvus in its examples): so do we
        {"spec": {"storage": {"vectorDB": {"engine": "milvus", "url": "http://milvus:19530"}}}},
        None,
        id="vectordb-engine-any",
    ),
    case(
        {"spec": {"storage": {"vectorDB": {"engine": "", "url": "http://milvus:19530"}}}},
        "spec.storage.vectorDB.engine",
        "required",
        id="vectordb-engine-empty",
    ),
    case(  # retrieve-only: KAITO admits an inferenceService without a URL
        {"spec": {"inferenceService": {"url": None, "contextWindowSize": 4096}}},
        None,
        id="service-without-url",
    ),
    case(
        {"spec": {"storage": {"vectorDB": {"engine": "qdrant", "url": "qdrant"}}}},
        "spec.storage.vectorDB.url",
        "not a valid URL",
        id="vectordb-url",
    ),
    case(
        {
            "spec": {
                "storage": {
                    "vectorDB": {
                        "engine": "qdrant",
                        "url": "http://qdrant.db.svc:6333",
                        "accessSecret": "qdrant-key",
                    }
                }
            }
        },
        None,
        id="vectordb-ok",
    ),
    case(
        {"spec": {"storage": {"persistentVolume": {"persistentVolumeClaim": "Bad_PVC"}}}},
        "spec.storage.persistentVolume.persistentVolumeClaim",
        "DNS-1123",
        id="pvc-bad",
    ),
    case(
        {
            "spec": {
                "storage": {
                    "persistentVolume": {"persistentVolumeClaim": "idx", "mountPath": "data"}
                }
            }
        },
        "spec.storage.persistentVolume.mountPath",
        "absolute path",
        id="mount-relative",
    ),
    case(
        {
            "spec": {
                "storage": {
                    "persistentVolume": {"persistentVolumeClaim": "idx", "mountPath": "/mnt/data"}
                }
            }
        },
        None,
        id="pvc-ok",
    ),
    # guardrails
    case(
        {"spec": {"guardrails": {"enabled": True, "configMapRef": {"name": "Bad_CM"}}}},
        "spec.guardrails.configMapRef.name",
        "DNS-1123",
        id="guardrails-cm-bad",
    ),
    case(
        {"spec": {"guardrails": {"enabled": True, "configMapRef": {"name": "policy"}}}},
        None,
        id="guardrails-ok",
    ),
]


@pytest.mark.parametrize(("change", "path", "fragment"), CASES)
def test_ragengine_rule(
    ragengine: dict[str, Any], patch: Any, change: dict[str, Any], path: str | None, fragment: str
) -> None:
    errors = validate_manifest(patch(ragengine, change))
    if path is None:
        assert errors == []
    else:
        assert any(e.path == path and fragment in e.message for e in errors), errors


def test_base_manifest_is_valid(ragengine: dict[str, Any]) -> None:
    assert validate(RAGEngine.from_manifest(ragengine)) == []


def test_embedding_is_required(ragengine: dict[str, Any], patch: Any) -> None:
    errors = validate_manifest(patch(ragengine, {"spec": {"embedding": None}}))
    assert [str(e) for e in errors] == ["spec.embedding: is required"]


def test_vector_db_and_a_service_without_url_are_admitted_with_warnings(
    ragengine: dict[str, Any], patch: Any
) -> None:
    """What KAITO admits and kaito-ragengine will not do: admitted, each with a warning
    that says what happens."""
    change = {
        "storage": {"vectorDB": {"engine": "milvus", "url": "http://m:19530"}},
        "inferenceService": {"url": None, "contextWindowSize": 4096},
    }
    report = check_manifest(patch(ragengine, {"spec": change}))
    assert report.errors == []
    paths = {warning.path: warning.message for warning in report.warnings}
    assert "FAISS" in paths["spec.storage.vectorDB"]
    assert "retrieve-only" in paths["spec.inferenceService.url"]
    assert check_manifest(ragengine).warnings == []
