"""The node agent of the end-to-end tests: a Node's kubelet, played by the test.

Loaded by ``conftest.py`` (tests cannot import modules of this folder by name under
``--import-mode=importlib``); the tests reach it through the ``node`` fixture.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["NodeAgent", "eventually"]


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class NodeAgent:
    """Plays the kubelet of one Node: registers it, then writes the status of the pods
    the real scheduler binds to it, as a kubelet would (it runs no container itself)."""

    cluster: Any
    """The conftest's ``Cluster`` (admin helpers)."""
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

    def _write(
        self,
        pod: dict[str, Any],
        ready: bool,
        container_states: dict[str, Any],
        phase: str = "Running",
    ) -> None:
        meta = pod["metadata"]
        containers = pod["spec"]["containers"]
        status = {
            "phase": phase,
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
        port = _free_port()
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

    def image_pull_backoff(self, pod: dict[str, Any]) -> None:
        """Every container waiting for an image that cannot be pulled (pod Pending)."""
        message = f'Back-off pulling image "{pod["spec"]["containers"][0]["image"]}"'
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
        self._write(pod, False, {"restartCount": 0, "state": waiting}, phase="Pending")

    def crash_loop(
        self, pod: dict[str, Any], *, restarts: int = 4, reason: str = "Error", exit_code: int = 1
    ) -> None:
        """Every container crash looping: exited (``reason``, ``exit_code``; ``OOMKilled``
        and 137 for the kernel's OOM killer), waiting in CrashLoopBackOff."""
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
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
