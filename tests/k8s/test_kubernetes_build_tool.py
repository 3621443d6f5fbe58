"""tools/kubernetes_build.py without building: where the source comes from, what is cached."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_build_tool() -> ModuleType:
    name = "kaito_tools_kubernetes_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "kubernetes_build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build = load_build_tool()

DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_the_main_archive_of_a_deb822_source_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert build.machine_debian_source(tmp_path) == (
        "http://deb.debian.org/debian",
        "bookworm",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )


def test_a_one_line_source_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.debian.org/debian-security trixie-security main\n"
        "deb [arch=amd64] http://ftp.de.debian.org/debian trixie main contrib\n"
    )
    assert build.machine_debian_source(tmp_path) == (
        "http://ftp.de.debian.org/debian",
        "trixie",
        "",
    )


def test_no_debian_archive_is_a_clear_reason(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "node.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
    )
    with pytest.raises(build.ClusterUnavailableError, match="no Debian archive"):
        build.machine_debian_source(tmp_path)


def test_only_a_complete_build_is_reused(tmp_path: Path) -> None:
    assert build.cached_binaries(tmp_path) is None
    partial = tmp_path / "1.20.5-1" / "bin"
    partial.mkdir(parents=True)
    (partial / "kube-apiserver").write_bytes(b"")
    assert build.cached_binaries(tmp_path) is None
    complete = tmp_path / "1.20.5-2" / "bin"
    complete.mkdir(parents=True)
    for name in build.COMPONENTS:
        (complete / name).write_bytes(b"")
    assert build.cached_binaries(tmp_path) == complete


def test_the_cache_follows_kaito_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    assert build.cache_root() == tmp_path / "kubernetes"
