"""How the transformers runtime uses CPU threads: how many, and how they wait.

Both decisions have to be made before torch starts its OpenMP threads, so
:func:`configure_cpu_threads` runs before the first ``import torch`` of the runtime.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["OPENMP_SPIN_COUNT", "available_cpus", "configure_cpu_threads"]

OPENMP_SPIN_COUNT = 20_000
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota_cpus(cgroup_root: Path) -> float | None:
    """CPUs allowed by a CFS quota (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``)."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may really use: its affinity mask, capped by a container's CPU
    limit (a pod with ``limits.cpu: 2`` on a 64-core node gets 2, where torch alone
    would start 64 threads that fight over the quota)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _quota_cpus(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def configure_cpu_threads(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the OpenMP thread count and wait policy for this process (unless set already).

    - ``OMP_NUM_THREADS`` = :func:`available_cpus`.
    - Idle OpenMP threads spin briefly before sleeping (``GOMP_SPINCOUNT``; libgomp is the
      OpenMP of torch's wheels). A decode step runs a few hundred parallel regions back
      to back; threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``) must be woken for
      each, which on a virtual machine costs about as much as the region's work: two
      threads were no faster than one here. Unbounded spinning (``ACTIVE``) burns the
      cores other processes need.

    An explicit ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins. Only
    takes effect before torch is first imported.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    env.setdefault("OMP_NUM_THREADS", str(available_cpus()))
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN_COUNT))
