"""KAITO drop-in compatibility: a corpus of KAITO-shaped manifests (``data/kaito_compat``)
through the SDK's document checks, as a KAITO user would apply them.

Each file says in its first comment lines what must happen (see the corpus README):
admitted or refused (with a fragment of the error), which warnings, how many documents
of other kinds are passed over. ``cli/tests/test_kaito_compat.py`` runs the same corpus
through ``kaito validate`` and ``kaito render``; the operator's admission test through
the webhook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kaito_sdk.validation.documents import check_documents

CORPUS = Path(__file__).parent / "data" / "kaito_compat"
FILES = sorted(CORPUS.glob("*.yaml"))


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
