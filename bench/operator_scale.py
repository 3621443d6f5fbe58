"""Operator scale benchmark: N Workspaces applied at once against a real control plane.

``tools/local_cluster.py`` starts etcd, kube-apiserver, kube-controller-manager and
kube-scheduler (Kubernetes 1.20, built once from Debian's sources) on loopback, the
chart's CRDs are created, and the real operator runs as a separate ``python -m
kaito_operator`` process (Workspace controller only, otherwise its default settings),
authenticated as a ServiceAccount of its own. Half the Workspaces (``--gpu-share``) are
BYO GPU Workspaces (Phi-4-mini on ``Standard_NC24ads_A100_v4``), each with a Ready Node
that the benchmark registers beforehand (GPU feature discovery labels, one
``nvidia.com/gpu``), the rest the SmolLM2 CPU preset; each gets a StatefulSet and two
Services. All N are created concurrently; the benchmark watches the apiserver and
records, per Workspace, the time from just before its create request until all three
children exist and until its status is first written, then waits until every Workspace
has a status and the operator has gone quiet.

It reports p50/p99 per kind, the operator's CPU time and resident memory (current and
peak), the API calls the operator made per Workspace by verb and resource (from the
apiserver's audit log, filtered to the operator's user), the requests of every client
(``apiserver_request_total`` before and after), the CPU time of the apiserver, etcd,
controller manager and scheduler over the run (``/proc``), and the machine and load
average, so that a number taken on a busy machine says so.

    python bench/operator_scale.py --workspaces 200 [--gpu-share 0.5] [--profile FILE]
        [--py-spy FILE] [--floor]

With ``--floor`` the minimal controller of ``operator_floor.py`` runs in the operator's
place (same account, same measurements): the floor this control plane sets on this
machine for the same children.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from machine import describe_machine, machine_facts
from operator_cluster import (
    AUDIT_POLICY,
    NAMESPACE,
    audited_calls,
    cpu_seconds,
    load_local_cluster,
    log_errors,
    setup,
    snapshot,
    start_operator,
    workspace,
)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Tracker:
    """Per-Workspace timings from the apiserver's watch events."""

    def __init__(self, gpu: dict[str, bool]) -> None:
        self.gpu = gpu
        """Workspace name -> whether it is a GPU one."""
        self.created: dict[str, float] = {}
        self.children: dict[str, float] = {}
        self.status: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self._missing = {
            name: {("statefulsets", name), ("services", name), ("services", f"{name}-headless")}
            for name in gpu
        }
        self._owner = {child: name for name, kids in self._missing.items() for child in kids}

    def child(self, plural: str, obj: dict[str, Any], at: float) -> None:
        """A StatefulSet or Service event."""
        owner = self._owner.get((plural, obj["metadata"]["name"]))
        if owner is None or owner in self.children:
            return
        self._missing[owner].discard((plural, obj["metadata"]["name"]))
        if not self._missing[owner]:
            self.children[owner] = at
            self._check()

    def workspace(self, obj: dict[str, Any], at: float) -> None:
        """A Workspace event: the first one with status conditions counts."""
        name = obj["metadata"]["name"]
        if name not in self.status and (obj.get("status") or {}).get("conditions"):
            self.status[name] = at
            self._check()

    def _check(self) -> None:
        if len(self.children) == len(self.status) == len(self.gpu):
            self.all_done.set()

    def latencies(self, done: dict[str, float], gpu: bool | None = None) -> dict[str, Any]:
        """p50/p99/max seconds from create to ``done`` (one kind, or both)."""
        values = [
            done[name] - self.created[name] for name in done if gpu is None or self.gpu[name] == gpu
        ]
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "p50_s": round(statistics.median(values), 3),
            "p99_s": round(percentile(values, 0.99), 3),
            "max_s": round(max(values), 3),
        }


async def watch(client: httpx.AsyncClient, path: str, handle: Any) -> None:
    """Stream the objects of ``path`` into ``handle``: a list, then watch events; when
    the apiserver ends the stream, resume from the last version (list again on 410)."""
    version = None
    while True:
        if version is None:
            listed = (await client.get(path)).json()
            for obj in listed["items"]:
                handle(obj, time.perf_counter())
            version = listed["metadata"]["resourceVersion"]
        params = {"watch": "true", "resourceVersion": version}
        async with client.stream("GET", path, params=params, timeout=None) as response:
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":  # 410 Gone: too old a version
                    version = None
                    break
                handle(event["object"], time.perf_counter())
                version = event["object"]["metadata"]["resourceVersion"]


async def create_all(client: httpx.AsyncClient, tracker: Tracker, concurrency: int) -> None:
    """Create every Workspace, ``concurrency`` requests in flight."""
    gate = asyncio.Semaphore(concurrency)
    path = f"/apis/kaito.sh/v1beta1/namespaces/{NAMESPACE}/workspaces"

    async def one(name: str) -> None:
        async with gate:
            tracker.created[name] = time.perf_counter()
            response = await client.post(path, json=workspace(name, tracker.gpu[name]))
            response.raise_for_status()

    await asyncio.gather(*(one(name) for name in tracker.gpu))


