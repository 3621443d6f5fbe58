"""docs/architecture.md against its sources, and the import contracts against the packages.

The page's two tables are written by tools/architecture.py from the packages'
pyproject.toml and from .importlinter (checked by ``lint-imports`` in ``nox -s lint``).
These tests fail when the page drifts, when a package or an SDK core module is outside the
contracts, and when a ``type: ignore`` in a strictly typed service lacks a code or a reason.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tool() -> Any:
    """Import tools/architecture.py (tools/ is a folder of scripts)."""
    path = ROOT / "tools" / "architecture.py"
    spec = importlib.util.spec_from_file_location("kaito_tools_architecture", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


arch = _load_tool()

MINI_PYPROJECT = """\
[project]
name = "kaito-demo"
description = "Demo things"
dependencies = ["kaito-sdk[oci]", "httpx>=0.27  ", "PyYAML"]

[project.optional-dependencies]
gpu = ["bitsandbytes>=0.45"]
test = ["pytest>=8"]
"""

MINI_CONTRACTS = """\
[importlinter]
root_packages =
    demo_pkg

# Why the layers hold.
# Second line of the reason.
[importlinter:contract:demo-layers]
name = Demo: a -> sub | b
type = layers
containers =
    demo_pkg
exhaustive = True
layers =
    a
    sub | b

[importlinter:contract:demo-light]
name = Demo: no torch
type = forbidden
source_modules =
    demo_pkg.b
forbidden_modules =
    torch
allow_indirect_imports = True
"""

MINI_DOC = """\
# Map

<!-- the packages table is generated: python tools/architecture.py write -->
stale
<!-- end of the generated packages table -->

Prose stays.

<!-- the layers table is generated: python tools/architecture.py write -->
<!-- end of the generated layers table -->
"""


def _mini_repo(root: Path) -> Path:
    """A repository with one service package, two contracts and a page with stale tables."""
    package = root / "services" / "demo"
    (package / "src" / "demo_pkg" / "sub").mkdir(parents=True)
    (package / "pyproject.toml").write_text(MINI_PYPROJECT)
    for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py"):
        (package / "src" / "demo_pkg" / name).write_text('"""A module."""\n')
    (root / ".importlinter").write_text(MINI_CONTRACTS)
    (root / "docs").mkdir()
    (root / "docs" / "architecture.md").write_text(MINI_DOC)
    (root / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")  # not a package
    return root


def test_the_page_matches_its_sources() -> None:
    assert arch.check(ROOT), "docs/architecture.md drifted: run python tools/architecture.py write"


def test_the_tables_are_rendered_from_pyproject_and_importlinter(tmp_path: Path) -> None:
    root = _mini_repo(tmp_path)
    assert not arch.check(root)
    assert arch.main(["check", "--root", str(root)]) == 1
    assert arch.write(root)
    assert arch.check(root)
    assert arch.main(["check", "--root", str(root)]) == 0
    doc = (root / "docs" / "architecture.md").read_text()
    assert "stale" not in doc
    assert "Prose stays." in doc
    assert (
        "| `services/demo/` | `kaito-demo` | `demo_pkg` | Demo things. Modules: `a`, `b`, `sub/` "
        "| `kaito-sdk[oci]`, `httpx`, `PyYAML`; extra `gpu`: `bitsandbytes` |"
    ) in doc
    assert (
        "| Demo: a -> sub \\| b | layers | `demo_pkg`: `a` → `sub` \\| `b` "
        "| a layer imports only the layers below it; `a \\| b`: independent siblings; "
        "every module of the package is in a layer "
        "| Why the layers hold. Second line of the reason. |"
    ) in doc
    assert (
        "| Demo: no torch | forbidden | `demo_pkg.b` "
        "| imports none of `torch` directly (through another module is allowed) |  |"
    ) in doc


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("services/demo/pyproject.toml", '"PyYAML"]', '"PyYAML", "numpy"]'),
        ("services/demo/pyproject.toml", "Demo things", "Other things"),
        (".importlinter", "# Why the layers hold.", "# Another reason."),
        (".importlinter", "    sub | b", "    sub : b"),
        ("docs/architecture.md", "| `kaito-demo` |", "| `kaito-demos` |"),
    ],
)
def test_a_change_on_either_side_is_drift(tmp_path: Path, path: str, old: str, new: str) -> None:
    root = _mini_repo(tmp_path)
    arch.write(root)
    target = root / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new))
    assert not arch.check(root)


def test_a_new_module_is_drift(tmp_path: Path) -> None:
    root = _mini_repo(tmp_path)
    arch.write(root)
    (root / "services" / "demo" / "src" / "demo_pkg" / "c.py").write_text('"""New."""\n')
    assert not arch.check(root)


def test_a_page_without_its_markers_is_refused(tmp_path: Path) -> None:
    root = _mini_repo(tmp_path)
    page = root / "docs" / "architecture.md"
    page.write_text(MINI_DOC.replace("<!-- end of the generated layers table -->\n", ""))
    with pytest.raises(ValueError, match="layers table's two markers"):
        arch.render(root)


def _contract(key: str) -> Any:
    _, contracts = arch.read_contracts(ROOT)
    return next(c for c in contracts if c.key == key)


def test_every_package_is_a_root_of_the_contracts() -> None:
    roots, _ = arch.read_contracts(ROOT)
    packages = arch.find_packages(ROOT)
    assert sorted(roots) == sorted(p.import_name for p in packages)
    assert sorted(_contract("no-cycles").options["ancestors"]) == sorted(roots)
    # A service is a package with an image; services/cpu-runtime is a library they share.
    services = sorted(
        p.import_name for p in packages if (ROOT / p.directory / "Dockerfile").exists()
    )
    assert sorted(_contract("services-independent").options["modules"]) == services
    assert sorted(_contract("services-import-no-cli").options["source_modules"]) == services


def test_the_sdk_core_contract_names_every_module_but_tools() -> None:
    sdk = ROOT / "sdk" / "src" / "kaito_sdk"
    modules = {p.stem for p in sdk.glob("*.py") if p.name != "__init__.py"}
    modules |= {p.parent.name for p in sdk.glob("*/__init__.py")}
    core = sorted(f"kaito_sdk.{name}" for name in modules - {"tools"})
    assert sorted(_contract("sdk-core-is-light").options["source_modules"]) == core


# Every folder of our code: a `type: ignore` there names its code and says why.
REASONED = [
    "sdk",
    "cli",
    "services/cpu-runtime",
    "services/inference",
    "services/operator",
    "services/ragengine",
    "services/tuning",
    "bench",
    "tools",
]
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_mypy_is_strict_on_every_package_as_the_page_says() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert "ignore-without-code" in config["enable_error_code"]
    relaxed = [o["module"] for o in config.get("overrides", []) if o.get("strict") is False]
    assert not relaxed, f"strictness turned off for {relaxed}"
    assert "strict on every package" in " ".join((ROOT / arch.DOC).read_text().split())


@pytest.mark.parametrize("folder", REASONED)
def test_every_type_ignore_names_a_code_and_a_reason(folder: str) -> None:
    bare = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if "build" in path.relative_to(ROOT).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            found = IGNORE.search(line)
            if found and not (found["codes"] and re.match(r"\s+#\s*\S", found["rest"])):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "a type: ignore needs [code]  # reason:\n" + "\n".join(bare)
