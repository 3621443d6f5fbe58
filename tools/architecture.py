"""Write the two generated tables of ``docs/architecture.md``: packages and layers.

The packages table comes from each package's ``pyproject.toml`` (distribution,
description, runtime dependencies, extras) and its ``src/`` folder (import name, top-level
modules). The layers table comes from ``.importlinter``, the contracts that
``lint-imports`` enforces in ``nox -s lint``: one row per contract, with the comment
written above it as the reason. The rest of the page is prose and is left alone.
``check`` fails when a table differs from what the sources give
(``tests/test_architecture.py`` runs it).

Usage::

    python tools/architecture.py write|check [--root DIR]
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DOC",
    "Contract",
    "Package",
    "check",
    "find_packages",
    "layers_table",
    "packages_table",
    "read_contracts",
    "render",
    "write",
]

ROOT = Path(__file__).resolve().parent.parent
#: The page, relative to the repository root.
DOC = "docs/architecture.md"
CONTRACTS = ".importlinter"
_SECTION = "importlinter:contract:"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)")


@dataclass(frozen=True)
class Package:
    """One installable package of the monorepo."""

    directory: str  # relative to the repository root
    distribution: str
    import_name: str
    description: str
    modules: tuple[str, ...]  # top-level modules and subpackages of the import package
    dependencies: tuple[str, ...]  # runtime requirement names (extras kept, versions not)
    extras: tuple[tuple[str, tuple[str, ...]], ...]  # optional extras except ``test``


@dataclass(frozen=True)
class Contract:
    """One import-linter contract, as ``.importlinter`` states it."""

    key: str
    name: str
    type: str
    options: dict[str, list[str]]  # option -> its lines (modules, layers or one value)
    reason: str  # the comment block written above the contract's section


def _requirement_name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match.group(1)


def _top_level_modules(package_dir: Path) -> tuple[str, ...]:
    names = []
    for child in sorted(package_dir.iterdir()):
        if child.is_dir() and (child / "__init__.py").is_file():
            names.append(f"{child.name}/")
        elif child.suffix == ".py" and child.name != "__init__.py":
            names.append(child.stem)
    return tuple(names)


def find_packages(root: Path) -> list[Package]:
    """Every package under ``root`` (a folder with a ``pyproject.toml`` that has a
    ``[project]`` and a ``src/``) in dependency order: a package after those it needs."""
    found = []
    candidates = sorted(root.glob("*/pyproject.toml")) + sorted(
        root.glob("services/*/pyproject.toml")
    )
    for pyproject in candidates:
        src = pyproject.parent / "src"
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
        if project is None or not src.is_dir():
            continue
        imports = sorted(p.parent for p in src.glob("*/__init__.py"))
        if len(imports) != 1:
            raise ValueError(f"{src}: expected one import package, found {len(imports)}")
        extras = project.get("optional-dependencies", {})
        found.append(
            Package(
                directory=pyproject.parent.relative_to(root).as_posix(),
                distribution=project["name"],
                import_name=imports[0].name,
                description=project.get("description", ""),
                modules=_top_level_modules(imports[0]),
                dependencies=tuple(_requirement_name(r) for r in project.get("dependencies", [])),
                extras=tuple(
                    (name, tuple(_requirement_name(r) for r in requirements))
                    for name, requirements in sorted(extras.items())
                    if name != "test"
                ),
            )
        )
    return _in_dependency_order(found)


def _in_dependency_order(packages: list[Package]) -> list[Package]:
    """Depth first (0: needs no other package of the monorepo), then by directory."""
    by_name = {p.distribution: p for p in packages}

    def depth(package: Package, seen: frozenset[str] = frozenset()) -> int:
        if package.distribution in seen:
            raise ValueError(f"packages depend on each other in a cycle: {sorted(seen)}")
        needs = [by_name[n] for n in _internal(package, by_name)]
        return 1 + max((depth(n, seen | {package.distribution}) for n in needs), default=-1)

    return sorted(packages, key=lambda p: (depth(p), p.directory))


def _internal(package: Package, by_name: dict[str, Package]) -> list[str]:
    """The monorepo packages that ``package`` needs at run time."""
    names = {d.split("[")[0] for d in package.dependencies}
    return sorted(names & by_name.keys())


def _comment_blocks(text: str) -> dict[str, str]:
    """The comment lines right above each contract section, joined, by contract key."""
    reasons: dict[str, str] = {}
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
        elif stripped.startswith(f"[{_SECTION}") and stripped.endswith("]"):
            reasons[stripped[len(_SECTION) + 1 : -1]] = " ".join(block)
            block = []
        else:
            block = []
    return reasons


def read_contracts(root: Path) -> tuple[list[str], list[Contract]]:
    """The root packages and the contracts of ``root/.importlinter``, in file order."""
    text = (root / CONTRACTS).read_text(encoding="utf-8")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    reasons = _comment_blocks(text)
    roots = parser.get("importlinter", "root_packages").split()
    contracts = []
    for section in parser.sections():
        if not section.startswith(_SECTION):
            continue
        key = section.removeprefix(_SECTION)
        values = dict(parser.items(section))
        options = {  # one item per line: a module, a layer, or a single value
            option: [line.strip() for line in value.splitlines() if line.strip()]
            for option, value in values.items()
            if option not in {"name", "type"}
        }
        contracts.append(Contract(key, values["name"], values["type"], options, reasons[key]))
    return roots, contracts


def _code(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _cell(text: str) -> str:
    """``text`` fit for a markdown table cell (a bare ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def packages_table(packages: list[Package]) -> str:
    """The markdown table of packages."""
    rows = [
        "| directory | distribution | import | what it holds | runtime dependencies |",
        "|---|---|---|---|---|",
    ]
    for package in packages:
        holds = f"{package.description}. Modules: {_code(package.modules)}"
        deps = _code(package.dependencies) or "none"
        for extra, requirements in package.extras:
            deps += f"; extra `{extra}`: {_code(requirements)}"
        cells = [
            f"`{package.directory}/`",
            f"`{package.distribution}`",
            f"`{package.import_name}`",
            holds,
            deps,
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _layer(line: str) -> str:
    """One layer of a layers contract: ``a | b`` independent, ``a : b`` not, ``(a)``
    optional."""
    return " ".join(f"`{part}`" if part not in {"|", ":"} else part for part in line.split())


def _rule(contract: Contract) -> tuple[str, str]:
    """(the modules a contract covers, what it requires of them)."""
    options = contract.options
    if contract.type == "independence":
        return _code(options["modules"]), "none imports another, directly or through others"
    if contract.type == "forbidden":
        if options.get("allow_indirect_imports") == ["True"]:
            how = "directly (through another module is allowed)"
        else:
            how = "directly or through others"
        forbidden = _code(options["forbidden_modules"])
        return _code(options["source_modules"]), f"imports none of {forbidden} {how}"
    if contract.type == "layers":
        layers = " → ".join(_layer(line) for line in options["layers"])
        rule = "a layer imports only the layers below it; `a | b`: independent siblings"
        if options.get("exhaustive") == ["True"]:
            rule += "; every module of the package is in a layer"
        return f"{_code(options['containers'])}: {layers}", rule
    if contract.type == "acyclic_siblings":
        return _code(options["ancestors"]), "no import cycle among sibling modules, at any depth"
    raise ValueError(f"contract {contract.key!r}: no table row for type {contract.type!r}")


def layers_table(contracts: list[Contract]) -> str:
    """The markdown table of layers: one row per import contract."""
    rows = ["| contract | type | modules | rule | why |", "|---|---|---|---|---|"]
    for contract in contracts:
        modules, rule = _rule(contract)
        cells = [contract.name, contract.type, modules, rule, contract.reason]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _marker(part: str, end: bool) -> str:
    if end:
        return f"<!-- end of the generated {part} table -->"
    return f"<!-- the {part} table is generated: python tools/architecture.py write -->"


def _replace(doc: str, part: str, table: str) -> str:
    begin, end = _marker(part, end=False), _marker(part, end=True)
    if doc.count(begin) != 1 or doc.count(end) != 1:
        raise ValueError(f"{DOC}: expected the {part} table's two markers once each")
    head, rest = doc.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def render(root: Path) -> str:
    """The page with both tables as the sources give them."""
    doc = (root / DOC).read_text(encoding="utf-8")
    _, contracts = read_contracts(root)
    doc = _replace(doc, "packages", packages_table(find_packages(root)))
    return _replace(doc, "layers", layers_table(contracts))


def check(root: Path) -> bool:
    """True when the page's tables match their sources."""
    return render(root) == (root / DOC).read_text(encoding="utf-8")


def write(root: Path) -> bool:
    """Rewrite the tables; True when the page changed."""
    path = root / DOC
    new = render(root)
    changed = new != path.read_text(encoding="utf-8")
    if changed:
        path.write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    """``write`` or ``check`` the page; ``check`` exits 1 when it has drifted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["write", "check"])
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root")
    args = parser.parse_args(argv)
    if args.command == "write":
        print(f"{DOC}: {'rewritten' if write(args.root) else 'up to date'}")
        return 0
    if check(args.root):
        print(f"{DOC}: up to date")
        return 0
    print(f"{DOC}: its tables differ from the sources; run: python tools/architecture.py write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
