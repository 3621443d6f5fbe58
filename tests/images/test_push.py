"""``tools/images.py build --push REGISTRY`` against a real registry (Debian's docker-registry).

The operator image (the smallest; its layers are cached by the session's build) is
built and pushed to a plain-HTTP registry on loopback; the registry then lists the tag
and serves the manifest, whose config carries the image's OCI title label.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ROOT

pytestmark = pytest.mark.images

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@pytest.fixture
def registry(tmp_path: Path, free_port_factory: Callable[[], int]) -> Iterator[str]:
    """``host:port`` of a running plain-HTTP ``docker-registry`` on loopback."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port_factory()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}', secret: kaito-images}}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("docker-registry did not start within 20 s")
            time.sleep(0.2)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_build_push_publishes_the_image_under_the_registry(engine: Any, registry: str) -> None:
    target = f"{registry}/kaito"
    argv = [sys.executable, "tools/images.py", "build", "--service", "operator", "--push", target]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    # The push left a local tag under the registry's name; drop it (the image stays).
    untag = [engine.runner, "rmi", f"{target}/kaito-operator:0.1.0"]
    subprocess.run(untag, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # Built now, or found up to date (nox -s images built it from this checkout just before).
    assert re.search(
        r"^kaito-operator: ghcr\.io/kaito-py/kaito-operator:0\.1\.0 "
        r"(built in \d+ s|up to date \(built from this context before\)), 0\.\d\d GB$",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    assert f"kaito-operator: pushed {target}/kaito-operator:0.1.0" in done.stdout

    base = f"http://{registry}/v2/kaito/kaito-operator"
    assert httpx.get(f"{base}/tags/list", timeout=10).json()["tags"] == ["0.1.0"]
    manifest = httpx.get(f"{base}/manifests/0.1.0", headers={"Accept": MANIFEST_TYPES}, timeout=10)
    assert manifest.status_code == 200, manifest.text
    config_digest = manifest.json()["config"]["digest"]
    config = httpx.get(f"{base}/blobs/{config_digest}", timeout=10).json()
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "kaito-operator"
    assert config["config"]["User"] == "10001:10001"