async def measure(
    cluster: Any, operator: int, audit_log: Path, count: int, gpu_share: float
) -> dict[str, Any]:
    """Create the Workspaces, follow them to their children and status, wait until quiet."""
    gpu_count = round(count * gpu_share)
    names = {f"ws-{index:04d}": index < gpu_count for index in range(count)}
    tracker = Tracker(names)
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    concurrency = 16
    async with (
        httpx.AsyncClient(base_url=cluster.server, verify=context, headers=auth) as watcher,
        httpx.AsyncClient(
            base_url=cluster.server,
            verify=context,
            headers=auth,
            limits=httpx.Limits(max_connections=concurrency),
            timeout=60,
        ) as client,
    ):
        base = f"namespaces/{NAMESPACE}"
        watches = [
            asyncio.create_task(watch(watcher, path, handle))
            for path, handle in (
                (
                    f"/apis/apps/v1/{base}/statefulsets",
                    lambda o, t: tracker.child("statefulsets", o, t),
                ),
                (f"/api/v1/{base}/services", lambda o, t: tracker.child("services", o, t)),
                (f"/apis/kaito.sh/v1beta1/{base}/workspaces", tracker.workspace),
            )
        ]
        await asyncio.sleep(1)  # the watches are open
        before = snapshot(cluster, operator, audit_log)
        own_cpu = time.process_time()
        started = time.perf_counter()
        await create_all(client, tracker, concurrency)
        created_s = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.all_done.wait(), timeout=300)
        done_s = time.perf_counter() - started
        cpu_done = quiet = cpu_seconds(operator)
        for _ in range(120):  # until the operator used no CPU for a second
            await asyncio.sleep(1)
            now = cpu_seconds(operator)
            if now - quiet < 0.02:
                break
            quiet = now
        settled_s = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu
        after = snapshot(cluster, operator, audit_log)
        for task in watches:
            task.cancel()
    await asyncio.sleep(0.5)  # the audit log's last lines
    calls = audited_calls(audit_log, before["audit_offset"])
    operator_cpu = after["cpu"]["operator"] - before["cpu"]["operator"]
    return {
        "workspaces": count,
        "gpu_workspaces": gpu_count,
        "create_requests_s": round(created_s, 2),
        "children_and_status_s": round(done_s, 2),
        "settled_s": round(settled_s, 2),
        "create_to_children": {
            "all": tracker.latencies(tracker.children),
            "cpu": tracker.latencies(tracker.children, gpu=False),
            "gpu": tracker.latencies(tracker.children, gpu=True),
        },
        "create_to_status": {
            "all": tracker.latencies(tracker.status),
            "cpu": tracker.latencies(tracker.status, gpu=False),
            "gpu": tracker.latencies(tracker.status, gpu=True),
        },
        "operator_cpu_until_done_s": round(cpu_done - before["cpu"]["operator"], 2),
        "operator_cpu_ms_per_workspace_settled": round(1000 * operator_cpu / count, 2),
        "operator_rss_idle_mib": round(before["memory"]["VmRSS"] / 1024, 1),
        "operator_rss_after_mib": round(after["memory"]["VmRSS"] / 1024, 1),
        "operator_rss_peak_mib": round(after["memory"]["VmHWM"] / 1024, 1),
        "operator_api_calls_per_workspace": round(sum(calls.values()) / count, 2),
        "operator_api_calls": dict(sorted(calls.items())),
        "all_clients_requests_per_workspace": round(
            (after["requests"] - before["requests"]) / count, 2
        ),
        "cpu_s_until_settled": {
            name: round(after["cpu"][name] - before["cpu"][name], 2) for name in after["cpu"]
        }
        | {"benchmark": round(own_cpu, 2)},
    }


def run(
    count: int,
    gpu_share: float,
    profile: str | None,
    *,
    floor: bool = False,
    py_spy: str | None = None,
) -> dict[str, Any]:
    """Start the control plane and the operator, set up, measure (module docstring)."""
    local_cluster = load_local_cluster()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        workdir = Path(tmp)
        policy, audit_log = workdir / "audit-policy.yaml", workdir / "audit.log"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        audit_log.touch()
        flags = [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            # The local control plane's /24 has 253 ClusterIPs; every Workspace takes one.
            "--service-cluster-ip-range=10.0.0.0/16",
        ]
        with local_cluster.LocalCluster(apiserver_args=flags) as cluster:
            gpu_names = [f"ws-{index:04d}" for index in range(round(count * gpu_share))]
            kubeconfig = setup(cluster, gpu_names)
            free_port = local_cluster.free_port
            log = workdir / "operator.log"
            operator = start_operator(
                kubeconfig, free_port(), free_port(), log, profile, floor=floor
            )
            sampler = None
            if py_spy:  # py-spy (on PATH) samples the operator: collapsed stacks
                command = ["py-spy", "record", "--pid", str(operator.pid), "--format", "raw"]
                sampler = subprocess.Popen(  # its messages to stderr: stdout is the JSON
                    [*command, "--rate", "100", "-o", py_spy], stdout=sys.stderr
                )
            try:
                time.sleep(2)  # kopf lists and starts its watches
                results = asyncio.run(measure(cluster, operator.pid, audit_log, count, gpu_share))
                results["operator_log_errors"] = log_errors(log)
            finally:
                if sampler is not None:
                    sampler.send_signal(signal.SIGINT)
                    sampler.wait(timeout=60)
                operator.terminate()
                operator.wait(timeout=30)
            version = cluster.version()
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "controller": "floor (bench/operator_floor.py)" if floor else "kaito-operator",
        "control_plane": version,
        "machine": machine_facts(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **results,
    }


def main() -> None:
    """Run the benchmark and print its results (JSON on stdout)."""
    print(describe_machine(), file=sys.stderr, flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument(
        "--gpu-share", type=float, default=0.5, help="share of BYO GPU Workspaces (0-1)"
    )
    parser.add_argument("--profile", help="write a cProfile of the operator process here")
    parser.add_argument(
        "--floor", action="store_true", help="the minimal controller in the operator's place"
    )
    parser.add_argument("--py-spy", help="write py-spy's collapsed stacks of the operator here")
    args = parser.parse_args()
    results = run(
        args.workspaces, args.gpu_share, args.profile, floor=args.floor, py_spy=args.py_spy
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
