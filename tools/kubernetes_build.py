"""Build kube-apiserver, kube-controller-manager and kube-scheduler from Debian's sources.

No binary kube-apiserver is reachable from our machines, but Debian's ``kubernetes``
*source* package is (Kubernetes 1.20.2), and so are Debian's Go and etcd. :func:`build`
installs the Debian packages it needs when missing, fetches the source with a temporary
apt source list (the machine's own apt setup is left alone), swaps the vendored
``reflect2`` (1.0.1 crashes on Go >= 1.18) for Debian's copy, and runs
``CGO_ENABLED=0 make WHAT=...``. The binaries are cached under
``$KAITO_CACHE_DIR/kubernetes/<version>/bin`` (``KAITO_CACHE_DIR`` defaults to
``~/.cache/kaito``); later calls reuse them. ``tools/local_cluster.py`` runs them.

Usage::

    python tools/kubernetes_build.py [--rebuild]
"""

# ruff: noqa: S603, S607 - runs fixed system tools (apt-get, dpkg-source, make)

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "COMPONENTS",
    "ClusterUnavailableError",
    "build",
    "cache_root",
    "cached_binaries",
    "ensure_binaries",
    "machine_debian_source",
    "progress",
]

#: The control plane binaries built from the source package.
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: Debian packages needed to build and run the control plane (command or path -> package).
SYSTEM_PACKAGES = {
    "go": "golang-go",
    "make": "make",
    "dpkg-source": "dpkg-dev",
    "rsync": "rsync",
    "jq": "jq",
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
    "openssl": "openssl",
    "/usr/share/gocode/src/github.com/modern-go/reflect2": "golang-github-modern-go-reflect2-dev",
}
SOURCE_PACKAGE = "kubernetes"
REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")


