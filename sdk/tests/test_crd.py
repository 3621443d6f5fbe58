"""CRD generation: structural schemas, the CRD shape, kubernetes-validate, and drift."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, Field

from kaito_sdk.api import InferenceSet, KubeModel, KubeObject, RAGEngine, Workspace
from kaito_sdk.crd import (
    CRD_FILES,
    HEADER,
    StructuralSchemaError,
    build_crd,
    check_files,
    render_crd,
    structural_schema,
    write_files,
)
from kaito_sdk.crd.__main__ import main

CHARTS = Path(__file__).resolve().parents[2] / "charts"
KINDS = [Workspace, RAGEngine, InferenceSet]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema(model: type[KubeObject]) -> dict[str, Any]:
    # The storage version's schema (the v1alpha1 RAGEngine has its own: test_versions.py).
    (stored,) = [v for v in build_crd(model)["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = stored["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.api_info.kind)
def test_schema_is_structural(model: type[KubeObject]) -> None:
    for path, node in _walk(_schema(model)):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} untyped"
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"} & set(node), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        assert "default" not in node or node["default"] is not None, path


@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.api_info.kind)
def test_every_field_is_described(model: type[KubeObject]) -> None:
    undocumented = [
        path
        for path, node in _walk(_schema(model))
        if path
        and path != ".metadata"
        and not node.get("description")
        and not path.endswith(("[]", "{}"))
    ]
    assert undocumented == []


def test_schemaless_parts_preserve_unknown_fields() -> None:
    properties = _schema(Workspace)["properties"]
    inference = properties["inference"]["properties"]
    tuning = properties["tuning"]["properties"]
    schemaless = [
        inference["template"],
        inference["adapters"]["items"]["properties"]["source"]["properties"]["volumeSource"],
        tuning["input"]["properties"]["volumeSource"],
        tuning["output"]["properties"]["volumeSource"],
    ]
    for node in schemaless:
        assert node["type"] == "object"
        assert node["x-kubernetes-preserve-unknown-fields"] is True
        assert "properties" not in node


def test_workspace_has_no_spec_and_typed_fields() -> None:
    schema = _schema(Workspace)
    assert "spec" not in schema["properties"]
    assert set(schema["properties"]) == {
        "apiVersion",
        "kind",
        "metadata",
        "resource",
        "inference",
        "tuning",
        "status",
    }
    resource = schema["properties"]["resource"]
    assert resource["required"] == ["labelSelector"]
    assert resource["properties"]["count"]["type"] == "integer"
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert condition["properties"]["lastTransitionTime"] == {
        "description": "When the condition last changed status.",
        "type": "string",
        "format": "date-time",
    }
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_ragengine_keeps_kaito_spelling() -> None:
    spec = _schema(RAGEngine)["properties"]["spec"]
    assert spec["required"] == ["embedding"]
    assert "modelID" in spec["properties"]["embedding"]["properties"]["local"]["properties"]
    assert "vectorDB" in spec["properties"]["storage"]["properties"]


@pytest.mark.parametrize(
    ("model", "short_names", "columns"),
    [
        (
            Workspace,
            ["wk", "wks"],
            [
                "Instance",
                "ResourceReady",
                "InferenceReady",
                "JobStarted",
                "WorkspaceSucceeded",
                "TargetNodeCount",
                "State",
                "Age",
            ],
        ),
        (RAGEngine, ["rag"], ["Instance", "ResourceReady", "ServiceReady", "Age"]),
        (InferenceSet, ["is", "isets"], ["Replicas", "ReadyReplicas", "Age"]),
    ],
    ids=["Workspace", "RAGEngine", "InferenceSet"],
)
def test_crd_names_columns_and_subresources(
    model: type[KubeObject], short_names: list[str], columns: list[str]
) -> None:
    crd = build_crd(model)
    info = model.api_info
    assert crd["metadata"]["name"] == f"{info.plural}.kaito.sh"
    spec = crd["spec"]
    assert spec["group"] == "kaito.sh"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == short_names
    assert spec["names"]["listKind"] == f"{info.kind}List"
    alpha, beta = spec["versions"]
    assert (alpha["name"], alpha["served"], alpha["storage"]) == ("v1alpha1", True, False)
    assert (beta["name"], beta["served"], beta["storage"]) == ("v1beta1", True, True)
    # RAGEngine's v1alpha1 schema differs: converted by the webhook (test_versions.py).
    assert spec["conversion"]["strategy"] == ("Webhook" if model is RAGEngine else "None")
    for version in (alpha, beta):
        assert version["subresources"]["status"] == {}
        assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
        age = version["additionalPrinterColumns"][-1]
        assert (age["type"], age["jsonPath"]) == ("date", ".metadata.creationTimestamp")


@pytest.mark.parametrize("model", KINDS, ids=lambda m: m.api_info.kind)
def test_crd_passes_kubernetes_validate(model: type[KubeObject]) -> None:
    assert kubernetes_validate.validate(build_crd(model), "1.32", strict=True) == "1.32"


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    crd = build_crd(Workspace)
    crd["spec"]["versions"][0]["served"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, "1.32", strict=True)


class _Quantities(KubeModel):
    """A test model with the shapes the rewriter must translate."""

    size: int | str
    """A quantity such as 10 or "10Gi"."""
    extra: dict[str, Any] | None = None
    """Anything at all."""
    labels: dict[str, str] = Field(default_factory=dict)
    """A typed map."""


def test_rewriter_handles_int_or_string_and_free_form_maps() -> None:
    schema = structural_schema(_Quantities)
    assert schema["properties"]["size"] == {
        "description": 'A quantity such as 10 or "10Gi".',
        "x-kubernetes-int-or-string": True,
    }
    assert schema["properties"]["extra"] == {
        "description": "Anything at all.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert schema["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert schema["required"] == ["size"]


class _Ambiguous(BaseModel):
    value: str | list[str]


def test_rewriter_rejects_unions_it_cannot_express() -> None:
    with pytest.raises(StructuralSchemaError, match="value"):
        structural_schema(_Ambiguous)


def test_chart_crds_match_the_models() -> None:
    """The drift test: regenerate with `nox -s crds` when this fails."""
    assert check_files(CHARTS) == [], "run: nox -s crds"
    for crd in CRD_FILES:
        text = (CHARTS / crd.relative_path).read_text(encoding="utf-8")
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == build_crd(crd.model)


def test_check_reports_drift_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["write", str(tmp_path)]) == 0
    assert main(["check", str(tmp_path)]) == 0
    path = tmp_path / "kaito-workspace/crds/kaito.sh_workspaces.yaml"
    assert path.read_text(encoding="utf-8") == render_crd(Workspace)
    path.write_text(path.read_text(encoding="utf-8").replace("- wks\n", ""), encoding="utf-8")
    (tmp_path / "kaito-ragengine/crds/kaito.sh_ragengines.yaml").unlink()
    capsys.readouterr()
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "kaito.sh_workspaces.yaml differs from what the models generate" in err
    assert "+    - wks" in err
    assert "kaito.sh_ragengines.yaml is missing" in err
    assert "run `nox -s crds`" in err
    write_files(tmp_path)
    assert check_files(tmp_path) == []


def test_module_entry_point_exits_1_on_drift(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kaito_sdk.crd", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "CRD drift" in result.stderr
