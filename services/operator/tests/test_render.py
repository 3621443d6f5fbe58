"""``kaito render``: the operator's objects for the repository's examples, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kaito_cli.cli import build_app

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_to_valid_objects(example: Path) -> None:
    result = CliRunner().invoke(build_app(), ["render", str(example)])
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.stdout))
    kinds = {obj["kind"] for obj in objects}
    assert kinds & {"StatefulSet", "Job", "Deployment"}


def test_render_with_karpenter_adds_the_nodepool(tmp_path: Path) -> None:
    example = next(p for p in EXAMPLES if p.stem == "workspace-inference-preset")
    result = CliRunner().invoke(
        build_app(), ["render", str(example), "--node-provisioner", "karpenter"]
    )
    assert result.exit_code == 0, result.output
    kinds = [obj["kind"] for obj in yaml.safe_load_all(result.stdout)]
    assert kinds[0] == "NodePool"


def test_render_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: w}\n"
        "resource: {labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: nope}}\n"
    )
    result = CliRunner().invoke(build_app(), ["render", str(bad)])
    assert result.exit_code == 1
    assert "Workspace w: inference.preset.name: unknown preset" in result.output
