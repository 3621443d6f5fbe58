"""The ``kaito`` CLI through typer's CliRunner, and its ``kaito.cli`` plugin entry points."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kaito_cli.cli import build_app, load_plugins, main
from kaito_sdk.presets import list_presets
from kaito_sdk.skus import list_skus

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def app() -> typer.Typer:
    return build_app(plugins=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_presets_table_lists_every_model(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["presets"], env=WIDE)
    assert result.exit_code == 0, result.output
    for preset in list_presets():
        assert preset.name in result.stdout
    row = next(line for line in result.stdout.splitlines() if "llama-3.1-8b-instruct" in line)
    for cell in ("meta-llama/Llama-3.1-8B-Instruct", "8.0B", "14.96", "128k", "vllm*", "gated"):
        assert cell in row
    cpu_row = next(line for line in result.stdout.splitlines() if "smollm2-135m-instruct" in line)
    assert "135M" in cpu_row
    assert "transformers*" in cpu_row
    assert "cpu" in cpu_row


def test_presets_table_folds_onto_two_lines_when_narrow(
    app: typer.Typer, runner: CliRunner
) -> None:
    result = runner.invoke(app, ["presets"], env={"COLUMNS": "100"})
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 100
    index = next(i for i, line in enumerate(lines) if "llama-3.1-8b-instruct" in line)
    assert "14.96" in lines[index]
    assert "…" not in result.stdout
    assert lines[index + 1].strip() == "meta-llama/Llama-3.1-8B-Instruct (gated)"


def test_presets_json_and_family_filter(app: typer.Typer, runner: CliRunner) -> None:
    rows = json.loads(runner.invoke(app, ["presets", "--json"]).stdout)
    assert [r["name"] for r in rows] == [p.name for p in list_presets()]
    llama = next(r for r in rows if r["name"] == "llama-3.1-8b-instruct")
    assert llama["bytes_per_token"] == 131072
    assert llama["disk_storage_requirement"] == "95Gi"
    assert llama["runtimes"] == ["vllm", "transformers"]
    qwen = json.loads(runner.invoke(app, ["presets", "--json", "--family", "Qwen"]).stdout)
    assert qwen
    assert {r["family"] for r in qwen} == {"qwen"}


def test_skus_json(app: typer.Typer, runner: CliRunner) -> None:
    rows = json.loads(runner.invoke(app, ["skus", "--json"]).stdout)
    assert len(rows) == len(list_skus())
    assert {"name": "p5.48xlarge", "cloud": "aws", "gpu_model": "H100", "gpu_count": 8,
            "gpu_memory_gib": 80} in rows  # fmt: skip
    table = runner.invoke(app, ["skus"], env=WIDE).stdout
    assert "Standard_ND96isr_H200_v5" in table


def test_estimate_prints_layout_and_arithmetic(app: typer.Typer, runner: CliRunner) -> None:
    # Llama-3.3-70B on 1 x A100 80: min GPUs floor(134.05 / 61.21) + 1 = 3 (test_estimator).
    result = runner.invoke(
        app, ["estimate", "llama-3.3-70b-instruct", "--instance-type", "Standard_NC24ads_A100_v4"]
    )
    assert result.exit_code == 0, result.output
    assert "nodes: 3   GPUs: 3 (1 x A100 per node)" in result.stdout
    assert "tensor parallel: 1   pipeline parallel: 3" in result.stdout
    assert "min GPUs = floor(134.05 / 61.21) + 1 = 3" in result.stdout


def test_estimate_json_with_max_model_len(app: typer.Typer, runner: CliRunner) -> None:
    args = ["estimate", "llama-3.1-8b-instruct", "-i", "Standard_NV36ads_A10_v5"]
    result = runner.invoke(app, [*args, "--max-model-len", "32768", "--json"])
    data = json.loads(result.stdout)
    assert (data["node_count"], data["pipeline_parallel_size"], data["context_length"]) == (
        2,
        2,
        32768,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["phi-4-mni", "-i", "g5.xlarge"], "did you mean phi-4"),
        (["phi-3-mini-4k-instruct", "-i", "g5.xlarge", "--max-model-len", "9000"], "exceeds"),
        (["phi-4", "-i", "Standard_D4s_v5"], "not in the GPU SKU catalog"),
        (["acme/new-model", "-i", "g5.xlarge"], "not in the preset catalog"),
    ],
)
def test_estimate_errors_are_clean(
    app: typer.Typer, runner: CliRunner, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["estimate", *args], env=WIDE)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "error:" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_every_example_manifest_is_valid(app: typer.Typer, runner: CliRunner) -> None:
    assert EXAMPLES, "examples/ holds the reference manifests"
    result = runner.invoke(app, ["validate", *map(str, EXAMPLES)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": valid") == len(EXAMPLES)


def test_validate_reports_every_rule_broken(
    app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            apiVersion: kaito.sh/v1beta1
            kind: Workspace
            metadata: {name: Bad_Name}
            resource:
              instanceType: Standard_NC24ads_A100_v4
              labelSelector: {matchLabels: {apps: demo}}
            inference:
              preset: {name: phi-4-mini-instruct}
              adapters:
                - source: {name: a1, image: example.azurecr.io/a1:0.1}
                  strength: "1.5"
            ---
            apiVersion: kaito.sh/v1beta1
            kind: Workspace
            metadata: {name: ok}
            resource: {labelSelector: {matchLabels: {apps: demo}}}
            inference: {preset: {name: phi-4-mini-instruct}}
            extra: true
            """
        )
    )
    result = runner.invoke(app, ["validate", str(manifest)], env=WIDE)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("  metadata.name: ") for line in lines)
    assert any(line.startswith("  inference.adapters[0].strength: ") for line in lines)
    assert "  extra: unknown field (not part of the KAITO API)" in lines
    # Strength 1.5 is out of range: an error, and no vLLM warning on top of it.
    assert "document 1 (Workspace Bad_Name): 2 error(s)" in result.stdout
    assert "warning:" not in result.stdout


