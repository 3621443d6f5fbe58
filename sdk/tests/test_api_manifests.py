"""parse_manifest, load_yaml and dump_yaml."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kaito_sdk.api import ManifestError, RAGEngine, Workspace, dump_yaml, load_yaml, parse_manifest

WORKSPACE_YAML = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: phi
resource:
  labelSelector:
    matchLabels:
      apps: phi
inference:
  preset:
    name: phi-4-mini-instruct
"""

RAGENGINE_YAML = """\
apiVersion: kaito.sh/v1beta1
kind: RAGEngine
metadata:
  name: rag
spec:
  embedding:
    local:
      modelID: BAAI/bge-small-en-v1.5
"""


def test_parse_manifest_dispatches_on_kind() -> None:
    (workspace,) = load_yaml(WORKSPACE_YAML)
    (engine,) = load_yaml(RAGENGINE_YAML)
    assert isinstance(workspace, Workspace)
    assert isinstance(engine, RAGEngine)
    assert isinstance(parse_manifest(workspace.to_manifest()), Workspace)
    assert isinstance(parse_manifest(engine.to_manifest()), RAGEngine)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "unknown kind v1 ConfigMap"),
        ({"apiVersion": "kaito.sh/v1", "kind": "Workspace"}, "known kinds"),
        ({"kind": "Workspace"}, "apiVersion and kind are required"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_parse_manifest_rejects_unknown_kinds_clearly(manifest: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(manifest)  # type: ignore[arg-type]  # wrong type on purpose


def test_load_yaml_reads_every_document_and_skips_empty_ones() -> None:
    text = f"---\n{WORKSPACE_YAML}---\n---\n{RAGENGINE_YAML}"
    objects = load_yaml(text)
    assert [type(o) for o in objects] == [Workspace, RAGEngine]


def test_load_yaml_names_the_failing_document() -> None:
    bad = RAGENGINE_YAML.replace("modelID", "modelId")
    with pytest.raises(ManifestError, match="document 2") as caught:
        load_yaml(f"{WORKSPACE_YAML}---\n{bad}")
    assert isinstance(caught.value.__cause__, ValidationError)
    assert "spec.embedding.local.modelId" in str(caught.value)


def test_load_yaml_rejects_invalid_yaml() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_yaml("kind: [unclosed")


def test_dump_yaml_round_trips() -> None:
    objects = load_yaml(f"{WORKSPACE_YAML}---\n{RAGENGINE_YAML}")
    text = dump_yaml(objects)
    assert text == f"{WORKSPACE_YAML}---\n{RAGENGINE_YAML}"
    assert load_yaml(text) == objects
    assert dump_yaml(objects[0]) == WORKSPACE_YAML
