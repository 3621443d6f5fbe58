"""``tools/image_requirements.py``: what the Dockerfiles' dependency layer installs and
which of our packages their code layer builds, read from the real pyproject.toml files.

No engine needed: these run in the main test session too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool(monkeypatch_module: pytest.MonkeyPatch) -> ModuleType:
    path = ROOT / "tools" / "image_requirements.py"
    spec = importlib.util.spec_from_file_location("kaito_tools_image_requirements", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch_module.chdir(ROOT)  # the tool reads package directories from the root
    return module


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _declared(directory: str, extra: str | None = None) -> list[str]:
    project = tomllib.loads((ROOT / directory / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"][extra] if extra else project["dependencies"])


def test_requirements_have_no_package_of_ours_and_include_the_named_extra(tool: ModuleType) -> None:
    found = tool.requirements("services/ragengine[code]")
    assert not [r for r in found if r.lower().startswith(("kaito-", "kaito_"))], found
    third_party = [r for r in _declared("services/ragengine") if not r.startswith("kaito")]
    assert set(third_party) <= set(found)
    assert set(_declared("services/ragengine", "code")) <= set(found)


def test_a_requirement_on_the_sdk_brings_the_sdk_requirements_and_its_extras(
    tool: ModuleType,
) -> None:
    [sdk] = [r for r in _declared("services/tuning") if r.startswith("kaito-sdk")]
    extras = sdk.partition("[")[2].rstrip("]").split(",") if "[" in sdk else []
    wanted = _declared("sdk") + [r for e in extras for r in _declared("sdk", e.strip())]
    assert set(wanted) <= set(tool.requirements("services/tuning"))


def test_packages_lists_ours_dependencies_first_the_service_last(tool: ModuleType) -> None:
    for service in ("operator", "inference", "ragengine", "tuning"):
        found = tool.packages(f"services/{service}")
        assert found[0] == "sdk"
        assert found[-1] == f"services/{service}"
        assert all((ROOT / directory / "pyproject.toml").is_file() for directory in found)


def test_unknown_extra_and_missing_package_are_refused_with_the_name(tool: ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"services/tuning/pyproject\.toml has no extra 'nope'"):
        tool.requirements("services/tuning[nope]")
    with pytest.raises(SystemExit, match=r"services/absent/pyproject\.toml does not exist"):
        tool.requirements("services/absent")


def test_command_line_prints_one_requirement_per_line() -> None:
    argv = [sys.executable, "tools/image_requirements.py", "--packages", "services/inference"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "services/inference"
