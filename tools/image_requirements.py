"""Print the third-party requirements of monorepo packages, one per line (stdlib only).

The service Dockerfiles install these in a layer of their own before copying our code, so
a code-only change reuses the layer with torch and every dependency. Arguments are
package directories, each optionally with extras: ``sdk services/tuning[gpu]``.
A requirement on one of our own packages (``kaito-sdk[oci]``) is replaced by that
package's requirements and extras; its wheel comes later, with our code.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_ARG = re.compile(r"^(?P<path>[^\[\]]+)(?:\[(?P<extras>[\w,-]*)\])?$")
_OURS = re.compile(r"^kaito[-_](?P<name>\w+)\s*(?:\[(?P<extras>[\w,\s-]*)\])?", re.IGNORECASE)


def _directory(name: str) -> str:
    """The directory of our package ``kaito-<name>`` (the SDK, or a service)."""
    return "sdk" if name.lower() == "sdk" else f"services/{name.lower()}"


def requirements(arg: str) -> list[str]:
    """Runtime requirements (plus those of the named extras) of the package at ``arg``."""
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
        result += requirements(f"{_directory(ours['name'])}[{extras}]")
    return result


def main(argv: list[str]) -> None:
    """Print the requirements of every package in ``argv``, without duplicates."""
    seen: dict[str, None] = {}
    for arg in argv:
        seen.update(dict.fromkeys(requirements(arg)))
    print("\n".join(seen))


if __name__ == "__main__":
    main(sys.argv[1:])
