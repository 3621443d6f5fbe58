"""Shared fixtures: the operator running against the Kubernetes API emulator."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
import pytest_asyncio
import yaml

from kaito_operator import rbac

if TYPE_CHECKING:
    from kaito_operator_testing.harness import OperatorHarness

REPO = Path(__file__).resolve().parents[3]
CRD_FILES = [
    REPO / "charts" / "kaito-workspace" / "crds" / "kaito.sh_workspaces.yaml",
    REPO / "charts" / "kaito-workspace" / "crds" / "kaito.sh_inferencesets.yaml",
    REPO / "charts" / "kaito-ragengine" / "crds" / "kaito.sh_ragengines.yaml",
]
K8S_VERSION = "1.32"


def _validate(obj: dict[str, Any]) -> None:
    """Validate a built-in object against the real Kubernetes schema (strict)."""
    clean = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in clean["metadata"].items() if k not in {"managedFields"}}
    kubernetes_validate.validate({**clean, "metadata": meta}, K8S_VERSION, strict=True)


@pytest.fixture
def repo_root() -> Path:
    """The repository root (charts, presets)."""
    return REPO


@pytest.fixture
def validate_k8s() -> Callable[[dict[str, Any]], None]:
    """kubernetes-validate (strict) for built-in kinds."""
    return _validate


def _verb(request: Any) -> str:
    method = request.method.value
    if method == "GET":
        if request.params.get("watch") == "true":
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]


def _violations(cluster: OperatorHarness, controller: str) -> list[str]:
    """Requests the operator sent that its chart's ClusterRole would refuse."""
    settings = cluster.operator_settings()
    rules = rbac.rules_for(controller, settings.node_provisioner)  # type: ignore[arg-type]  # controller names come from the harness
    allowed = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    found = []
    for request in cluster.emulator.recorded_requests:
        if request.resource is None or not request.resource.plural:
            continue  # discovery
        resource = str(request.resource.plural)
        if request.subresource:
            resource += f"/{request.subresource}"
        grant = (str(request.resource.group), resource, _verb(request))
        if grant not in allowed:
            found.append(f"{grant} ({request.method.value} {request.url.path})")
    return sorted(set(found))


@pytest.fixture
def rbac_violations() -> Callable[[OperatorHarness, str], list[str]]:
    """Checks the requests the operator made against ``kaito_operator.rbac``."""
    return _violations


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    """Overrides of the operator's settings for the ``cluster`` fixture."""
    return {}


@pytest_asyncio.fixture
async def cluster(operator_settings: dict[str, Any]) -> AsyncIterator[OperatorHarness]:
    """The emulator with the SDK's CRDs and the operator running against it."""
    from kaito_operator_testing.harness import OperatorHarness  # noqa: PLC0415 (needs kopf)

    async with OperatorHarness(CRD_FILES, **operator_settings) as harness:
        await harness.start_operator()
        yield harness


GOLDEN = Path(__file__).parent / "data" / "golden"


def _check_golden(name: str, objects: list[dict[str, Any]]) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if os.environ.get("KAITO_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}; run with KAITO_UPDATE_GOLDEN=1"
    assert list(yaml.safe_load_all(path.read_text())) == objects, (
        f"{name} differs from {path.name}; if intended, rerun with KAITO_UPDATE_GOLDEN=1"
    )


@pytest.fixture
def check_golden() -> Callable[[str, list[dict[str, Any]]], None]:
    """Compare objects with ``data/golden/<name>.yaml`` (``KAITO_UPDATE_GOLDEN=1`` rewrites)."""
    return _check_golden


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function that returns a TCP port on loopback nothing listens on."""

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return pick


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A self-signed serving certificate (also as ``ca.crt``), as the chart's Secret holds."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary to make a test certificate")
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    shutil.copy(cert, tmp_path / "ca.crt")
    return tmp_path
