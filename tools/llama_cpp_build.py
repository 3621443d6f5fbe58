"""Build llama.cpp's ``llama-server`` from the sources vendored in the llama-cpp-python sdist.

The CPU benchmark (``bench/inference_compare.py``) compares our server with llama.cpp on
the same GGUF file. No llama.cpp binary is reachable from our machines, but the
llama-cpp-python sdist is (PyPI mirror), and it carries llama.cpp's sources under
``vendor/llama.cpp``. :func:`build` downloads the sdist with pip, extracts only that
folder, configures it with cmake (``GGML_NATIVE=ON``: the kernels are compiled for the
CPU of this machine), builds the ``llama-server`` target (about 9 minutes on 2 cores),
and keeps the binary and the shared libraries of the build it links against (found with
``ldd``) in ``$KAITO_CACHE_DIR/tools/llama.cpp/<version>-<cpu flags digest>/``
(``KAITO_CACHE_DIR`` defaults to ``~/.cache/kaito``). The build tree is removed.

A binary built with ``GGML_NATIVE`` may use instructions another CPU lacks, so the cache
folder is keyed by a digest of this CPU's flags (``/proc/cpuinfo``): another CPU gets its
own build. Besides the brief's cmake flags, the build sets ``LLAMA_USE_PREBUILT_UI=OFF``
(the web UI would otherwise be fetched from Hugging Face, which our machines cannot
reach) and an ``$ORIGIN`` rpath, so the binary finds its libraries beside it.

``--isa avx2`` builds for AVX2 CPUs instead (``GGML_NATIVE=OFF`` with SSE4.2, AVX, AVX2,
FMA, F16C and BMI2 on, AVX-512 off), cached in ``<version>-avx2/``: on an AVX-512
machine it stands in for llama.cpp on an AVX2-only CPU, beside our server held to AVX2
kernels (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``).

Usage::

    python tools/llama_cpp_build.py [--isa native|avx2] [--rebuild] [--print-path]
"""

# ruff: noqa: S603, S607 - runs fixed tools (pip, cmake, ldd, the built binary)

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "BINARY",
    "VERSION",
    "LlamaCppUnavailableError",
    "build",
    "build_command",
    "cache_dir",
    "cache_root",
    "cached_binary",
    "configure_command",
    "cpu_flags",
    "flags_digest",
    "parse_ldd",
    "progress",
]

#: The llama-cpp-python release whose vendored llama.cpp is built.
VERSION = "0.3.36"
#: The one build target kept.
BINARY = "llama-server"
#: How many characters of the CPU flags' sha256 name the cache folder.
DIGEST_CHARS = 12
#: The instruction-set cmake flags of each build kind: this CPU's, or any AVX2 CPU's.
ISA_FLAGS = {
    "native": ("-DGGML_NATIVE=ON",),
    "avx2": (
        "-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_AVX2=ON",
        "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_AVX512=OFF",
    ),
}  # fmt: skip


class LlamaCppUnavailableError(RuntimeError):
    """llama-server cannot be built or run here; the message says why."""


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the ``--print-path`` line)."""
    print(f"[llama.cpp] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    """Print a line when a phase starts and one with its duration when it ends."""
    progress(f"{name} ...")
    start = time.monotonic()
    yield
    progress(f"{name}: done in {time.monotonic() - start:.1f} s")


# --- where the build is cached ---------------------------------------------------------


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The flags of the first CPU in ``cpuinfo`` (empty where the file is unreadable)."""
    try:
        with cpuinfo.open(encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return value.split()
    except OSError:
        pass
    return []


def flags_digest(flags: Sequence[str]) -> str:
    """A short digest of a CPU flag set (order and repeats do not matter)."""
    canonical = " ".join(sorted(set(flags)))
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_CHARS]


def cache_root() -> Path:
    """``$KAITO_CACHE_DIR/tools/llama.cpp`` (``KAITO_CACHE_DIR`` defaults to ``~/.cache/kaito``)."""
    base = os.environ.get("KAITO_CACHE_DIR") or str(Path.home() / ".cache" / "kaito")
    return Path(base) / "tools" / "llama.cpp"


