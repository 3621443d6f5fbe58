"""The control plane side of ``operator_scale.py``: a real cluster set up for the operator.

``tools/local_cluster.py``'s control plane with the chart's CRDs, the namespaces, a
ServiceAccount for the operator (bound to ``cluster-admin``: this measures speed, the
e2e suite checks the chart's RBAC), GPU Nodes registered as a provisioner and a kubelet
would, the operator process, and what is read back: ``/proc`` CPU and memory, the
apiserver's request counter and its audit log of the operator's requests.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRDS = sorted((REPO / "charts" / "kaito-workspace" / "crds").glob("*.yaml"))
NAMESPACE = "bench"
OPERATOR_NAMESPACE = "kaito-bench"
OPERATOR_ACCOUNT = "kaito-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
GPU_INSTANCE = "Standard_NC24ads_A100_v4"
GPU_LABELS = {
    "node.kubernetes.io/instance-type": GPU_INSTANCE,
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.count": "1",
    "nvidia.com/gpu.memory": "81920",
}
#: The apiserver audits the operator's requests only (one line per finished request).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")


def load_local_cluster() -> ModuleType:
    """``tools/local_cluster.py`` (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "kaito_tools_local_cluster", REPO / "tools" / "local_cluster.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workspace(name: str, gpu: bool) -> dict[str, Any]:
    """A CPU preset Workspace, or a BYO GPU one selecting the Node named like it."""
    body: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}},
    }
    if gpu:
        body["resource"]["instanceType"] = GPU_INSTANCE
        body["inference"] = {"preset": {"name": "phi-4-mini-instruct"}}
    else:
        body["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
        body["inference"] = {"preset": {"name": "smollm2-135m-instruct"}}
    return body


def register_gpu_node(cluster: Any, name: str) -> None:
    """A Ready Node with one GPU for the Workspace ``name`` (the taint that admission
    puts on a new Node is lifted, as the node lifecycle controller would)."""
    capacity = {"cpu": "24", "memory": "220Gi", "pods": "110", "nvidia.com/gpu": "1"}
    labels = {"kubernetes.io/hostname": name, "apps": name, **GPU_LABELS}
    cluster.request("POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": labels}})
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench"}
    status = {"capacity": capacity, "allocatable": capacity, "conditions": [ready]}
    merge = "application/merge-patch+json"
    cluster.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status}, content_type=merge)
    cluster.request(
        "PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}}, content_type=merge
    )


def metrics_total(cluster: Any) -> int:
    """Sum of ``apiserver_request_total`` (every client, every verb and code)."""
    request = urllib.request.Request(
        f"{cluster.server}/metrics", headers={"Authorization": f"Bearer {cluster.admin_token}"}
    )
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{")
    )


def audited_calls(path: Path, offset: int) -> Counter[str]:
    """The operator's requests after ``offset`` in the audit log, by verb and resource."""
    calls: Counter[str] = Counter()
    seen = set()
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            event = json.loads(line)
            if event["auditID"] in seen:  # a watch logs when it starts and when it ends
                continue
            seen.add(event["auditID"])
            ref = event.get("objectRef") or {}
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            code = (event.get("responseStatus") or {}).get("code", 0)
            failed = f" -> {code}" if code >= 400 else ""
            calls[f"{event['verb'].upper()} {ref.get('resource', '?')}{sub}{failed}"] += 1
    return calls


def log_errors(path: Path) -> dict[str, int]:
    """The operator's ERROR log lines by message (digits as N), the five most common."""
    messages: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if " ERROR " in line:
            message = line.split(": ", 1)[-1]
            messages[re.sub(r"\d+", "N", message)[:160]] += 1
    return dict(messages.most_common(5))


def setup(cluster: Any, gpu_names: list[str]) -> Path:
    """CRDs, namespaces, the operator's ServiceAccount (cluster-admin) and its kubeconfig,
    and the GPU Nodes."""
    for crd_file in CRDS:
        crd = yaml.safe_load(crd_file.read_text())
        cluster.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for namespace in (NAMESPACE, OPERATOR_NAMESPACE):
        cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    base = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}"
    cluster.request("POST", f"{base}/serviceaccounts", {"metadata": {"name": OPERATOR_ACCOUNT}})
    binding = {
        "metadata": {"name": "kaito-bench-operator"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
        ],
    }
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    secret = {
        "metadata": {
            "name": "operator-token",
            "annotations": {"kubernetes.io/service-account.name": OPERATOR_ACCOUNT},
        },
        "type": "kubernetes.io/service-account-token",
    }
    cluster.request("POST", f"{base}/secrets", secret)
    for name in gpu_names:
        register_gpu_node(cluster, name)
    for _ in range(300):
        data = cluster.request("GET", f"{base}/secrets/operator-token").get("data") or {}
        with contextlib.suppress(urllib.error.HTTPError):  # 404 until the CRD is served
            cluster.request("GET", f"/apis/kaito.sh/v1beta1/namespaces/{NAMESPACE}/workspaces")
            if data.get("token"):
                token = base64.b64decode(data["token"]).decode()
                return Path(cluster.write_kubeconfig(token, "operator"))
        time.sleep(0.1)
    raise RuntimeError("no ServiceAccount token, or the Workspace CRD is not served")


def start_operator(
    kubeconfig: Path,
    health_port: int,
    metrics_port: int,
    log: Path,
    profile: str | None,
    *,
    floor: bool = False,
) -> subprocess.Popen[bytes]:
    """``python -m kaito_operator`` (Workspace controller) as the bench ServiceAccount, or
    with ``floor`` the minimal controller of ``operator_floor.py`` in its place."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KAITO_OPERATOR_CONTROLLERS": '["workspace"]',
        "KAITO_OPERATOR_HEALTH_PORT": str(health_port),
        "KAITO_OPERATOR_METRICS_PORT": str(metrics_port),
    }
    profiling = ["-m", "cProfile", "-o", profile] if profile else []
    program = ["-m", "kaito_operator"]
    if floor:
        floor_script = str(Path(__file__).with_name("operator_floor.py"))
        program = [floor_script, f"--kubeconfig={kubeconfig}", f"--health-port={health_port}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *profiling, *program],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{log.read_text()[-3000:]}")
        url = f"http://127.0.0.1:{health_port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the operator did not become live:\n{log.read_text()[-3000:]}")


def snapshot(cluster: Any, operator: int, audit_log: Path) -> dict[str, Any]:
    """What the run is measured against: CPU seconds so far (the operator and each
    control plane component), the operator's memory, the apiserver's request counter,
    the audit log's length."""
    return {
        "cpu": component_cpu(cluster, operator),
        "memory": rss_kib(operator),
        "requests": metrics_total(cluster),
        "audit_offset": audit_log.stat().st_size,
    }


def component_cpu(cluster: Any, operator: int) -> dict[str, float]:
    """CPU seconds so far of the operator and each control plane component."""
    pids = {"operator": operator, **{name: cluster.pid(name) for name in COMPONENTS}}
    return {name: cpu_seconds(pid) for name, pid in pids.items()}
