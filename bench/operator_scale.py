"""Operator scale benchmark: N Workspaces applied at once against the API emulator.

The emulator (kmock, in this process) serves the SDK's CRDs; the real operator runs as a
separate ``python -m kaito_operator`` process pointed at it, so its RSS is its own. All N
Workspaces (the SmolLM2 CPU preset: a StatefulSet and two Services each) are created
concurrently; the script records, per Workspace, the time from its creation until all
three children exist, and the operator's resident memory (current and peak).

    python bench/operator_scale.py --workspaces 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

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
        "KAITO_OPERATOR_POST_EVENTS": "false",
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


async def run(count: int, profile: str | None) -> dict[str, Any]:
    async with OperatorHarness(CRDS) as cluster:
        emu = cluster.emulator
        await emu.create_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        )
        operator = await start_operator(cluster.url, free_port(), profile)
        try:
            await asyncio.sleep(1)  # let the watches start before counting requests
            before = len(emu.recorded_requests)
            idle = rss_kib(operator.pid)
            operator_cpu = start_cpu = cpu_seconds(operator.pid)
            own_cpu = time.process_time()
            created: dict[str, float] = {}
            started = time.perf_counter()
            for index in range(count):  # as fast as the API accepts them
                obj = workspace(index)
                await emu.create_object(obj)
                created[obj["metadata"]["name"]] = time.perf_counter()
            done: dict[str, float] = {}
            deadline = started + 120
            while len(done) < count and time.perf_counter() < deadline:
                for name in created:
                    if name not in done and all(
                        emu.exists(api, plural, "bench", name + suffix)
                        for api, plural, suffix in CHILDREN
                    ):
                        done[name] = time.perf_counter()
                await asyncio.sleep(0.005)
            total = time.perf_counter() - started
            operator_cpu = cpu_seconds(operator.pid) - operator_cpu
            own_cpu = time.process_time() - own_cpu
            await asyncio.sleep(2)  # let status writes settle before the memory reading
            memory = rss_kib(operator.pid)
            settled_cpu = cpu_seconds(operator.pid) - start_cpu
            requests = emu.recorded_requests[before:]
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    latencies = [done[name] - created[name] for name in done]
    return {
        "workspaces": count,
        "completed": len(done),
        "all_children_s": round(total, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "operator_cpu_s": round(operator_cpu, 2),
        "emulator_cpu_s": round(own_cpu, 2),
        "operator_rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "operator_rss_after_mib": round(memory["VmRSS"] / 1024, 1),
        "operator_rss_peak_mib": round(memory["VmHWM"] / 1024, 1),
        "operator_cpu_settled_s": round(settled_cpu, 2),
        "api_calls_per_workspace": round(len(requests) / count, 2),
        "api_calls": request_counts(requests),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--profile", help="write a cProfile of the operator process here")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.workspaces, args.profile)), indent=2))


if __name__ == "__main__":
    main()
