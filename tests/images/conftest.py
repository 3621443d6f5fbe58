"""Fixtures of the image smoke tests: the built service images, run as their pods run them.

``nox -s images`` builds the four images (``tools/images.py``) and then runs these tests
with ``KAITO_IMAGES_SMOKE=1``; elsewhere they skip with the reason (the main test session
does not build images). Each pod spec comes from the operator's own builders (or, for
the operator, from what its chart sets), and :func:`pod_container_argv` turns its first
container into ``podman run``: the image's own user, a read-only root filesystem without
podman's extra tmpfs mounts, all capabilities dropped, and writable paths only where the
pod mounts a volume (an ``emptyDir`` becomes a tmpfs; any other volume a host directory
the test names).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Set by ``nox -s images`` after the build; without it these tests skip.
SMOKE_ENV = "KAITO_IMAGES_SMOKE"


def _load_tools() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kaito_tools_images", ROOT / "tools" / "images.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


images_tool = _load_tools()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``images`` marker (these tests run the built images)."""
    config.addinivalue_line("markers", "images: runs the built service images (nox -s images)")


@pytest.fixture(scope="session")
def engine() -> Any:
    """The engine that runs the images (podman or docker), or skip with the reason."""
    if not os.environ.get(SMOKE_ENV):
        pytest.skip(f"the image smoke tests run in `nox -s images` ({SMOKE_ENV}=1 runs them here)")
    found = images_tool.find_engine()
    if found is None:
        pytest.skip("no container engine here: neither a Docker daemon nor buildah and podman")
    probe = images_tool.image_for("operator")
    if not images_tool.image_exists(found, probe):
        pytest.fail(f"{probe} is not built: python tools/images.py build")
    runnable = images_tool.find_engine(probe)
    if runnable is None:
        pytest.skip(f"{found.runner} cannot start a container on this machine")
    return runnable


@pytest.fixture(scope="session")
def image(engine: Any) -> Callable[[str], str]:
    """``image(service)``: the built image of ``service`` (fails if it is missing)."""

    def get(service: str) -> str:
        reference: str = images_tool.image_for(service)
        if not images_tool.image_exists(engine, reference):
            pytest.fail(f"{reference} is not built: python tools/images.py build")
        return reference

    return get


def pod_container_argv(
    engine: Any,
    pod_spec: dict[str, Any],
    *,
    name: str,
    host_dirs: dict[str, Path] | None = None,
    ports: dict[int, int] | None = None,
    host_network: bool = False,
    env: dict[str, str] | None = None,
) -> list[str]:
    """``<engine> run`` for the pod's first container, as the kubelet would start it.

    ``host_dirs`` maps a volume name to the host directory that stands in for it (a
    ConfigMap's files, a PVC); ``ports`` maps a container port to a loopback host port;
    ``env`` adds or replaces variables (ports and API addresses the test chooses).
    """
    [container] = pod_spec["containers"]
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    argv = [engine.runner, "run", "--name", name, *engine.run_options, "--read-only"]
    argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if not engine.is_docker:
        argv.append("--read-only-tmpfs=false")  # no /tmp, /run: the pod gets none either
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        if path == "/dev/shm":  # the pod's memory-backed emptyDir
            argv += ["--shm-size", "1g"]
        elif "emptyDir" in volume:
            argv += ["--tmpfs", f"{path}:rw,mode=1777"]
        elif host_dirs and mount["name"] in host_dirs:
            mode = "ro" if mount.get("readOnly") else "rw"
            argv += ["--volume", f"{host_dirs[mount['name']]}:{path}:{mode}"]
        else:
            raise AssertionError(f"volume {mount['name']!r} ({path}) has no host directory")
    variables = {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}
    variables.update(env or {})
    for key, value in variables.items():
        argv += ["--env", f"{key}={value}"]
    if host_network:
        argv += ["--network", "host"]
    for container_port, host_port in (ports or {}).items():
        argv += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
    command = [*container.get("command", []), *container.get("args", [])]
    if command:
        argv += ["--entrypoint", command[0], container["image"], *command[1:]]
    else:
        argv.append(container["image"])
    return argv


@dataclass
class Running:
    """A detached container; its log is printed when the test ends."""

    engine: Any
    name: str

    def logs(self) -> str:
        """stdout and stderr of the container so far."""
        done = subprocess.run(
            [self.engine.runner, "logs", self.name], capture_output=True, text=True, check=False
        )
        return done.stdout + done.stderr

    def running(self) -> bool:
        """Whether the container is still up."""
        done = subprocess.run(
            [self.engine.runner, "inspect", "--format", "{{.State.Running}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() == "true"

    def wait_healthy(self, url: str, within: float = 300) -> None:
        """Poll ``url`` until it answers 200; fail with the log tail if the container dies."""
        deadline = time.monotonic() + within
        while True:
            if not self.running():
                pytest.fail(f"{self.name} exited:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{url} did not answer 200 within {within:.0f} s:\n{self.logs()[-3000:]}"
                )
            time.sleep(1)


@pytest.fixture
def run_detached(engine: Any) -> Iterator[Callable[..., Running]]:
    """``run_detached(pod_spec, **options)``: start the pod's container in the background."""
    started: list[Running] = []

    def start(pod_spec: dict[str, Any], **options: Any) -> Running:
        name = f"kaito-smoke-{uuid.uuid4().hex[:8]}"
        argv = pod_container_argv(engine, pod_spec, name=name, **options)
        argv.insert(2, "--detach")
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 0, f"{' '.join(argv)}\n{done.stderr}"
        container = Running(engine, name)
        started.append(container)
        return container

    yield start
    for container in started:
        print(f"--- {container.name} log tail ---\n{container.logs()[-3000:]}")
        subprocess.run(
            [engine.runner, "rm", "--force", "--time", "20", container.name],
            capture_output=True,
            check=False,
        )


def writable_dir(path: Path) -> Path:
    """``path`` created and writable by the image's user (uid 10001), as a volume is."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path
