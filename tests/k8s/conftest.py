"""A real Kubernetes control plane for the end-to-end tests, and the operator against it.

The control plane is ``tools/local_cluster.py``: Kubernetes 1.20 built once from Debian's
source package, etcd and the apiserver, controller manager and scheduler on loopback.
When it cannot be built here, every test in this folder skips with the reason (pytest's
summary prints it at the end of the run).

With ``KAITO_E2E_KUBECONFIG=<path>`` the suite runs against that cluster instead
(``kubeconfig_cluster.py``: its current context, as an admin; a disposable cluster, since
the charts are installed into ``kaito-system`` and uninstalled at the end, their CRDs
left as helm leaves them). The operator's webhook listens on this machine: set
``KAITO_E2E_WEBHOOK_HOST`` to the address the apiserver reaches it at when that is not
127.0.0.1. Tests that need what only the local control plane allows (etcd, restarting the
apiserver, the node agent's Nodes, which no kubelet may own) skip with the reason; set
``KAITO_E2E_NODE_AGENT=1`` for a cluster without a node lifecycle controller (one that
``tools/local_cluster.py serve`` started) to run the node agent's tests too.

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
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Namespace of both chart releases (not the charts' default).
NAMESPACE = "kaito-system"
WORKSPACE_RELEASE = "kaito-workspace"
RAGENGINE_RELEASE = "kaito-ragengine"


def _load_sibling(stem: str) -> ModuleType:
    """``<stem>.py`` beside this file (not importable by name under importlib mode)."""
    name = f"kaito_k8s_e2e_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{stem}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_node_agent = _load_sibling("node_agent")
NodeAgent = _node_agent.NodeAgent
eventually = _node_agent.eventually
_clusters = _load_sibling("clusters")
load_tool = _clusters.load_tool
Cluster = _clusters.Cluster
KubeconfigCluster = _clusters.KubeconfigCluster
#: The cluster the suite runs against instead of the local control plane (a kubeconfig).
EXTERNAL_KUBECONFIG = os.environ.get("KAITO_E2E_KUBECONFIG")
#: ``python -m kaito_operator``, with kopf's watch-stream lines (started, restarted after
#: 410 Gone, stopped) logged at DEBUG; the rest of the operator's log stays at INFO.
OPERATOR_COMMAND = [
    sys.executable,
    "-c",
    "import logging, runpy; "
    "logging.getLogger('kopf._cogs.clients.watching').setLevel(logging.DEBUG); "
    "runpy.run_module('kaito_operator', run_name='__main__', alter_sys=True)",
]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local control plane for the whole session (skip with the reason if none), or
    the ``KAITO_E2E_KUBECONFIG`` cluster."""
    local_cluster = load_tool("local_cluster")
    try:
        if EXTERNAL_KUBECONFIG:
            local = KubeconfigCluster(Path(EXTERNAL_KUBECONFIG))
            local.request("GET", "/version")  # fail here, naming the server, if unreachable
        else:
            local = local_cluster.LocalCluster().__enter__()
    except local_cluster.ClusterUnavailableError as exc:
        pytest.skip(f"no local Kubernetes control plane: {str(exc)[:2000]}")
    try:
        helm = load_tool("fetch_helm").fetch_helm()
        yield Cluster(local=local, kubectl_binary=helm.with_name("kubectl"), helm_binary=helm)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def charts(cluster: Cluster) -> Iterator[Cluster]:
    """Both charts installed with ``helm install`` (CRDs, RBAC, webhook configuration,
    ConfigMaps), operator replicas 0: the operator runs as a local process. On a
    ``KAITO_E2E_KUBECONFIG`` cluster both releases are uninstalled afterwards, and the
    CRDs they brought are deleted (the operator points them at its webhook here)."""
    releases = (WORKSPACE_RELEASE, RAGENGINE_RELEASE)
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    existing = {crd["metadata"]["name"] for crd in (cluster.get(crds) or {}).get("items", [])}
    try:
        for release in releases:
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
        yield cluster
    finally:
        if cluster.external:
            for release in releases:
                cluster.helm("uninstall", release, "--namespace", NAMESPACE, check=False)
                selector = f"{TOKEN_LABEL}={release}"
                cluster.kubectl("delete", "secret", "-n", NAMESPACE, "-l", selector)
            for crd in (cluster.get(crds) or {}).get("items", []):
                name = crd["metadata"]["name"]
                if name.endswith(".kaito.sh") and name not in existing:
                    cluster.kubectl("delete", "customresourcedefinition", name)


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
    restarts: list[tuple[float, float]] = field(default_factory=list)
    """The cluster's apiserver restart windows (``Cluster.restarts``, the same list)."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``kaito-operator`` (output appended to the log); return once healthy."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                OPERATOR_COMMAND,
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

        eventually(healthy, within=60, what=f"the operator's /healthz (its log: {self.log})")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish what it is doing."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def logs(self) -> str:
        """The last 6,000 characters of the operator's log."""
        return self.log.read_text(errors="replace")[-6000:]

    def rbac_denials(self) -> list[str]:
        """Log lines where the apiserver's RBAC refused the operator a call, but for those
        logged while a restarted apiserver was filling its RBAC cache (``restarts``)."""
        pattern = re.compile(r'forbidden: User \\?"system:serviceaccount:[^"\\]+\\?" cannot')

        def while_restarting(line: str) -> bool:
            try:  # the operator's log lines start with a local timestamp
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                return False
            return any(start <= at <= end for start, end in self.restarts)

        text = self.log.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if pattern.search(line) and not while_restarting(line)
        ]

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


