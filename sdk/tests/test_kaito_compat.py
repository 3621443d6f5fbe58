"""KAITO drop-in compatibility: a corpus of KAITO-shaped manifests (``data/kaito_compat``)
through ``kaito validate`` and ``kaito render``, as a KAITO user would apply them.

Each file says in its first comment lines what must happen (see the corpus README):
admitted or refused (with a fragment of the error), which warnings, how many documents
of other kinds are passed over. Admitted files must also render to valid objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kaito_sdk.cli import build_app
from kaito_sdk.validation.documents import check_documents

CORPUS = Path(__file__).parent / "data" / "kaito_compat"
FILES = sorted(CORPUS.glob("*.yaml"))
WIDE = {"COLUMNS": "250"}


@dataclass(frozen=True)
class Expectation:
    """What the header comments of a corpus file require."""

    refused: str | None
    warnings: frozenset[str]
    passed_over: int


def expectation(path: Path) -> Expectation:
    header = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^# (expect|warnings|passed-over): (.*)$", line)
        if match:
            header[match.group(1)] = match.group(2).strip()
    assert "expect" in header, f"{path.name}: no '# expect:' line"
    verdict = header["expect"]
    assert verdict == "admitted" or verdict.startswith("refused: "), verdict
    refused = verdict.removeprefix("refused: ") if verdict != "admitted" else None
    warnings = {w.strip() for w in header.get("warnings", "").split(",") if w.strip()}
    return Expectation(refused, frozenset(warnings), int(header.get("passed-over", "0")))


def test_the_corpus_covers_every_compatibility_group() -> None:
    texts = {path.name: path.read_text(encoding="utf-8") for path in FILES}
    every = "\n".join(texts.values())
    for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment"):
        assert f"\nkind: {kind}\n" in every, f"no {kind} next to a KAITO object"
    assert "apiVersion: kaito.sh/v1alpha1" in every
    assert "kind: InferenceSet" in every
    assert "kind: MultiRoleInference" in every
    for preset in (
        "gpt-oss-20b",
        "gpt-oss-120b",
        "deepseek-r1-0528",
        "deepseek-v3-0324",
        "mistralai/Ministral-3-3B-Instruct-2512",
        "ministral-3-8b-instruct",
        "ministral-3-14b-instruct",
        "mistral-large-3-675b-instruct",
        "phi-2",
    ):
        assert f"name: {preset}\n" in every, preset
    warned = set().union(*(expectation(path).warnings for path in FILES))
    assert "inference.preset.presetOptions.modelAccessSecret" in warned
    assert any(path.endswith("].strength") for path in warned)
    assert {"inference.preset.name", "tuning.preset.name"} <= warned
    assert any("<your-" in text for text in texts.values())


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_validate_admits_what_kaito_admits(path: Path) -> None:
    expected = expectation(path)
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    reports = check_documents(documents)
    errors = [str(error) for report in reports for error in report.errors]
    warnings = {warning.path for report in reports for warning in report.warnings}
    passed_over = [r for r in reports if any("passed over" in note for note in r.notes)]
    if expected.refused is None:
        assert errors == []
    else:
        assert any(expected.refused in error for error in errors), errors
    assert warnings == expected.warnings
    assert len(passed_over) == expected.passed_over
    # The CLI says the same: exit 0 when admitted (warnings do not fail), 1 when refused.
    result = CliRunner().invoke(build_app(), ["validate", str(path)], env=WIDE)
    assert result.exit_code == (0 if expected.refused is None else 1), result.output
    assert result.stdout.count("  warning: ") == len(expected.warnings)
    summaries = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert sum(line.endswith(": passed over") for line in summaries) == expected.passed_over
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_render_builds_valid_objects_for_what_validate_admits(path: Path) -> None:
    pytest.importorskip("kaito_operator.render", reason="kaito render comes with the operator")
    expected = expectation(path)
    result = CliRunner().invoke(build_app(), ["render", str(path)])
    assert "Traceback" not in result.output
    if expected.refused is not None:  # the webhook refuses it: the operator never builds it
        assert result.exit_code == 1
        assert expected.refused in result.stderr
        return
    assert result.exit_code == 0, result.output
    assert "invalid:" not in result.output
    objects = list(yaml.safe_load_all(result.stdout))
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    # One workload per Workspace and RAGEngine, and per member Workspace of an InferenceSet.
    expected_workloads = sum(
        d["spec"].get("replicas", 1) if d["kind"] == "InferenceSet" else 1
        for d in documents
        if d["kind"] in ("Workspace", "RAGEngine", "InferenceSet")
    )
    workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Job", "Deployment")]
    assert len(workloads) == expected_workloads
    assert result.stderr.count("not a KAITO kind, passed over") == expected.passed_over
    assert result.stderr.count("warning: ") == len(expected.warnings)
