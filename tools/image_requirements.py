"""What an image of one of our services needs, from the pyproject.toml files (stdlib only).

    python tools/image_requirements.py services/ragengine[code]             # requirements
    python tools/image_requirements.py --packages services/ragengine[code]  # our packages

The first form prints the third-party requirements, one per line: the service
Dockerfiles install them in a layer of their own before any of our code is copied, so a
code-only change reuses the layer with torch and every dependency. A requirement on one
of our own packages (``kaito-sdk[oci]``, ``kaito-cpu-runtime``) is replaced by that
package's requirements and extras. ``--packages`` prints the directories of our packages
the service needs, itself last: the Dockerfiles build their wheels. Run it from the
repository root; our package ``kaito-<name>`` lives in ``sdk`` or ``services/<name>``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_ARG = re.compile(r"^(?P<path>[^\[\]]+)(?:\[(?P<extras>[\w,-]*)\])?$")
_OURS = re.compile(r"^kaito[-_](?P<name>[\w-]+)\s*(?:\[(?P<extras>[\w,\s-]*)\])?", re.IGNORECASE)


def _directory(name: str) -> str:
    """The directory of our package ``kaito-<name>`` (the SDK, or a service)."""
    name = name.lower().replace("_", "-")
    return "sdk" if name == "sdk" else f"services/{name}"


def _resolve(arg: str, packages: dict[str, None]) -> list[str]:
    """Third-party requirements of the package ``arg`` (``DIR`` or ``DIR[extra,...]``);
    our packages it needs are added to ``packages`` (dependencies before dependents)."""
    match = _ARG.match(arg)
    if match is None:
        raise SystemExit(f"image_requirements: {arg!r} is not DIR or DIR[extra,...]")
    pyproject = Path(match["path"]) / "pyproject.toml"
    if not pyproject.is_file():
        raise SystemExit(f"image_requirements: {pyproject} does not exist")
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in filter(None, (match["extras"] or "").split(",")):
        if extra not in optional:
            raise SystemExit(f"image_requirements: {pyproject} has no extra {extra!r}")
        wanted += optional[extra]
    result: list[str] = []
    for requirement in wanted:
        ours = _OURS.match(requirement)
        if ours is None:
            result.append(requirement)
            continue
        extras = "".join((ours["extras"] or "").split())
        result += _resolve(f"{_directory(ours['name'])}[{extras}]", packages)
    packages[match["path"]] = None
    return result


def requirements(arg: str) -> list[str]:
    """Runtime requirements (plus those of the named extras) of the package at ``arg``."""
    return _resolve(arg, {})


def packages(arg: str) -> list[str]:
    """Directories of our packages that ``arg`` needs, ``arg``'s own last."""
    found: dict[str, None] = {}
    _resolve(arg, found)
    return list(found)


def main(argv: list[str]) -> None:
    """Print the requirements (or, after ``--packages``, our package directories) of every
    package in ``argv``, without duplicates."""
    lister = packages if argv[:1] == ["--packages"] else requirements
    seen: dict[str, None] = {}
    for arg in argv[1:] if lister is packages else argv:
        seen.update(dict.fromkeys(lister(arg)))
    print("\n".join(seen))


if __name__ == "__main__":
    main(sys.argv[1:])
