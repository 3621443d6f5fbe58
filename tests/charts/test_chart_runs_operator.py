"""The chart's operator container, run for real: what `helm install` would start.

The rendered Deployment's command and environment start the real ``kaito-operator``
console script in a subprocess, against the Kubernetes API emulator (the chart's
default ConfigMaps and CRD loaded into it), with the rendered webhook certificate on
disk where the Secret would be mounted. Then, as the cluster would:

- the kubelet's liveness probe path answers on the health port;
- the API server calls the webhook over TLS, trusting only the rendered ``caBundle``
  and checking the Service's DNS name, at the path of the rendered configuration;
- a tuning Workspace without a config gets a copy of the chart's ``lora-params-template``
  from the release namespace.

Only ports (free local ones), the certificate directory and the API server URL are
replaced; everything else comes from the chart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from kaito_operator_testing.harness import OperatorHarness

pytestmark = [
    pytest.mark.asyncio,
    # kmock 0.8 loads its resource table with a deprecated importlib.resources call.
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ml-platform"
PREFIX = "KAITO_OPERATOR_"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


async def wait_until(check: Callable[[], Awaitable[Any]], what: str, within: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class ChartOperator:
    """The rendered chart, the emulator and the operator process it configures."""

    def __init__(self, objects: list[dict[str, Any]], cluster: OperatorHarness) -> None:
        self.objects = objects
        self.cluster = cluster
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = one(self.objects, "Deployment")["spec"]["template"][
            "spec"
        ]["containers"]
        return containers[0]

    def environment(self, cert_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
        for var in self.container["env"]:
            if "valueFrom" in var:
                assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
                env[var["name"]] = NAMESPACE
            else:
                env[var["name"]] = var["value"]
        env.pop("TMPDIR", None)  # the pod's emptyDir; the host's temp dir serves here
        env.update(
            {
                f"{PREFIX}API_SERVER": self.cluster.url,
                f"{PREFIX}POST_EVENTS": "false",
                f"{PREFIX}HEALTH_PORT": str(self.health_port),
                f"{PREFIX}WEBHOOK_PORT": str(self.webhook_port),
                f"{PREFIX}WEBHOOK_CERT_DIR": str(cert_dir),
            }
        )
        return env

    def start(self, cert_dir: Path, log: Path) -> None:
        [command] = self.container["command"]
        executable = Path(sys.executable).parent / command
        assert executable.is_file(), f"{command} is not installed next to {sys.executable}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(executable), *self.container.get("args", [])],
                env=self.environment(cert_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest_asyncio.fixture
async def running(
    render: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ChartOperator]:
    chart: str = getattr(request, "param", "kaito-workspace")
    objects = render(chart)
    secret = one(objects, "Secret")
    cert_dir = tmp_path / "webhook-cert"
    cert_dir.mkdir()
    for key, value in secret["data"].items():
        (cert_dir / key).write_bytes(base64.b64decode(value))
    crds = sorted((ROOT / "charts" / chart / "crds").glob("*.yaml"))
    async with OperatorHarness(crds) as cluster:
        await cluster.emulator.create_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
            await cluster.emulator.create_object(config_map)
        chart_operator = ChartOperator(objects, cluster)
        log = tmp_path / "operator.log"
        chart_operator.start(cert_dir, log)
        try:
            yield chart_operator
        finally:
            chart_operator.stop()
            print(log.read_text(errors="replace")[-4000:])


BOTH_CHARTS = pytest.mark.parametrize(
    "running", ["kaito-workspace", "kaito-ragengine"], indirect=True
)
#: Per chart: an object its webhook must refuse, and a word the refusal must contain.
#: An object each webhook refuses (by the resource its rule names), and why.
REFUSED = {
    "workspaces": (
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "bad", "namespace": "default"},
            "resource": {"labelSelector": {"matchLabels": {"apps": "bad"}}},
            "inference": {"preset": {"name": "no-such-model"}},
        },
        "no-such-model",
    ),
    "inferencesets": (
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {
                "replicas": -1,
                "labelSelector": {"matchLabels": {"apps": "bad"}},
                "template": {"inference": {"preset": {"name": "smollm2-135m-instruct"}}},
            },
        },
        "spec.replicas: must be at least 0",
    ),
    "ragengines": (
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "RAGEngine",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"compute": {"labelSelector": {"matchLabels": {"apps": "bad"}}}},
        },
        "embedding",
    ),
}


@BOTH_CHARTS
async def test_liveness_probe_answers(running: ChartOperator) -> None:
    probe = running.container["livenessProbe"]["httpGet"]
    url = f"http://127.0.0.1:{running.health_port}{probe['path']}"
    async with httpx.AsyncClient() as client:

        async def healthy() -> bool:
            assert running.process is not None
            assert running.process.poll() is None, "the operator exited"
            try:
                return (await client.get(url)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, "the liveness endpoint")


async def post_review(
    running: ChartOperator, review: dict[str, Any], ca_pem: bytes, hostname: str, path: str
) -> dict[str, Any]:
    """POST over TLS as the API server does: trust only the caBundle, check the name."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", running.webhook_port, ssl=context, server_hostname=hostname
    )
    body = json.dumps(review).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {hostname}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    assert b" 200 " in status_line, status_line
    _, _, payload = rest.partition(b"\r\n\r\n")
    response: dict[str, Any] = json.loads(payload)["response"]
    return response


