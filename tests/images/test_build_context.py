"""``tools/images.py``'s up-to-date check and disk check, without a container engine:
the digest of a build context follows the files the Dockerfiles copy and nothing else,
and a build that the disk cannot hold stops before it starts, saying how much is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from .conftest import images_tool

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small git checkout shaped like ours, as the tool's ROOT."""
    for name, text in {
        "sdk/pyproject.toml": "[project]\nname='s'\n",
        "services/inference/Dockerfile": "FROM scratch\n",
        "services/inference/src/app.py": "print('v1')\n",
        "constraints/main.txt": "torch==2.13.0\n",
        "docs/readme.md": "not in any image\n",
        ".gitignore": "services/**/build/\n",
    }.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(images_tool, "ROOT", tmp_path)
    return tmp_path


def test_digest_changes_with_the_code_an_image_copies(checkout: Path) -> None:
    argv = ["buildah", "bud", "--build-arg", "REVISION=abc"]
    first = images_tool.context_digest("inference", argv)
    assert images_tool.context_digest("inference", argv) == first
    (checkout / "services/inference/src/app.py").write_text("print('v2')\n")
    assert images_tool.context_digest("inference", argv) != first


def test_digest_ignores_files_outside_the_context_and_ignored_files(checkout: Path) -> None:
    argv = ["buildah", "bud"]
    first = images_tool.context_digest("inference", argv)
    (checkout / "docs/readme.md").write_text("edited\n")
    stale = checkout / "services/inference/build/lib/app.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("a stale build tree\n")
    assert images_tool.context_digest("inference", argv) == first


def test_digest_changes_with_the_build_options(checkout: Path) -> None:
    plain = images_tool.context_digest("inference", ["buildah", "bud"])
    other_base = ["buildah", "bud", "--build-arg", "PYTHON_IMAGE=other"]
    assert images_tool.context_digest("inference", other_base) != plain


def _engine_stub(monkeypatch: pytest.MonkeyPatch, label: str | None, free_gb: float) -> list[Any]:
    ran: list[Any] = []
    monkeypatch.setattr(images_tool, "image_label", lambda *_: label)
    monkeypatch.setattr(images_tool, "image_size", lambda *_: 10**9)
    monkeypatch.setattr(images_tool, "storage_root", lambda _: Path("/"))
    monkeypatch.setattr(images_tool, "revision", lambda: "abc")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(0, 0, int(free_gb * 1e9)))
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: Any) -> Any:
        if argv[0] == "git":
            return real_run(argv, **kwargs)
        ran.append(argv)  # the engine: never reached in these tests
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return ran


def test_an_image_built_from_the_same_context_is_not_rebuilt(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = images_tool.Engine("buildah", "podman")
    argv = ["buildah", "bud", "-f", str(checkout / "services/inference/Dockerfile")]
    argv += ["--build-arg", "VERSION=0.1.0", "--build-arg", "REVISION=abc"]
    label = images_tool.context_digest("inference", argv)
    ran = _engine_stub(monkeypatch, label, free_gb=100)
    built = images_tool.build(engine, "inference", [], tag="0.1.0")
    assert built.up_to_date
    assert ran == []
    assert "up to date" in built.line()


def test_a_build_the_disk_cannot_hold_stops_before_it_starts(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = images_tool.Engine("buildah", "podman")
    ran = _engine_stub(monkeypatch, None, free_gb=1.5)
    with pytest.raises(images_tool.NoSpaceError, match=r"1\.5 GB free .* 4\.5 GB needed"):
        images_tool.build(engine, "inference", [], tag="0.1.0")
    assert ran == []