def cache_dir(
    version: str, flags: Sequence[str], root: Path | None = None, *, isa: str = "native"
) -> Path:
    """The folder of one build: ``<root>/<version>-<flags digest>`` for this CPU (``isa``
    native), ``<root>/<version>-avx2`` for any AVX2 CPU."""
    key = flags_digest(flags) if isa == "native" else isa
    return (root or cache_root()) / f"{version}-{key}"


def cached_binary(directory: Path) -> Path | None:
    """``directory/llama-server`` when a complete build is there, else None."""
    binary = directory / BINARY
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


# --- build -------------------------------------------------------------------------------


def configure_command(source: Path, build_dir: Path, isa: str = "native") -> list[str]:
    """The cmake configure step (the brief's flags with ``isa``'s instruction sets, no web
    UI download, ``$ORIGIN`` rpath)."""
    return [
        "cmake", "-S", str(source), "-B", str(build_dir),
        "-DLLAMA_CURL=OFF", *ISA_FLAGS[isa], "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    ]  # fmt: skip


def build_command(build_dir: Path, jobs: int = 2) -> list[str]:
    """The cmake build step for the one target."""
    return ["cmake", "--build", str(build_dir), "--target", BINARY, f"-j{jobs}"]


def parse_ldd(text: str) -> dict[str, Path | None]:
    """``ldd`` output as {library name: resolved path, or None where "not found"}.
    Lines without ``=>`` (the vDSO, the loader itself) are left out."""
    libraries: dict[str, Path | None] = {}
    for line in text.splitlines():
        name, arrow, target = line.strip().partition("=>")
        if not arrow:
            continue
        target = target.strip()
        if target.startswith("not found"):
            libraries[name.strip()] = None
        else:
            libraries[name.strip()] = Path(re.sub(r"\s*\(0x[0-9a-f]+\)$", "", target))
    return libraries


def _ldd(binary: Path) -> dict[str, Path | None]:
    """What ``binary`` links against, as the loader resolves it now."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode:
        raise LlamaCppUnavailableError(f"ldd {binary} failed: {result.stderr.strip()}")
    return parse_ldd(result.stdout)


def _download_sdist(workdir: Path, version: str) -> Path:
    """``pip download`` the llama-cpp-python sdist from the machine's package mirrors."""
    with _phase(f"pip download llama-cpp-python=={version} (sdist, about 75 MB)"):
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:"]
        subprocess.run(
            [*pip, "--no-deps", f"llama-cpp-python=={version}", "-d", str(workdir)], check=True
        )
    sdist = next(workdir.glob(f"llama_cpp_python-{version}.tar.gz"), None)
    if sdist is None:
        raise LlamaCppUnavailableError(f"pip download left no llama_cpp_python-{version}.tar.gz")
    return sdist


def _extract_vendor(sdist: Path, workdir: Path) -> Path:
    """Extract only ``<sdist>/vendor/llama.cpp``; return that folder."""
    with _phase(f"extract vendor/llama.cpp from {sdist.name}"), tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in f"{m.name}/"]
        if not members:
            raise LlamaCppUnavailableError(f"{sdist.name} has no vendor/llama.cpp")
        archive.extractall(workdir, members=members, filter="data")
    top = members[0].name.split("/", 1)[0]
    return workdir / top / "vendor" / "llama.cpp"


