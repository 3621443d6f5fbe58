"""KAITO drop-in compatibility at the command line: the SDK's corpus of KAITO-shaped
manifests (``sdk/tests/data/kaito_compat``) through ``kaito validate`` and ``kaito render``.

Each corpus file says in its first comment lines what must happen (see the corpus
README); ``sdk/tests/test_kaito_compat.py`` checks the same verdicts on the SDK's document
checks. Here the CLI must agree: exit 0 when admitted (warnings do not fail), 1 when
refused, one line per warning, no traceback; admitted files render to valid objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kaito_cli.cli import build_app

CORPUS = Path(__file__).resolve().parents[2] / "sdk" / "tests" / "data" / "kaito_compat"
FILES = sorted(CORPUS.glob("*.yaml"))
WIDE = {"COLUMNS": "250"}


@dataclass(frozen=True)
class Expectation:
    """What the header comments of a corpus file require."""

    refused: str | None
    warnings: frozenset[str]
    passed_over: int


def expectation(path: Path) -> Expectation:
    header = dict(
        re.findall(r"^# (expect|warnings|passed-over): (.*)$", path.read_text(), re.MULTILINE)
    )
    verdict = header["expect"].strip()
    refused = verdict.removeprefix("refused: ") if verdict != "admitted" else None
    warnings = {w.strip() for w in header.get("warnings", "").split(",") if w.strip()}
    return Expectation(refused, frozenset(warnings), int(header.get("passed-over", "0")))


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 15, CORPUS


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_validate_admits_what_kaito_admits(path: Path) -> None:
    expected = expectation(path)
    result = CliRunner().invoke(build_app(), ["validate", str(path)], env=WIDE)
    assert result.exit_code == (0 if expected.refused is None else 1), result.output
    if expected.refused is not None:
        assert expected.refused in result.output
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
