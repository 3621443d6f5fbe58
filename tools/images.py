"""Build, push and run the four service images with whatever container engine is here.

    python tools/images.py build [--service NAME ...] [--push REGISTRY] [--prune-layers]
    python tools/images.py base        # make the local Debian base image (no registry)
    python tools/images.py space       # exit 3 when the disk cannot hold the builds

Tags come from :mod:`kaito_sdk.images`. The engine is Docker when a Docker daemon
answers, else buildah (build) with podman (run, push), which need no daemon. Where the
Dockerfiles' default base (``python:3.11.11-slim-bookworm``) cannot be pulled, a base is
made locally with ``debootstrap`` (Debian bookworm, its python3 and venv) and passed as
``PYTHON_IMAGE``. With buildah, this machine's pip configuration (its find-links,
extra indexes, constraint and certificate) is bind-mounted into every build, so the
builds use the same package mirrors as the host's pip.
"""

# ruff: noqa: S603, S607 - runs the container engine and system tools with fixed arguments
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("kaito_sdk") is None:  # run from a checkout without the SDK
    sys.path.insert(0, str(ROOT / "sdk" / "src"))
from kaito_sdk.images import IMAGE_REGISTRY, IMAGE_TAG, SERVICE_IMAGES, image_for  # noqa: E402

#: The base image the Dockerfiles name for a connected builder.
DEFAULT_PYTHON_IMAGE = "python:3.11.11-slim-bookworm"
#: The base made locally with debootstrap where no registry can be reached.
LOCAL_PYTHON_IMAGE = "localhost/kaito-python:3.11-bookworm"
#: Debian packages of the local base: the interpreter, venv (builder stage), CA roots.
LOCAL_BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: The index the Dockerfiles install torch from; reachable only from connected machines.
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
#: Build order: the small operator first, so a broken engine shows within a minute.
BUILD_ORDER = ("operator", "inference", "ragengine", "tuning")
#: Where generated build inputs (pip.conf, the base rootfs) are kept.
WORK_DIR = Path(os.environ.get("KAITO_IMAGES_WORK_DIR", "/var/tmp/kaito-images"))  # noqa: S108
#: Process and file limits containers get (this sandbox refuses the engines' defaults).
NPROC_LIMIT = 32768
#: The label holding the digest of what an image was built from (see context_digest).
CONTEXT_LABEL = "io.kaito.build-context"
#: What the Dockerfiles copy from the repository root: an image is up to date while
#: none of these (nor its Dockerfile, build options, tag or revision) changed.
CONTEXT_PATHS = ("sdk", "services", "presets", "constraints", "tools/image_requirements.py")
#: Disk each build needs while it runs, in GB: the final image plus the stages it is
#: built from (the torch venv twice, the embedded model twice), measured with buildah
#: 1.28 on the local base; with --prune-layers the stages go once the image is built.
BUILD_SPACE_GB = {"operator": 0.6, "inference": 4.5, "ragengine": 4.0, "tuning": 4.5}
#: Exit status of ``space`` when the disk cannot hold the builds.
NO_SPACE = 3


class ImageError(RuntimeError):
    """An image could not be built, found or pushed; the message says which and why."""


@dataclass(frozen=True)
class Engine:
    """The commands that build (``builder``) and run or push (``runner``) images."""

    builder: str
    runner: str
    run_options: tuple[str, ...] = ()
    """Options every container needs here (OCI runtime, rlimits), found by :func:`find_engine`."""

    @property
    def is_docker(self) -> bool:
        """Docker builds and runs itself; buildah/podman share containers-storage."""
        return self.builder == "docker"


@dataclass(frozen=True)
class Built:
    """One built image: its reference, size in bytes and build time in seconds."""

    service: str
    image: str
    size: int
    seconds: float
    up_to_date: bool = False
    """The image was already built from the same context: nothing was rebuilt."""

    def line(self) -> str:
        """The progress line for this image."""
        if self.up_to_date:
            return (
                f"{SERVICE_IMAGES[self.service]}: {self.image} up to date "
                f"(built from this context before), {self.size / 1e9:.2f} GB"
            )
        return (
            f"{SERVICE_IMAGES[self.service]}: {self.image} built in {self.seconds:.0f} s, "
            f"{self.size / 1e9:.2f} GB"
        )


@dataclass
class PipMirrors:
    """The host pip's package sources, as a pip.conf plus the local paths it names."""

    config: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    local_torch: bool = False


