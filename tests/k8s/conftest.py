"""A real Kubernetes control plane for the end-to-end tests, and the operator against it.

The control plane is ``tools/local_cluster.py``: Kubernetes 1.20 built once from Debian's
source package, etcd and the apiserver, controller manager and scheduler on loopback.
When it cannot be built here, every test in this folder skips with the reason (pytest's
summary prints it at the end of the run).

Both charts are installed with the real helm (``tools/fetch_helm.py``), with no operator
replicas: the operator runs as a local ``kaito-operator`` process with the environment
of the chart's Deployment, authenticated as the chart's ServiceAccount (a token Secret
for it), so every call it makes is authorised by the chart's RBAC and nothing else.
There is no pod network and no cluster DNS, so the apiserver cannot reach the webhook
through the chart's Service: the tests point the chart's ValidatingWebhookConfiguration
at the operator on ``https://127.0.0.1:<port>`` with a certificate for that address
signed by the cluster CA (the chart's own certificate names the Service).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Namespace of both chart releases (not the charts' default).
NAMESPACE = "kaito-system"
WORKSPACE_RELEASE = "kaito-workspace"
RAGENGINE_RELEASE = "kaito-ragengine"


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is a folder of scripts, not a package)."""
    module_name = f"kaito_tools_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _load_node_agent() -> ModuleType:
    """``node_agent.py`` beside this file (not importable by name under importlib mode)."""
    name = "kaito_k8s_e2e_node_agent"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("node_agent.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_node_agent = _load_node_agent()
NodeAgent = _node_agent.NodeAgent
eventually = _node_agent.eventually


@dataclass
class Cluster:
    """The running control plane, with admin helpers for the tests."""

    local: Any
    """The ``tools/local_cluster.LocalCluster``."""
    kubectl_binary: Path
    helm_binary: Path

    def kubectl(
        self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (as admin unless ``kubeconfig``); the caller checks the result."""
        config = kubeconfig or self.local.kubeconfig
        return subprocess.run(
            [str(self.kubectl_binary), f"--kubeconfig={config}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of one object (a dict) or YAML text, as admin."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *extra, stdin=text)

    def get(self, path: str) -> dict[str, Any] | None:
        """GET an API path as admin; None on 404."""
        try:
            result: dict[str, Any] = self.local.request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return result

    def send(
        self, method: str, path: str, body: object, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """A write as admin (``merge-patch+json`` etc. through ``content_type``)."""
        result: dict[str, Any] = self.local.request(method, path, body, content_type=content_type)
        return result

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run helm as admin; fail the test with helm's output on an error."""
        result = subprocess.run(
            [str(self.helm_binary), f"--kubeconfig={self.local.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        if result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local control plane for the whole session (skip with the reason if none)."""
    local_cluster = load_tool("local_cluster")
    try:
        local = local_cluster.LocalCluster().__enter__()
    except local_cluster.ClusterUnavailableError as exc:
        pytest.skip(f"no local Kubernetes control plane: {str(exc)[:2000]}")
    try:
        helm = load_tool("fetch_helm").fetch_helm()
        yield Cluster(local=local, kubectl_binary=helm.with_name("kubectl"), helm_binary=helm)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def charts(cluster: Cluster) -> Cluster:
    """Both charts installed with ``helm install`` (CRDs, RBAC, webhook configuration,
    ConfigMaps), operator replicas 0: the operator runs as a local process."""
    for release in (WORKSPACE_RELEASE, RAGENGINE_RELEASE):
        cluster.helm(
            "install",
            release,
            str(ROOT / "charts" / release),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=0",
        )
    return cluster


@dataclass
class OperatorProcess:
    """One ``kaito-operator`` process authenticated as a chart's ServiceAccount."""

    env: dict[str, str]
    """The process environment (the chart Deployment's, plus local ports and paths)."""
    health_port: int
    log: Path
    kubeconfig: Path
    """Authenticates as the chart's ServiceAccount (its token)."""
    service_account: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``kaito-operator`` (output appended to the log); return once healthy."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kaito_operator"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"kaito-operator exited with {process.returncode}:\n{self.logs()}")
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except OSError:
                return False

        eventually(healthy, within=60, what="the operator's /healthz")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish what it is doing."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def logs(self) -> str:
        """The last 6,000 characters of the operator's log."""
        return self.log.read_text(errors="replace")[-6000:]

    def rbac_denials(self) -> list[str]:
        """Log lines where the apiserver's RBAC refused the operator a call."""
        pattern = re.compile(r'forbidden: User \\?"system:serviceaccount:[^"\\]+\\?" cannot')
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if pattern.search(line)]

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def service_account_kubeconfig(cluster: Cluster, release: str) -> tuple[str, Path]:
    """(ServiceAccount name, kubeconfig with its token) of a chart release: a Secret of
    type ``kubernetes.io/service-account-token`` that the token controller fills."""
    binding = cluster.get(
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{NAMESPACE}-{release}"
    )
    assert binding is not None, f"the chart made no ClusterRoleBinding for {release}"
    (subject,) = binding["subjects"]
    account = subject["name"]
    secret_name = f"{account}-e2e-token"
    cluster.send(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "annotations": {"kubernetes.io/service-account.name": account},
            },
            "type": "kubernetes.io/service-account-token",
        },
    )

    def token() -> str | None:
        secret = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret_name}")
        data = (secret or {}).get("data") or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    value = eventually(token, within=30, what=f"a token for ServiceAccount {account}")
    return account, cluster.local.write_kubeconfig(value, f"sa-{release}")


