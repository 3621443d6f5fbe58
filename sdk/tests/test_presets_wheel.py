"""The catalog travels inside a normal (non-editable) wheel and loads from there (about 2 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from kaito_sdk.presets import list_presets

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests")
# sdk/pyproject.toml states its license as a PEP 639 string, which setuptools reads from 77 on;
# a bare Python 3.11 venv (nox) carries setuptools 65 from ensurepip.
_SETUPTOOLS = tuple(int(part) for part in version("setuptools").split(".")[:1])


@pytest.mark.skipif(
    _SETUPTOOLS < (77,),
    reason="building kaito-sdk without isolation needs setuptools>=77 in the test environment",
)
def test_wheel_carries_the_catalog_and_resolves_presets_from_it(tmp_path: Path) -> None:
    # Build from a copy laid out like the repository (sdk/ next to presets/, the package's
    # data link kept as a link), so the checkout gets no build/ litter.
    tree = tmp_path / "repo"
    shutil.copytree(REPO / "sdk", tree / "sdk", symlinks=True, ignore=_IGNORE)
    shutil.copytree(REPO / "presets", tree / "presets")
    assert (tree / "sdk/src/kaito_sdk/presets/data").is_symlink()
    out = tmp_path / "dist"
    build = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "./sdk", "-w", str(out)]
    subprocess.run(
        [sys.executable, "-m", *build],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("kaito_sdk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in sorted((REPO / "presets").rglob("*")):
        if path.suffix in {".yaml", ".jinja"}:
            relative = path.relative_to(REPO / "presets").as_posix()
            assert f"kaito_sdk/presets/data/{relative}" in names

    # A pure wheel unpacked is an install: load the catalog from it, not from the checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import kaito_sdk, kaito_sdk.presets as p;"
        "print(kaito_sdk.__file__);"
        "print(len(p.list_presets()), p.resolve_preset('mistral-7b').hf_id)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    location, summary = result.stdout.splitlines()
    assert Path(location).is_relative_to(site)
    count, hf_id = summary.split()
    assert int(count) == len(list_presets())
    assert hf_id == "mistralai/Mistral-7B-v0.3"
