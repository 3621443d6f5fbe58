"""What machine a benchmark ran on: CPU model, the SIMD flags that pick kernels, load.

Every script under ``bench/`` prints :func:`describe_machine` first, so a figure copied
into ``docs/benchmarks.md`` always comes with the CPU it was measured on (machines of our
class differ: AVX2-only and AVX-512 BF16/AMX both occur, and the fastest kernels differ).
"""

from __future__ import annotations

import os
import platform
from typing import Any

#: The CPU flags that decide which kernels run (oneDNN bf16, AMX, AVX-512, AVX2).
KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_ne_convert",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def machine_facts() -> dict[str, Any]:
    """CPU model, the kernel-relevant flags present, usable cores and load averages."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "flags": [flag for flag in KERNEL_FLAGS if flag in flags],
        "cores": len(os.sched_getaffinity(0)),
        "loadavg": [round(load, 2) for load in os.getloadavg()],
    }


def describe_machine() -> str:
    """One line for the top of a benchmark's output."""
    facts = machine_facts()
    load = " ".join(f"{value:.2f}" for value in facts["loadavg"])
    return (
        f"machine: {facts['cpu']}, {facts['cores']} cores, "
        f"flags {' '.join(facts['flags']) or 'none of ' + '/'.join(KERNEL_FLAGS)}, load {load}"
    )


if __name__ == "__main__":
    print(describe_machine())