def _run_logged(command: list[str], log: Path, *, percent_lines: bool = False) -> None:
    """Run ``command`` with its output in ``log``; with ``percent_lines``, print a progress
    line at every tenth of cmake's ``[ NN%]`` counter. A failure raises with the log's tail."""
    shown = -10
    with (
        log.open("a") as out,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None  # stdout=PIPE above
        for line in process.stdout:
            out.write(line)
            match = re.match(r"\[\s*(\d+)%\]", line)
            if percent_lines and match and int(match.group(1)) >= shown + 10:
                shown = int(match.group(1)) // 10 * 10
                progress(f"  {shown}%: {line.strip()[:100]}")
    if process.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise LlamaCppUnavailableError(
            f"{' '.join(command[:3])} failed ({process.returncode}):\n{tail}"
        )


def _compile(source: Path, workdir: Path, isa: str) -> Path:
    """Configure and build ``llama-server`` for ``isa``; return the built binary."""
    build_dir = workdir / "build"
    log = workdir / "build.log"
    with _phase(f"cmake configure ({' '.join(flag[2:] for flag in ISA_FLAGS[isa])})"):
        _run_logged(configure_command(source, build_dir, isa), log)
    with _phase(f"cmake --build --target {BINARY} -j2 (about 9 minutes on 2 cores)"):
        _run_logged(build_command(build_dir), log, percent_lines=True)
    binary = build_dir / "bin" / BINARY
    if not binary.is_file():
        raise LlamaCppUnavailableError(f"the build succeeded but left no {binary}")
    return binary


def _stage(binary: Path, build_root: Path, staging: Path) -> list[str]:
    """Copy the binary and the libraries of the build it links against into ``staging``;
    check that the copy finds all of them there and runs. Return the libraries' names."""
    staging.mkdir()
    own = {
        name: path.resolve()
        for name, path in _ldd(binary).items()
        if path is not None and build_root.resolve() in path.resolve().parents
    }
    for name, path in own.items():
        shutil.copy2(path, staging / name)  # the file itself, under the name it is loaded by
    copied = staging / BINARY
    shutil.copy2(binary, copied)
    for name, found in _ldd(copied).items():
        if found is None or (name in own and found.resolve().parent != staging.resolve()):
            raise LlamaCppUnavailableError(f"{copied} resolves {name} to {found}, not beside it")
    check = subprocess.run([str(copied), "--version"], capture_output=True, text=True, check=False)
    if check.returncode:
        raise LlamaCppUnavailableError(f"{copied} --version failed: {check.stderr[-500:]}")
    banner = (check.stdout + check.stderr).strip().splitlines()
    progress(f"{BINARY} --version: {banner[0] if banner else '(no output)'}")
    return sorted(own)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One build at a time per cache (a second caller waits and then reuses the first's)."""
    with (root / ".build.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(*, rebuild: bool = False, version: str = VERSION, isa: str = "native") -> Path:
    """Build (or reuse) ``llama-server`` for this CPU (or for ``isa`` avx2, any AVX2 CPU);
    return the binary's path."""
    target = cache_dir(version, cpu_flags(), isa=isa)
    found = cached_binary(target)
    if found and not rebuild:
        progress(f"using the cached build {found}")
        return found
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    waited = time.monotonic()
    with _build_lock(root):
        found = cached_binary(target)
        if found and not rebuild:
            progress(f"waited {time.monotonic() - waited:.0f} s for another build: {found}")
            return found
        for tool in ("cmake", "c++", "ldd"):
            if shutil.which(tool) is None:
                raise LlamaCppUnavailableError(f"{tool} is not installed")
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="build-", dir=root) as scratch:
            workdir = Path(scratch)
            source = _extract_vendor(_download_sdist(workdir, version), workdir)
            binary = _compile(source, workdir, isa)
            staging = workdir / "staging"
            libraries = _stage(binary, workdir / "build", staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # complete or absent: cached_binary never sees a part
    progress(
        f"built llama-server (llama-cpp-python {version}) in {time.monotonic() - start:.0f} s "
        f"-> {target} (with {', '.join(libraries) or 'no shared libraries of its own'})"
    )
    return target / BINARY


def main(argv: list[str] | None = None) -> int:
    """The command line: build (or reuse) llama-server; ``--print-path`` prints its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build even when cached")
    parser.add_argument("--print-path", action="store_true", help="print the binary's path")
    parser.add_argument(
        "--isa", choices=sorted(ISA_FLAGS), default="native", help="this CPU's or AVX2 kernels"
    )
    args = parser.parse_args(argv)
    try:
        binary = build(rebuild=args.rebuild, isa=args.isa)
    except (LlamaCppUnavailableError, OSError, subprocess.CalledProcessError) as exc:
        progress(f"unavailable: {exc}")
        return 2
    if args.print_path:
        print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
