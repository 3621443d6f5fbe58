"""Operator scale benchmark: N Workspaces applied at once against the API emulator.

The emulator (kmock, in this process) serves the SDK's CRDs; the real operator runs as a
separate ``python -m kaito_operator`` process (Workspace controller only, otherwise its
default settings, Event posting included), pointed at it, so its RSS and CPU time are its
own. All N Workspaces (the SmolLM2 CPU preset: a
StatefulSet and two Services each) are created concurrently; the emulator reports each
stored change as it happens, and the script records, per Workspace, the time from its
creation until all three children exist. It then waits until every Workspace has a
status and the operator has gone quiet, and reports the operator's CPU time, resident
memory (current and peak), the API calls it made (by verb and resource) and the load
average, so that a number taken on a busy machine says so.

    python bench/operator_scale.py --workspaces 200 [--profile operator.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from machine import describe_machine

from kaito_operator.testing.harness import OperatorHarness

REPO = Path(__file__).resolve().parents[1]
CRDS = [REPO / "charts" / "kaito-workspace" / "crds" / "kaito.sh_workspaces.yaml"]
CHILDREN = (
    ("apps/v1", "statefulsets", ""),
    ("v1", "services", ""),
    ("v1", "services", "-headless"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def workspace(index: int) -> dict[str, Any]:
    name = f"ws-{index:04d}"
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": "bench",
            "annotations": {"kaito.sh/runtime": "transformers"},
        },
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def start_operator(
    url: str, health_port: int, profile: str | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAITO_OPERATOR_API_SERVER": url,
        "KAITO_OPERATOR_CONTROLLERS": '["workspace"]',
        "KAITO_OPERATOR_HEALTH_PORT": str(health_port),
        "KAITO_OPERATOR_METRICS_PORT": str(free_port()),
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, then polled)
        [
            sys.executable,
            *(["-m", "cProfile", "-o", profile] if profile else []),
            "-m",
            "kaito_operator",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(f"http://127.0.0.1:{health_port}/healthz")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError("the operator did not become live")


def request_counts(requests: list[Any]) -> dict[str, int]:
    """API requests by verb and resource (``PATCH workspaces/status``)."""
    counts: dict[str, int] = {}
    for request in requests:
        plural = request.resource.plural if request.resource is not None else "?"
        sub = f"/{request.subresource}" if request.subresource else ""
        watching = request.params.get("watch") in ("true", "1")
        verb = "WATCH" if watching else str(request.method.value)
        key = f"{verb} {plural}{sub}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


class ChildTimer:
    """Records when each Workspace's last child appeared (an emulator change listener)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.created: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self._missing: dict[str, set[tuple[str, str]]] = {}
        self._owner: dict[tuple[str, str], str] = {}

    def expect(self, name: str) -> None:
        """``name`` is being created now."""
        children = {(plural, name + suffix) for _, plural, suffix in CHILDREN}
        self._missing[name] = children
        self._owner.update(dict.fromkeys(children, name))
        self.created[name] = time.perf_counter()

    def __call__(self, kind: str, group: str, plural: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if kind != "ADDED" or meta.get("namespace") != self.namespace:
            return
        child = (plural, str(meta.get("name")))
        owner = self._owner.get(child)
        if owner is None or owner in self.done:
            return
        self._missing[owner].discard(child)
        if not self._missing[owner]:
            self.done[owner] = time.perf_counter()
            if len(self.done) == len(self.created):
                self.all_done.set()


async def settle(emu: Any, names: list[str], pid: int, *, within: float = 60.0) -> float:
    """Wait until every Workspace has a status and the operator used no CPU for 0.5 s;
    return the seconds that took."""
    started = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - started < within:
        await asyncio.sleep(0.5)
        now = cpu_seconds(pid)
        with_status = sum(
            1
            for name in names
            if (emu.read_object("kaito.sh/v1beta1", "workspaces", "bench", name) or {}).get(
                "status"
            )
        )
        if with_status == len(names) and now - last < 0.02:
            break
        last = now
    return time.perf_counter() - started


async def run(count: int, profile: str | None) -> dict[str, Any]:
    """Create ``count`` Workspaces at once and measure (see the module docstring)."""
    load_before = os.getloadavg()
    async with OperatorHarness(CRDS) as cluster:
        emu = cluster.emulator
        await emu.create_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        )
        timer = ChildTimer("bench")
        emu.add_listener(timer)
        operator = await start_operator(cluster.url, free_port(), profile)
        try:
            await asyncio.sleep(1)  # let the watches start before counting requests
            before = len(emu.recorded_requests)
            idle = rss_kib(operator.pid)
            start_cpu = cpu_seconds(operator.pid)
            own_cpu = time.process_time()
            started = time.perf_counter()
            names = []
            for index in range(count):  # as fast as the API accepts them
                obj = workspace(index)
                names.append(obj["metadata"]["name"])
                timer.expect(names[-1])
                await emu.create_object(obj)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(timer.all_done.wait(), timeout=120)
            total = time.perf_counter() - started
            window_cpu = cpu_seconds(operator.pid) - start_cpu
            own_cpu = time.process_time() - own_cpu
            settle_s = await settle(emu, names, operator.pid)
            settled_cpu = cpu_seconds(operator.pid) - start_cpu
            memory = rss_kib(operator.pid)
            requests = emu.recorded_requests[before:]
            with_status = sum(
                1
                for name in names
                if (emu.read_object("kaito.sh/v1beta1", "workspaces", "bench", name) or {}).get(
                    "status"
                )
            )
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    latencies = [timer.done[name] - timer.created[name] for name in timer.done]
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu_cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "workspaces": count,
        "completed": len(timer.done),
        "all_children_s": round(total, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "operator_cpu_until_children_s": round(window_cpu, 2),
        "emulator_and_client_cpu_until_children_s": round(own_cpu, 2),
        "status_written": with_status,
        "settled_after_s": round(total + settle_s, 2),
        "operator_cpu_ms_per_workspace": round(1000 * settled_cpu / count, 2),
        "operator_rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "operator_rss_after_mib": round(memory["VmRSS"] / 1024, 1),
        "operator_rss_peak_mib": round(memory["VmHWM"] / 1024, 1),
        "api_calls_per_workspace": round(len(requests) / count, 2),
        "api_calls": request_counts(requests),
    }


def main() -> None:
    """Run the benchmark and print its results."""
    print(describe_machine(), file=sys.stderr, flush=True)  # stdout: JSON results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--profile", help="write a cProfile of the operator process here")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.workspaces, args.profile)), indent=2))


if __name__ == "__main__":
    main()