class ClusterUnavailableError(RuntimeError):
    """The control plane cannot be built or started here; the message says why."""


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the ``KUBECONFIG=`` line)."""
    print(f"[local-cluster] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    """Print a line when a phase starts and one with its duration when it ends."""
    progress(f"{name} ...")
    start = time.monotonic()
    yield
    progress(f"{name}: done in {time.monotonic() - start:.1f} s")


def cache_root() -> Path:
    """``$KAITO_CACHE_DIR/kubernetes`` (``KAITO_CACHE_DIR`` defaults to ``~/.cache/kaito``)."""
    base = os.environ.get("KAITO_CACHE_DIR") or str(Path.home() / ".cache" / "kaito")
    return Path(base) / "kubernetes"


def cached_binaries(root: Path | None = None) -> Path | None:
    """The ``bin`` folder of the newest complete cached build, or None."""
    root = root or cache_root()
    if not root.is_dir():
        return None
    complete = [
        version / "bin"
        for version in root.iterdir()
        if all((version / "bin" / name).is_file() for name in COMPONENTS)
    ]
    return max(complete, key=lambda p: p.stat().st_mtime) if complete else None


# --- build -------------------------------------------------------------------------------


def _missing_system_packages() -> list[str]:
    """Debian packages whose command or path is absent."""
    missing = []
    for thing, package in SYSTEM_PACKAGES.items():
        present = Path(thing).exists() if thing.startswith("/") else shutil.which(thing)
        if not present:
            missing.append(package)
    return missing


def install_system_packages() -> None:
    """``apt-get install`` what the build and the run need, when something is missing."""
    missing = _missing_system_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterUnavailableError(
            f"missing Debian packages {missing}; install them: apt-get install {' '.join(missing)}"
        )
    with _phase(f"apt-get install {' '.join(missing)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", *missing]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(install, env=env, check=True, capture_output=True)


def machine_debian_source(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str, str]:
    """(archive URI, suite, signed-by keyring) of the machine's main Debian apt source:
    the first ``.../debian`` archive in ``sources.list.d/*.sources`` (deb822), else in
    the one-line ``sources.list`` files."""
    sources_dir = apt_dir / "sources.list.d"
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            uris = fields.get("uris", "").split()
            suites = fields.get("suites", "").split()
            if uris and suites and uris[0].rstrip("/").endswith("/debian"):
                return uris[0], suites[0], fields.get("signed-by", "")
    legacy = [apt_dir / "sources.list", *sorted(sources_dir.glob("*.list"))]
    for path in legacy:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+/debian/?)\s+(\S+)", line)
            if match:
                return match.group(2), match.group(3), ""
    raise ClusterUnavailableError("no Debian archive found in the machine's apt sources")


def _apt_options(workdir: Path) -> list[str]:
    """apt-get options that use only a temporary source list and lists directory."""
    uri, suite, keyring = machine_debian_source()
    lists = workdir / "apt-lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    signed = f"[signed-by={keyring}] " if keyring else ""
    source_list = workdir / "kaito-deb-src.list"
    source_list.write_text(f"deb-src {signed}{uri} {suite} main\n")
    return [
        "-o",
        "APT::Sandbox::User=root",  # the lists live in a root-only temporary directory
        "-o",
        f"Dir::Etc::SourceList={source_list}",
        "-o",
        "Dir::Etc::SourceParts=/dev/null",
        "-o",
        f"Dir::State::Lists={lists}",
    ]


def _fetch_source(workdir: Path) -> tuple[str, Path]:
    """Download and unpack the ``kubernetes`` source package; (version, source tree)."""
    options = _apt_options(workdir)
    with _phase("apt-get update (temporary deb-src list)"):
        subprocess.run(["apt-get", *options, "-qq", "update"], check=True)
    with _phase(f"apt-get source {SOURCE_PACKAGE}"):
        subprocess.run(
            ["apt-get", *options, "-qq", "source", "--download-only", SOURCE_PACKAGE],
            cwd=workdir,
            check=True,
        )
    dsc = next(workdir.glob(f"{SOURCE_PACKAGE}_*.dsc"), None)
    if dsc is None:
        raise ClusterUnavailableError(f"apt-get source left no {SOURCE_PACKAGE}_*.dsc")
    version = dsc.stem.split("_", 1)[1]
    tree = workdir / "k8s"
    with _phase("dpkg-source -x"):
        subprocess.run(
            ["dpkg-source", "-x", dsc.name, tree.name], cwd=workdir, check=True, capture_output=True
        )
    return version, tree


def _compile(tree: Path) -> Path:
    """Swap reflect2 for Debian's copy and ``make`` the components; the binaries' folder."""
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    shutil.rmtree(vendored, ignore_errors=True)
    shutil.copytree(REFLECT2, vendored)
    what = " ".join(f"cmd/{name}" for name in COMPONENTS)
    with _phase(f"make WHAT={what!r} (about 7 minutes on 2 cores)"):
        env = {**os.environ, "CGO_ENABLED": "0"}
        log = tree / "build.log"
        with log.open("wb") as out:
            code = subprocess.run(
                ["make", f"WHAT={what}"], cwd=tree, env=env, stdout=out, stderr=out, check=False
            ).returncode
        if code:
            tail = log.read_text(errors="replace")[-3000:]
            raise ClusterUnavailableError(f"make failed ({code}):\n{tail}")
    found = list((tree / "_output").glob("**/bin/kube-apiserver"))
    if not found:
        raise ClusterUnavailableError("make succeeded but left no kube-apiserver")
    return found[0].parent


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One build at a time per cache (CI starts one early in the background; a test
    session that needs the binaries meanwhile waits for it instead of building again)."""
    with (root / ".build.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(*, rebuild: bool = False) -> Path:
    """Build (or reuse) the cached binaries; return their folder."""
    cached = cached_binaries()
    if cached and not rebuild:
        progress(f"using cached binaries in {cached}")
        return cached
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    waited = time.monotonic()
    with _build_lock(root):
        cached = cached_binaries()
        if cached and not rebuild:
            progress(f"waited {time.monotonic() - waited:.0f} s for another build: {cached}")
            return cached
        install_system_packages()
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="build-", dir=root) as scratch:
            version, tree = _fetch_source(Path(scratch))
            built = _compile(tree)
            staging = Path(scratch) / "bin"
            staging.mkdir()
            for name in COMPONENTS:
                shutil.copy2(built / name, staging / name)
            target = root / version / "bin"
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)  # complete or absent: cached_binaries never sees a part
    progress(f"built Kubernetes {version} in {time.monotonic() - start:.0f} s -> {target}")
    return target


def ensure_binaries() -> Path:
    """The binaries' folder, building them when absent; ClusterUnavailableError says why not."""
    try:
        return build()
    except ClusterUnavailableError:
        raise
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ClusterUnavailableError(f"cannot build the control plane: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """The command line: build (or reuse) the binaries and print their folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build even when cached")
    args = parser.parse_args(argv)
    try:
        print(build(rebuild=args.rebuild))
    except ClusterUnavailableError as exc:
        progress(f"unavailable: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