def start_operator(
    cluster: Cluster, release: str, workdir: Path, *, webhook_path: str
) -> OperatorProcess:
    """Run ``kaito-operator`` with the environment of the release's Deployment, as its
    ServiceAccount, its webhook on loopback (and the webhook configuration pointed there)."""
    free_port = load_tool("local_cluster").free_port
    account, kubeconfig = service_account_kubeconfig(cluster, release)
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{release}")
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    cert_dir = workdir / "webhook-cert"
    cluster.local.issue_certificate(cert_dir, ["127.0.0.1"])
    webhook_port, health_port = free_port(), free_port()
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "KAITO_OPERATOR_RELEASE_NAMESPACE": NAMESPACE,  # the chart's fieldRef
            "KAITO_OPERATOR_WEBHOOK_PORT": str(webhook_port),
            "KAITO_OPERATOR_WEBHOOK_CERT_DIR": str(cert_dir),
            "KAITO_OPERATOR_HEALTH_PORT": str(health_port),
            "KAITO_OPERATOR_METRICS_PORT": str(free_port()),
            "TMPDIR": str(workdir),
        }
    )
    configuration = env["KAITO_OPERATOR_WEBHOOK_CONFIGURATION"]
    ca_bundle = base64.b64encode(cluster.local.ca_file.read_bytes()).decode()
    url = f"https://127.0.0.1:{webhook_port}/{webhook_path}"
    patch = [
        {
            "op": "replace",
            "path": "/webhooks/0/clientConfig",
            "value": {"url": url, "caBundle": ca_bundle},
        }
    ]
    cluster.send(
        "PATCH",
        f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{configuration}",
        patch,
        content_type="application/json-patch+json",
    )
    python_env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_OPERATOR_")}
    operator = OperatorProcess(
        env={**python_env, **env},
        health_port=health_port,
        log=workdir / f"{release}.log",
        kubeconfig=kubeconfig,
        service_account=account,
    )
    operator.start()
    return operator


@pytest.fixture(scope="session")
def operator(
    charts: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The Workspace operator, as the workspace chart's ServiceAccount, for the session."""
    workdir = tmp_path_factory.mktemp("operator")
    process = start_operator(charts, WORKSPACE_RELEASE, workdir, webhook_path="validate-workspace")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def ragengine_operator(
    charts: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The RAGEngine operator, as the ragengine chart's ServiceAccount, for the session."""
    workdir = tmp_path_factory.mktemp("ragengine-operator")
    process = start_operator(charts, RAGENGINE_RELEASE, workdir, webhook_path="validate-ragengine")
    yield process
    process.stop()


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    """:func:`eventually` for the tests (they cannot import this conftest)."""
    poll: Callable[..., Any] = eventually
    return poll


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted after it)."""
    name = "e2e-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    cluster.send("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def node(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A node agent for a fresh Node (registered by the test with its labels)."""
    agent = NodeAgent(
        cluster, "node-" + request.node.name.lower().replace("_", "-")[-40:].strip("-")
    )
    yield agent
    agent.remove()