@BOTH_CHARTS
async def test_webhook_is_reachable_with_the_rendered_configuration(
    running: ChartOperator,
) -> None:
    webhooks = one(running.objects, "ValidatingWebhookConfiguration")["webhooks"]
    for webhook in webhooks:
        await _refuses(running, webhook)


async def _refuses(running: ChartOperator, webhook: dict[str, Any]) -> None:
    """Post an AdmissionReview as the API server would; the webhook must refuse it."""
    target = webhook["clientConfig"]["service"]
    hostname = f"{target['name']}.{target['namespace']}.svc"
    ca_pem = base64.b64decode(webhook["clientConfig"]["caBundle"])
    [rule] = webhook["rules"]
    obj, reason = REFUSED[rule["resources"][0]]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "chart-1",
            "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": obj["kind"]},
            "resource": {
                "group": "kaito.sh",
                "version": rule["apiVersions"][0],
                "resource": rule["resources"][0],
            },
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
        },
    }

    async def answered() -> dict[str, Any] | None:
        assert running.process is not None
        assert running.process.poll() is None, "the operator exited"
        try:
            return await post_review(running, review, ca_pem, hostname, target["path"])
        except (ConnectionError, OSError):
            return None

    response = await wait_until(answered, "the webhook server")
    assert response["uid"] == "chart-1"
    assert response["allowed"] is False
    assert reason in response["status"]["message"]


async def test_tuning_gets_the_chart_default_config(running: ChartOperator) -> None:
    emulator = running.cluster.emulator
    await emulator.create_object(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "tune", "namespace": "default"},
            "resource": {"labelSelector": {"matchLabels": {"apps": "tune"}}},
            "tuning": {
                "preset": {"name": "smollm2-135m-instruct"},
                "method": "lora",
                "input": {"urls": ["https://example.com/data.jsonl"]},
                "output": {"volumeSource": {"emptyDir": {}}},
            },
        }
    )

    async def copied() -> dict[str, Any] | None:
        assert running.process is not None
        assert running.process.poll() is None, "the operator exited"
        found = [
            cm
            for cm in emulator.list_objects("v1", "configmaps", "default")
            if cm["metadata"]["name"].startswith("tune")
        ]
        return found[0] if found else None

    config_map = await wait_until(copied, "the Workspace's training config")
    lora = (ROOT / "presets" / "tuning" / "lora-params.yaml").read_text()
    assert config_map["data"] == {"training_config.yaml": lora}
