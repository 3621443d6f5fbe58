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
import time
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


def eventually(check: Callable[[], Any], within: float = 60, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"{what} not reached within {within} s (last: {last!r})")


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
    helm = load_tool("fetch_helm").fetch_helm()
    try:
        with local_cluster.LocalCluster() as local:
            yield Cluster(local=local, kubectl_binary=helm.with_name("kubectl"), helm_binary=helm)
    except local_cluster.ClusterUnavailableError as exc:
        pytest.skip(f"no local Kubernetes control plane: {str(exc)[:2000]}")


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

    process: subprocess.Popen[bytes]
    log: Path
    kubeconfig: Path
    """Authenticates as the chart's ServiceAccount (its token)."""
    service_account: str

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
        if self.process.poll() is None:
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
    log = workdir / f"{release}.log"
    python_env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_OPERATOR_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kaito_operator"],
            env={**python_env, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    operator = OperatorProcess(process, log, kubeconfig, account)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"kaito-operator exited with {process.returncode}:\n{operator.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    eventually(healthy, within=60, what=f"the {release} operator's /healthz")
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
    return eventually


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted after it)."""
    name = "e2e-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    cluster.send("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class NodeAgent:
    """Plays the kubelet of one Node: registers it, then writes the status of the pods
    the real scheduler binds to it, as a kubelet would (it runs no container itself)."""

    cluster: Cluster
    name: str

    def register(self, labels: dict[str, str], *, gpus: int = 0) -> None:
        """Create the Node with ``labels`` and a Ready status with 8 CPUs and 32 GiB."""
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        node_labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **labels}
        self.cluster.send(
            "POST", "/api/v1/nodes", {"metadata": {"name": self.name, "labels": node_labels}}
        )
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "the e2e node agent is ready",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now(),
        }
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }
        self.cluster.send(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        # The TaintNodesByCondition admission taints a new Node not-ready; the nodelifecycle
        # controller (off: no heartbeats come) would lift it once the Node reports Ready.
        self.cluster.send(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            {"spec": {"taints": None}},
            content_type="application/merge-patch+json",
        )

    def remove(self) -> None:
        """Delete the Node."""
        self.cluster.kubectl("delete", "node", self.name, "--wait=false")

    def bound_pod(self, namespace: str, selector: str, within: float = 60) -> dict[str, Any]:
        """Wait until the scheduler binds a pod matching ``selector`` to this Node."""

        def bound() -> dict[str, Any] | None:
            pods = self.cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
            for pod in (pods or {}).get("items", []):
                if pod["spec"].get("nodeName") == self.name:
                    return dict(pod)
            return None

        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pod = bound()
            if pod is not None:
                return pod
            time.sleep(0.25)
        pods = self.cluster.kubectl("get", "pods,statefulsets", "-n", namespace, "-o", "wide")
        events = self.cluster.kubectl("get", "events", "-n", namespace)
        pytest.fail(
            f"no pod {selector} bound to {self.name} within {within} s:\n"
            f"{pods.stdout}{pods.stderr}\n{events.stdout}{events.stderr}"
        )

    def finish_deletions(self, namespace: str, selector: str) -> int:
        """Confirm the graceful deletion of this Node's terminating pods (a kubelet deletes
        them with grace period 0 once their containers stopped); return how many pods
        matching ``selector`` remain."""
        pods = self.cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
        items = (pods or {}).get("items", [])
        for pod in items:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and pod["spec"].get("nodeName") == self.name:
                self.cluster.send(
                    "DELETE",
                    f"/api/v1/namespaces/{namespace}/pods/{meta['name']}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                )
        return len(items)

    def _write(self, pod: dict[str, Any], ready: bool, container_states: dict[str, Any]) -> None:
        meta = pod["metadata"]
        containers = pod["spec"]["containers"]
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],  # the endpoints controller reads this list
            "startTime": _now(),
            "conditions": [
                {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": _now()}
                for kind, ok in (
                    ("Initialized", True),
                    ("Ready", ready),
                    ("ContainersReady", ready),
                    ("PodScheduled", True),
                )
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": f"docker-pullable://{container['image']}",
                    "containerID": f"containerd://{meta['uid']}-{container['name']}",
                    "ready": ready,
                    "started": ready,
                    **container_states,
                }
                for container in containers
            ],
        }
        self.cluster.send(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )

    def run(self, pod: dict[str, Any]) -> None:
        """Every container running and ready (what the kubelet writes once probes pass)."""
        self._write(pod, True, {"restartCount": 0, "state": {"running": {"startedAt": _now()}}})

    def serve(
        self, pod: dict[str, Any], workdir: Path, services: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Run the pod's first container command as a local process, as a container runtime
        would, and mark the pod Running and Ready once its readiness probe's path answers.

        What a pod's network and filesystem would change, changes: the container port
        (``--port``, ``*_PORT`` variables) becomes a free loopback port (returned),
        absolute directories (``*-dir`` arguments, ``*_DIR`` variables) become folders
        under ``workdir``, and ``http://<service DNS name>`` in a variable becomes
        ``http://<services[name]>`` (cluster DNS and the Service's proxy). The console
        script is the one installed beside this Python.
        """
        container = pod["spec"]["containers"][0]
        command = [*container.get("command", []), *container.get("args", [])]
        installed = Path(sys.executable).with_name(command[0])
        command[0] = str(installed) if installed.exists() else command[0]
        port = load_tool("local_cluster").free_port()
        for index, arg in enumerate(command[:-1]):
            if arg == "--port":
                command[index + 1] = str(port)
            elif arg.endswith("-dir") and command[index + 1].startswith("/"):
                local = workdir / command[index + 1].strip("/").replace("/", "-")
                local.mkdir(parents=True, exist_ok=True)
                command[index + 1] = str(local)
        container_port = str(container["ports"][0]["containerPort"])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        for variable in container.get("env", []):
            name, value = variable["name"], variable.get("value")
            if value is None:
                continue
            if name.endswith("_PORT") and value == container_port:
                value = str(port)
            elif name.endswith("_DIR") and value.startswith("/"):
                local = workdir / value.strip("/").replace("/", "-")
                local.mkdir(parents=True, exist_ok=True)
                value = str(local)
            for host, target in (services or {}).items():
                value = value.replace(f"http://{host}/", f"http://{target}/")
            env[name] = value
        log = (workdir / "container.log").open("wb")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        probe = container["readinessProbe"]["httpGet"]["path"]

        def ready() -> bool:
            if process.poll() is not None:
                text = (workdir / "container.log").read_text(errors="replace")[-4000:]
                pytest.fail(f"{command} exited with {process.returncode}:\n{text}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=2):
                    return True
            except OSError:
                return False

        try:
            eventually(ready, within=300, what=f"{probe} of {command[:2]}")
        except BaseException:
            process.kill()
            process.wait()
            raise
        self.run(pod)
        return process, port

    def crash_loop(self, pod: dict[str, Any], *, restarts: int = 4) -> None:
        """Every container crash looping: exited 1, waiting in CrashLoopBackOff."""
        terminated = {"exitCode": 1, "reason": "Error", "startedAt": _now(), "finishedAt": _now()}
        message = "back-off 40s restarting failed container"
        self._write(
            pod,
            False,
            {
                "restartCount": restarts,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                "lastState": {"terminated": terminated},
            },
        )


@pytest.fixture
def node(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[NodeAgent]:
    """A node agent for a fresh Node (registered by the test with its labels)."""
    agent = NodeAgent(
        cluster, "node-" + request.node.name.lower().replace("_", "-")[-40:].strip("-")
    )
    yield agent
    agent.remove()
