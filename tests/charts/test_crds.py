"""Each chart ships the CRD that kaito_sdk generates for its kind, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kaito_sdk.crd import CRD_FILES, build_crd, render_crd

CHARTS = Path(__file__).resolve().parents[2] / "charts"


@pytest.mark.parametrize("crd", CRD_FILES, ids=lambda crd: crd.relative_path)
def test_chart_crd_file_is_the_generated_one(crd: Any) -> None:
    path = CHARTS / crd.relative_path
    assert path.is_file(), f"{path} is missing: run `nox -s crds`"
    assert path.read_text(encoding="utf-8") == render_crd(crd.model), "run `nox -s crds`"


@pytest.mark.parametrize("chart", ["kaito-workspace", "kaito-ragengine"])
def test_rendered_crds_equal_the_sdk_models(render: Any, chart: str) -> None:
    rendered = [o for o in render(chart) if o["kind"] == "CustomResourceDefinition"]
    expected = [build_crd(crd.model) for crd in CRD_FILES if crd.relative_path.startswith(chart)]
    assert expected, f"the SDK generates no CRD for {chart}"
    assert rendered == expected
    shipped = sorted(p.name for p in (CHARTS / chart / "crds").iterdir())
    assert shipped == sorted(
        Path(crd.relative_path).name for crd in CRD_FILES if crd.relative_path.startswith(chart)
    )
