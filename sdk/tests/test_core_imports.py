"""The SDK core imports nothing heavier than pydantic and PyYAML.

Every package imports the core (``api``, ``validation``, ``crd``, ``presets``, ``skus``,
``estimator``, ``contracts``, ``labels``, the config models), so what it loads lands in
every service and every ``kaito`` command. The CLI (typer, rich) lives in ``kaito_cli``;
model conversion and OCI transfer in :mod:`kaito_sdk.tools`, which load their libraries
only when called. Each check runs in a fresh interpreter: this test process has them all.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import kaito_sdk

HEAVY = ("typer", "rich", "torch", "transformers", "gguf", "oras", "kubernetes", "numpy")
CORE = sorted(
    module.name
    for module in pkgutil.walk_packages(kaito_sdk.__path__, prefix="kaito_sdk.")
    if not module.name.startswith("kaito_sdk.tools")
)
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_after_importing(*modules: str) -> set[str]:
    """The top-level names in ``sys.modules`` of a new interpreter after importing ``modules``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(done.stdout))


def test_the_core_is_every_sdk_module_but_the_tools() -> None:
    tops = {name.split(".")[1] for name in CORE}
    assert {"api", "validation", "crd", "presets", "skus", "estimator", "contracts"} <= tops
    assert {"labels", "images", "urls", "inference_config", "tuning_config"} <= tops
    assert not any(name.split(".")[1] in {"cli", "localmodels", "oci"} for name in CORE)


def test_the_core_loads_only_pydantic_and_pyyaml() -> None:
    loaded = loaded_after_importing("kaito_sdk", *CORE)
    assert {"kaito_sdk", "pydantic", "yaml"} <= loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))


@pytest.mark.parametrize("module", ["kaito_sdk.tools.localmodels", "kaito_sdk.tools.oci"])
def test_the_tools_load_their_libraries_only_when_called(module: str) -> None:
    loaded = loaded_after_importing(module)
    assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))


def test_the_probe_sees_a_heavy_import() -> None:
    """The check can fail: importing the CLI (kaito-cli) loads typer and rich."""
    pytest.importorskip("kaito_cli.cli", reason="kaito-cli is not installed here")
    loaded = loaded_after_importing("kaito_cli.cli")
    assert {"typer", "rich"} <= loaded
