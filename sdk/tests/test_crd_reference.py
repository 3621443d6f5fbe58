"""The generated CRD reference page: every field, and a drift check like the CRD files'."""

from __future__ import annotations

from pathlib import Path

from kaito_sdk.crd.__main__ import main
from kaito_sdk.crd.reference import REFERENCE_HEADER, render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_reference_lists_fields_of_both_kinds_with_descriptions() -> None:
    text = render_reference()
    assert text.startswith(REFERENCE_HEADER)
    assert "## Workspace (`kaito.sh/v1beta1`)" in text
    assert "## RAGEngine (`kaito.sh/v1beta1`)" in text
    row = next(line for line in text.splitlines() if line.startswith("| `tuning.method` |"))
    assert "lora" in row.lower()
    assert "| `inference.adapters[].strength` |" in text
    assert "| `spec.inferenceService.contextWindowSize` | integer |" in text
    assert "| `inference.template` | object (free-form) |" in text
    assert "`metadata`" not in text


def test_committed_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "crd-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), "run: nox -s crds"


def test_check_fails_on_a_stale_reference(tmp_path: Path, capsys: object) -> None:
    stale = tmp_path / "crd-reference.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert main(["check", str(ROOT / "charts"), "--docs", str(stale)]) == 1
    assert main(["write", str(tmp_path / "charts"), "--docs", str(stale)]) == 0
    assert main(["check", str(tmp_path / "charts"), "--docs", str(stale)]) == 0
