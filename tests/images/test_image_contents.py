"""What the built images are: non-root, within their size targets, without installers.

The images run as uid 10001 (the charts' ``runAsNonRoot`` needs a numeric user), carry no
pip, no bundled wheels, no compiler or build tool, and stay under the size targets of
issue #14 (docs/images.md lists the measured sizes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import images_tool

pytestmark = pytest.mark.images

SERVICES = ["operator", "inference", "ragengine", "tuning"]
#: Size targets in bytes (uncompressed); the tuning image has none.
SIZE_TARGETS = {"operator": 300e6, "inference": 2.5e9, "ragengine": 2.5e9}
#: Executables no final image may carry: Python installers, compilers, build tools. (apt and
#: dpkg stay, as in the official slim base: a non-root, read-only container cannot use them.)
FORBIDDEN_COMMANDS = [
    "pip", "pip3", "pip3.11", "easy_install", "gcc", "cc", "c++", "g++", "clang", "ld", "as",
    "make", "cmake", "ninja", "dpkg-buildpackage",
]  # fmt: skip
#: Python modules that install packages.
FORBIDDEN_MODULES = ["pip", "setuptools", "ensurepip", "wheel"]

#: Prints every forbidden command found on PATH, importable installer module and .whl file.
_PROBE = """
for tool in {commands}; do command -v "$tool" && echo "found command: $tool"; done
python -c 'import importlib.util as u
for m in {modules}:
    u.find_spec(m) and print("found module:", m)'
find / -xdev -name '*.whl' -print 2>/dev/null | sed 's/^/found wheel: /'
exit 0
"""


def _inspect(engine: Any, reference: str, field: str) -> str:
    done = subprocess.run(
        [engine.runner, "image", "inspect", "--format", f"{{{{{field}}}}}", reference],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_as_numeric_non_root_user(
    engine: Any, image: Callable[[str], str], service: str
) -> None:
    assert _inspect(engine, image(service), ".Config.User") == "10001:10001"


@pytest.mark.parametrize("service", SERVICES)
def test_image_carries_no_installer_compiler_or_build_tool(
    engine: Any, image: Callable[[str], str], service: str
) -> None:
    probe = _PROBE.format(commands=" ".join(FORBIDDEN_COMMANDS), modules=FORBIDDEN_MODULES)
    argv = [engine.runner, "run", "--rm", *engine.run_options, "--read-only"]
    argv += ["--entrypoint", "/bin/sh", image(service), "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    found = [line for line in done.stdout.splitlines() if line.startswith("found ")]
    assert found == [], found


@pytest.mark.parametrize("service", sorted(SIZE_TARGETS))
def test_image_is_within_its_size_target(
    engine: Any, image: Callable[[str], str], service: str
) -> None:
    size = images_tool.image_size(engine, image(service))
    assert size < SIZE_TARGETS[service], f"{service}: {size / 1e9:.2f} GB"
