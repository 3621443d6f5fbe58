"""Every manifest in examples/ parses, round-trips, validates clean and fits the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kaito_sdk.api import InferenceSet, RAGEngine, Workspace, dump_yaml, load_yaml, parse_manifest
from kaito_sdk.crd import build_crd
from kaito_sdk.validation import validate, validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
SCHEMAS = {
    model.api_info.kind: build_crd(model)["spec"]["versions"][-1]["schema"]["openAPIV3Schema"]
    for model in (Workspace, RAGEngine, InferenceSet)  # versions[-1]: the storage version
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def test_examples_cover_every_scenario() -> None:
    assert {path.name for path in FILES} >= {
        "workspace-inference-preset.yaml",
        "workspace-inference-adapters.yaml",
        "workspace-inference-template.yaml",
        "workspace-inference-config.yaml",
        "workspace-tuning-urls.yaml",
        "workspace-tuning-image.yaml",
        "workspace-tuning-volume.yaml",
        "workspace-smollm2-cpu.yaml",
        "ragengine-local-embedding.yaml",
        "ragengine-remote-embedding.yaml",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_round_trips(path: Path) -> None:
    documents = _documents(path)
    objects = load_yaml(path.read_text(encoding="utf-8"))
    assert len(objects) == len(documents) >= 1
    for document, obj in zip(documents, objects, strict=True):
        assert obj.to_manifest() == document
        assert parse_manifest(obj.to_manifest()) == obj
    assert load_yaml(dump_yaml(objects)) == objects


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    for obj in load_yaml(path.read_text(encoding="utf-8")):
        assert validate(obj) == [], f"{path.name}: {[str(e) for e in validate(obj)]}"
    for document in _documents(path):
        assert validate_manifest(document) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_fits_the_generated_crd_schema(path: Path) -> None:
    for document in _documents(path):
        jsonschema.validate(document, SCHEMAS[document["kind"]])


def test_crd_schema_check_is_real() -> None:
    (document,) = _documents(EXAMPLES / "workspace-inference-preset.yaml")
    document["resource"]["count"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        jsonschema.validate(document, SCHEMAS["Workspace"])


def _only(path: str) -> Any:
    (obj,) = load_yaml((EXAMPLES / path).read_text(encoding="utf-8"))
    return obj


def test_examples_show_what_their_names_say() -> None:
    adapters = _only("workspace-inference-adapters.yaml").inference.adapters
    assert {bool(a.source.image) for a in adapters} == {True, False}
    assert any(a.source.volume_source for a in adapters)
    assert _only("workspace-inference-template.yaml").inference.template["spec"]["containers"]
    assert _only("workspace-inference-config.yaml").inference.config
    assert _only("workspace-tuning-urls.yaml").tuning.input.urls
    image = _only("workspace-tuning-image.yaml").tuning
    assert image.input.image
    assert image.output.image
    assert image.output.image_push_secret
    volume = _only("workspace-tuning-volume.yaml").tuning
    assert volume.input.volume_source
    assert volume.output.volume_source
    assert _only("workspace-smollm2-cpu.yaml").inference.preset.name == "smollm2-135m-instruct"
    local = _only("ragengine-local-embedding.yaml").spec
    assert local.embedding.local is not None
    assert local.compute is not None
    remote = _only("ragengine-remote-embedding.yaml").spec
    assert remote.embedding.remote is not None
    assert remote.inference_service is not None


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        (
            "Workspace",
            {"inference": {"adapters": [{"source": {"name": f"a{i}"}} for i in range(11)]}},
        ),
        ("Workspace", {"resource": {"count": 0}}),
        ("Workspace", {"resource": {"partition": {"mode": "gpu"}}}),
        ("RAGEngine", {"spec": {"inferenceService": {"url": "http://l", "contextWindowSize": 0}}}),
        ("RAGEngine", {"spec": {"storage": {"vectorDB": {"engine": "milvus"}}}}),  # no url
    ],
)
def test_crd_schema_enforces_simple_bounds_without_a_webhook(
    kind: str, change: dict[str, Any], patch: Any
) -> None:
    name = (
        "workspace-inference-preset.yaml"
        if kind == "Workspace"
        else "ragengine-local-embedding.yaml"
    )
    (document,) = _documents(EXAMPLES / name)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(patch(document, change), SCHEMAS[kind])