def test_validate_passes_other_kinds_over_checks_their_configmap_and_warns(
    app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text(
        textwrap.dedent(
            """            apiVersion: v1
            kind: Secret
            metadata: {name: hf-token}
            stringData: {HF_TOKEN: placeholder}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: serving}
            data:
              inference_config.yaml: |
                vllm:
                  max-model-len: 4096
            ---
            apiVersion: kaito.sh/v1beta1
            kind: Workspace
            metadata: {name: llama}
            resource:
              instanceType: Standard_NC24ads_A100_v4
              labelSelector: {matchLabels: {apps: llama}}
            inference:
              preset: {name: llama-3.1-8b-instruct}
              config: serving
            """
        )
    )
    result = runner.invoke(app, ["validate", str(manifest)], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith("document 1 (Secret hf-token): passed over")
    assert (
        lines[1]
        == "  note: v1 Secret is not a KAITO kind: passed over (kubectl applies it as it is)"
    )
    assert "document 2 (ConfigMap serving): passed over" in result.stdout
    assert "  note: checked as the inference.config of Workspace llama" in lines
    assert "document 3 (Workspace llama): valid, 1 warning(s)" in result.stdout
    assert any(
        line.startswith("  warning: inference.preset.presetOptions.modelAccessSecret: is not set")
        for line in lines
    )
    # A config the serving schema refuses fails the file, on the ConfigMap's document.
    manifest.write_text(manifest.read_text().replace("max-model-len: 4096", "port: 9000"))
    result = runner.invoke(app, ["validate", str(manifest)], env=WIDE)
    assert result.exit_code == 1
    assert "document 2 (ConfigMap serving): 1 error(s)" in result.stdout
    assert "  data[inference_config.yaml]: vllm: 'port' is set by the operator" in result.stdout


def test_validate_names_multirole_inference_as_not_supported_yet(
    app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    manifest = tmp_path / "mri.yaml"
    manifest.write_text(
        "apiVersion: kaito.sh/v1alpha1\nkind: MultiRoleInference\nmetadata: {name: pd}\n"
        "spec: {model: {name: phi-4-mini-instruct}}\n"
    )
    result = runner.invoke(app, ["validate", str(manifest)], env=WIDE)
    assert result.exit_code == 1
    assert "document 1 (MultiRoleInference pd): 1 error(s)" in result.stdout
    assert "  kind: MultiRoleInference is not supported yet: prefill/decode" in result.stdout
    assert "unknown kind" not in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: [unclosed\n", "not valid YAML at line 2, column 1"),
        ("", "no YAML documents"),
        ("- just\n- a list\n", "(root): a manifest must be a mapping, not list"),
        ("apiVersion: kaito.sh/v1beta1\nkind: Pod\n", "kind: unknown kind kaito.sh/v1beta1 Pod"),
        ("kind: Pod\n", "kind: apiVersion and kind are required"),
    ],
)
def test_validate_bad_files_give_messages_not_tracebacks(
    app: typer.Typer, runner: CliRunner, tmp_path: Path, content: str, message: str
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(content)
    result = runner.invoke(app, ["validate", str(manifest)], env=WIDE)
    assert result.exit_code == 1
    assert message in result.output
    assert isinstance(result.exception, SystemExit)


def test_validate_missing_file_and_stdin(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "/no/such/file.yaml"], env=WIDE)
    assert result.exit_code == 1
    assert "/no/such/file.yaml: cannot read: No such file or directory" in result.stderr
    workspace = EXAMPLES[0].read_text()
    result = runner.invoke(app, ["validate", "-"], input=workspace, env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("- document 1 (")
    assert result.stdout.endswith(": valid\n")


def _install_plugin_dist(root: Path, name: str, entry_points: str, module: str) -> None:
    """Lay out an installed distribution (dist-info + module) under ``root``."""
    dist_info = root / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(entry_points)
    (root / f"{name}.py").write_text(module)


def test_plugins_add_commands_and_broken_ones_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_plugin_dist(
        tmp_path,
        "kaito_demo_plugin",
        "[kaito.cli]\nhello = kaito_demo_plugin:register\n"
        "broken = kaito_demo_plugin:missing\nfails = kaito_demo_plugin:explode\n",
        textwrap.dedent(
            """\
            import typer

            def register(app: typer.Typer) -> None:
                @app.command("hello")
                def hello(name: str) -> None:
                    typer.echo(f"hello {name}")

            def explode(app: typer.Typer) -> None:
                raise RuntimeError("plugin bug")
            """
        ),
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = build_app()
    err = capsys.readouterr().err
    assert "skipped CLI plugin 'broken' (kaito_demo_plugin:missing): AttributeError" in err
    assert "skipped CLI plugin 'fails'" in err
    assert "RuntimeError: plugin bug" in err
    result = CliRunner().invoke(app, ["hello", "kaito"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello kaito\n"
    assert CliRunner().invoke(app, ["presets", "--json"]).exit_code == 0


def test_load_plugins_returns_loaded_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin_dist(
        tmp_path,
        "kaito_other_plugin",
        "[kaito.cli]\nnoop = kaito_other_plugin:register\n",
        "def register(app):\n    pass\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "noop" in load_plugins(typer.Typer())


def test_main_is_the_console_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["kaito", "--help"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("presets", "skus", "estimate", "validate"):
        assert command in out