def _run(
    argv: list[str],
    *,
    check: bool = True,
    timeout: float | None = None,
    stdin: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` capturing text output; raise :class:`ImageError` with its stderr."""
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=timeout, stdin=stdin
    )
    if check and done.returncode != 0:
        raise ImageError(f"{' '.join(argv[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time on this machine: CI starts one in the background and the
    ``images`` nox session's own build waits for it, then finds every layer cached."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with (WORK_DIR / ".build.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _container_limits() -> tuple[str, ...]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ("--ulimit", f"nofile={soft}:{soft}", "--ulimit", f"nproc={NPROC_LIMIT}:{NPROC_LIMIT}")


def find_engine(probe_image: str | None = None) -> Engine | None:
    """Docker if its daemon answers, else buildah + podman; None when neither is usable.

    With ``probe_image`` (an image present locally) podman's run options are probed:
    the defaults first, then runc with explicit rlimits (crun refuses hybrid cgroups and
    both refuse raising rlimits where CAP_SYS_RESOURCE is missing, as in this sandbox).
    """
    if shutil.which("docker") and _run(["docker", "info"], check=False).returncode == 0:
        return Engine("docker", "docker")
    if not (shutil.which("buildah") and shutil.which("podman")):
        return None
    if probe_image is None:
        return Engine("buildah", "podman")
    candidates: list[tuple[str, ...]] = [()]
    if shutil.which("runc"):
        candidates.append(("--runtime", "runc", *_container_limits()))
    for options in candidates:
        probe = ["podman", "run", "--rm", *options, "--entrypoint", "true", probe_image]
        if _run(probe, check=False, timeout=120).returncode == 0:
            return Engine("buildah", "podman", options)
    return None


def image_exists(engine: Engine, image: str) -> bool:
    """Whether ``image`` is in the engine's local storage."""
    if engine.is_docker:
        return _run(["docker", "image", "inspect", image], check=False).returncode == 0
    return _run(["podman", "image", "exists", image], check=False).returncode == 0


def image_size(engine: Engine, image: str) -> int:
    """Uncompressed size of ``image`` in bytes."""
    done = _run([engine.runner, "image", "inspect", "--format", "{{.Size}}", image])
    return int(done.stdout.strip())


def make_local_base(image: str = LOCAL_PYTHON_IMAGE) -> str:
    """Build a Debian bookworm minbase with python3 and venv and import it as ``image``."""
    if shutil.which("debootstrap") is None:
        raise ImageError("no base image can be pulled and debootstrap is not installed")
    rootfs = WORK_DIR / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", f"--include={LOCAL_BASE_PACKAGES}"]
    _run([*argv, "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=1800)
    # apt's caches and package lists, documentation and translations: not for a service.
    junk_dirs = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
    for junk in (*junk_dirs, "usr/share/info", "usr/share/locale"):
        for child in (rootfs / junk).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = ["--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]']
    _run(["podman", "import", *changes, "-", image], stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return image


def python_image(engine: Engine, wanted: str | None) -> str:
    """The base to build on: ``wanted``, else the Dockerfiles' default if it can be had,
    else the local debootstrap base (made once)."""
    if wanted:
        if not image_exists(engine, wanted):
            _run([engine.runner, "pull", wanted], timeout=600)
        return wanted
    if image_exists(engine, DEFAULT_PYTHON_IMAGE):
        return DEFAULT_PYTHON_IMAGE
    if image_exists(engine, LOCAL_PYTHON_IMAGE):
        return LOCAL_PYTHON_IMAGE
    pulled = _run([engine.runner, "pull", DEFAULT_PYTHON_IMAGE], check=False, timeout=300)
    if pulled.returncode == 0:
        return DEFAULT_PYTHON_IMAGE
    if engine.is_docker:
        raise ImageError(f"cannot pull {DEFAULT_PYTHON_IMAGE}: {pulled.stderr[-500:]}")
    print(f"{DEFAULT_PYTHON_IMAGE} cannot be pulled; making {LOCAL_PYTHON_IMAGE} with debootstrap")
    return make_local_base()


def _local_path(location: str) -> str | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return parsed.path
    return location if location.startswith("/") else None


def pip_mirrors() -> PipMirrors:
    """The host pip's find-links, indexes, constraint and certificate (``pip config list``)."""
    done = _run([sys.executable, "-m", "pip", "config", "list"], check=False)
    settings: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in {"find-links", "extra-index-url", "index-url", "constraint", "cert"}:
            settings[name] = value.strip().strip("'\"")
    mirrors = PipMirrors(config=settings)
    for name in ("find-links", "extra-index-url", "index-url", "constraint", "cert"):
        for location in settings.get(name, "").split():
            path = _local_path(location)
            if path is None or not Path(path).exists():
                continue
            # An index's root holds its packages' files too: mount the parent of simple/.
            mount = str(Path(path).parent) if path.rstrip("/").endswith("/simple") else path
            if mount not in mirrors.paths:
                mirrors.paths.append(mount)
            if name == "find-links" and any(Path(path).glob("torch-*+cpu-*.whl")):
                mirrors.local_torch = True
    return mirrors


def _torch_index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{TORCH_INDEX_URL}/torch/", timeout=5):  # noqa: S310
            return True
    except OSError:
        return False


def build_options(engine: Engine, base: str, mirrors: PipMirrors | None) -> list[str]:
    """Options shared by every build: base image, pip mirrors, runtime, host network."""
    options = ["--build-arg", f"PYTHON_IMAGE={base}"]
    if engine.is_docker:
        return [*options, "--network", "host"]
    options += ["--layers", "--network", "host", *engine.run_options]
    if mirrors is None:
        return options
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    conf = WORK_DIR / "pip.conf"
    lines = ["[global]"] + [f"{key} = {value}" for key, value in mirrors.config.items()]
    conf.write_text("\n".join(lines) + "\n")
    options += ["--volume", f"{conf}:/etc/pip.conf:ro"]
    options += [arg for path in mirrors.paths for arg in ("--volume", f"{path}:{path}:ro")]
    if mirrors.local_torch and not _torch_index_reachable():
        # The CPU torch wheel lies in the host's find-links: install it from there (pip
        # prefers 2.13.0+cpu over a plain 2.13.0 from the index).
        index = mirrors.config.get("index-url", "https://pypi.org/simple")
        options += ["--build-arg", f"TORCH_INDEX_URL={index}"]
    return options


def revision() -> str:
    """The git commit being built (``unknown`` outside a checkout)."""
    done = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    return done.stdout.strip() or "unknown"


def storage_root(engine: Engine) -> Path:
    """The folder the engine keeps images in (where the builds need disk)."""
    if engine.is_docker:
        done = _run(["docker", "info", "--format", "{{.DockerRootDir}}"], check=False)
    else:
        done = _run(["podman", "info", "--format", "{{.Store.GraphRoot}}"], check=False)
    path = Path(done.stdout.strip() or "/var/lib/containers")
    while not path.exists():
        path = path.parent
    return path


class NoSpaceError(ImageError):
    """The disk cannot hold a build (the message says how much is free and needed)."""


def space_report(engine: Engine, services: list[str], *, tag: str = IMAGE_TAG) -> tuple[bool, str]:
    """Whether the engine's disk can hold the builds of those ``services`` whose image is
    not in local storage yet, and a line saying so."""
    root = storage_root(engine)
    free_gb = shutil.disk_usage(root).free / 1e9
    missing = [s for s in services if not image_exists(engine, image_for(s, tag=tag))]
    need_gb = sum(BUILD_SPACE_GB[s] for s in missing)
    enough = free_gb >= need_gb
    verdict = "enough disk" if enough else "not enough disk"
    todo = ", ".join(missing) or "nothing (every image is built)"
    line = (
        f"{verdict}: {free_gb:.1f} GB free under {root}; to build: {todo}, about {need_gb:.1f} GB"
    )
    return enough, line


def context_digest(service: str, argv: list[str]) -> str:
    """A digest of everything ``service``'s image is built from: the build command
    (options, tag, revision), its Dockerfile and every file under :data:`CONTEXT_PATHS`
    that git tracks or would track (ignored files are not in the build context either)."""
    ls_files = ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others"]
    paths = [*CONTEXT_PATHS, f"services/{service}/Dockerfile"]
    listed = _run([*ls_files, "--exclude-standard", "--", *paths], check=False)
    digest = hashlib.sha256("\0".join(argv).encode())
    for name in sorted(set(filter(None, listed.stdout.split("\0")))):
        path = ROOT / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def image_label(engine: Engine, image: str, label: str) -> str | None:
    """The value of ``label`` on a local ``image`` (None when the image or label is absent)."""
    done = _run(
        [engine.runner, "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', image],
        check=False,
    )
    value = done.stdout.strip()
    return value if done.returncode == 0 and value and value != "<no value>" else None


def prune_dangling(engine: Engine) -> None:
    """Remove untagged images: the stages and cached layers a finished build left."""
    _run([engine.runner, "image", "prune", "--force"], check=False, timeout=600)


def build(
    engine: Engine,
    service: str,
    options: list[str],
    *,
    tag: str = IMAGE_TAG,
    force: bool = False,
) -> Built:
    """Build ``service``'s Dockerfile from the repository root; its log goes to WORK_DIR.

    An image built before from the same context (its :data:`CONTEXT_LABEL`) is kept as it
    is unless ``force``: a second build in the same checkout costs nothing even where the
    layer cache was pruned.
    """
    image = image_for(service, tag=tag)
    dockerfile = ROOT / "services" / service / "Dockerfile"
    argv = [engine.builder, "build" if engine.is_docker else "bud", "-f", str(dockerfile)]
    argv += [*options, "--build-arg", f"VERSION={tag}", "--build-arg", f"REVISION={revision()}"]
    digest = context_digest(service, argv)
    if not force and image_label(engine, image, CONTEXT_LABEL) == digest:
        return Built(service, image, image_size(engine, image), 0.0, up_to_date=True)
    free_gb = shutil.disk_usage(storage_root(engine)).free / 1e9
    if free_gb < BUILD_SPACE_GB[service]:
        raise NoSpaceError(
            f"not enough disk to build {image}: {free_gb:.1f} GB free under "
            f"{storage_root(engine)}, about {BUILD_SPACE_GB[service]:.1f} GB needed"
        )
    argv += ["--label", f"{CONTEXT_LABEL}={digest}", "-t", image, str(ROOT)]
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log = WORK_DIR / f"build-{service}.log"
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - started
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise ImageError(f"building {image} failed ({code}); last lines of {log}:\n{tail}")
    return Built(service, image, image_size(engine, image), seconds)


def insecure(registry: str) -> bool:
    """Loopback registries are spoken to over plain HTTP (as Docker does by default)."""
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    return host == "localhost" or host.startswith("127.")


def push(engine: Engine, service: str, registry: str, *, tag: str = IMAGE_TAG) -> str:
    """Tag ``service``'s image under ``registry`` and push it; returns the pushed reference."""
    source = image_for(service, tag=tag)
    target = image_for(service, registry=registry.rstrip("/"), tag=tag)
    _run([engine.runner, "tag", source, target])
    argv = [engine.runner, "push"]
    if not engine.is_docker and insecure(registry):
        argv.append("--tls-verify=false")
    _run([*argv, target], timeout=1800)
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="images.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the service images (and push them)")
    build_cmd.add_argument("--service", action="append", choices=BUILD_ORDER, dest="services")
    build_cmd.add_argument("--tag", default=IMAGE_TAG)
    build_cmd.add_argument("--push", metavar="REGISTRY", help=f"e.g. {IMAGE_REGISTRY}")
    build_cmd.add_argument("--python-image", help=f"base image (default {DEFAULT_PYTHON_IMAGE})")
    build_cmd.add_argument(
        "--prune-layers",
        action="store_true",
        help="remove each build's stages and cached layers once its image is built "
        "(small disks, CI); the next code-only change then rebuilds from scratch",
    )
    build_cmd.add_argument(
        "--force", action="store_true", help="rebuild images already built from this context"
    )
    commands.add_parser("base", help=f"make {LOCAL_PYTHON_IMAGE} with debootstrap")
    space_cmd = commands.add_parser(
        "space", help=f"exit {NO_SPACE} when the disk cannot hold the builds still to do"
    )
    space_cmd.add_argument("--service", action="append", choices=BUILD_ORDER, dest="services")
    space_cmd.add_argument("--tag", default=IMAGE_TAG)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with build_lock():
            return _command(args)
    except NoSpaceError as exc:
        print(f"images.py: {exc}", file=sys.stderr)
        return NO_SPACE
    except ImageError as exc:
        print(f"images.py: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command (under the build lock)."""
    if args.command == "base":
        print(make_local_base())
        return 0
    if args.command == "space":
        probe = find_engine()
        if probe is None:
            raise ImageError("no container engine: install docker, or buildah and podman")
        wanted = [s for s in BUILD_ORDER if s in (args.services or BUILD_ORDER)]
        enough, line = space_report(probe, wanted, tag=args.tag)
        print(line)
        return 0 if enough else NO_SPACE
    engine = find_engine()
    if engine is None:
        raise ImageError("no container engine: install docker, or buildah and podman")
    base = python_image(engine, args.python_image)
    engine = find_engine(base) or engine
    options = build_options(engine, base, None if engine.is_docker else pip_mirrors())
    print(f"engine: {engine.builder}/{engine.runner}; base image: {base}", flush=True)
    services = [s for s in BUILD_ORDER if s in (args.services or BUILD_ORDER)]
    started = time.monotonic()
    for service in services:
        print(f"{SERVICE_IMAGES[service]}: building ...", flush=True)
        built = build(engine, service, options, tag=args.tag, force=args.force)
        print(built.line(), flush=True)
        if args.prune_layers and not built.up_to_date:
            prune_dangling(engine)
        if args.push:
            pushed = push(engine, service, args.push, tag=args.tag)
            print(f"{SERVICE_IMAGES[service]}: pushed {pushed}", flush=True)
    print(f"{len(services)} images in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