#: Label of the ServiceAccount token Secrets the suite makes (value: the release).
TOKEN_LABEL = "e2e.kaito.sh/token-for"


def service_account_kubeconfig(cluster: Cluster, release: str) -> tuple[str, Path]:
    """(ServiceAccount name, kubeconfig with its token) of a chart release: a Secret of
    type ``kubernetes.io/service-account-token`` that the token controller fills (one
    left by an earlier run on a ``KAITO_E2E_KUBECONFIG`` cluster is used again)."""
    binding = cluster.get(
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{NAMESPACE}-{release}"
    )
    assert binding is not None, f"the chart made no ClusterRoleBinding for {release}"
    (subject,) = binding["subjects"]
    account = subject["name"]
    secret_name = f"{account}-e2e-token"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "labels": {TOKEN_LABEL: release},
            "annotations": {"kubernetes.io/service-account.name": account},
        },
        "type": "kubernetes.io/service-account-token",
    }
    try:
        cluster.send("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise

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
    # Where the apiserver reaches this machine (loopback: the local control plane).
    webhook_host = os.environ.get("KAITO_E2E_WEBHOOK_HOST", "127.0.0.1")
    cluster.local.issue_certificate(cert_dir, [webhook_host])
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
    url = f"https://{webhook_host}:{webhook_port}/{webhook_path}"
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
        restarts=cluster.restarts,
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


def cpu_workspace(
    namespace: str, name: str, apps: str | None = None, *, version: str = "v1beta1"
) -> dict[str, Any]:
    """A Workspace of the SmolLM2 CPU preset on the transformers runtime, selecting Nodes
    labelled ``apps=<apps>`` (default: its name; where no Node has it, the pod stays
    Pending)."""
    return {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"kaito.sh/runtime": "transformers"},
        },
        "resource": {"labelSelector": {"matchLabels": {"apps": apps or name}}},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}},
    }


@pytest.fixture(name="cpu_workspace")
def cpu_workspace_fixture() -> Callable[..., dict[str, Any]]:
    """:func:`cpu_workspace` for the tests (they cannot import this conftest)."""
    return cpu_workspace


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    """:func:`eventually` for the tests (they cannot import this conftest)."""
    poll: Callable[..., Any] = eventually
    return poll


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted after it; on a ``KAITO_E2E_KUBECONFIG``
    cluster the deletion is awaited while the operator still runs its finalizers)."""
    name = "e2e-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    path = f"/api/v1/namespaces/{name}"
    if cluster.external:  # an earlier run's namespace may still be terminating
        eventually(lambda: cluster.get(path) is None, within=120, what=f"namespace {name} gone")
    cluster.send("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    if cluster.external:
        # Pods on the node agent's Nodes have no kubelet to confirm their deletion.
        cluster.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force")
        eventually(lambda: cluster.get(path) is None, within=120, what=f"namespace {name} gone")


@pytest.fixture
def node(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A node agent for a fresh Node (registered by the test with its labels)."""
    if cluster.external and os.environ.get("KAITO_E2E_NODE_AGENT") != "1":
        pytest.skip(
            "needs the node agent's Nodes, which a node lifecycle controller marks unreachable "
            "(KAITO_E2E_NODE_AGENT=1 runs them on a cluster without one)"
        )
    agent = NodeAgent(
        cluster, "node-" + request.node.name.lower().replace("_", "-")[-40:].strip("-")
    )
    yield agent
    agent.remove()
