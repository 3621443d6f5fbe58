"""How the transformers runtime uses CPU threads: how many, and how they wait.

Both decisions have to be made before torch starts its OpenMP threads, so
:func:`configure_cpu_threads` runs before the first ``import torch`` of the runtime.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

__all__ = [
    "OPENMP_SPIN_COUNT",
    "ThreadGovernor",
    "available_cpus",
    "configure_cpu_threads",
    "cpu_pressure",
]

log = logging.getLogger(__name__)
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


def cpu_pressure(
    paths: tuple[Path, ...] = (CGROUP_ROOT / "cpu.pressure", Path("/proc/pressure/cpu")),
) -> float | None:
    """Share of the last 10 s (percent) in which runnable tasks waited for a CPU.

    The container's own pressure (cgroup v2) where the kernel has it, else the machine's
    (PSI); ``None`` when neither exists.
    """
    for path in paths:
        try:
            for line in path.read_text().splitlines():
                if line.startswith("some "):
                    fields = dict(item.split("=", 1) for item in line.split()[1:])
                    return float(fields["avg10"])
        except (OSError, KeyError, ValueError):
            continue
    return None


class ThreadGovernor:
    """Picks the intra-op thread count of the batcher thread between steps.

    All :func:`available_cpus` while the CPUs are otherwise free; one thread while other
    processes compete for them (CPU pressure above ``high`` percent, back once below
    ``low``). With several threads a step waits at every parallel region for the slowest
    thread, and a thread the kernel has descheduled stalls the others: measured here with
    other work on the 2 cores, two threads served 47.6 tokens/s at concurrency 16 where
    one thread served 133.4. Without a pressure source it keeps the thread count as is.
    """

    def __init__(
        self,
        *,
        max_threads: int,
        read_pressure: Callable[[], float | None] = cpu_pressure,
        set_threads: Callable[[int], None] | None = None,
        interval: float = 2.0,
        high: float = 25.0,
        low: float = 10.0,
    ) -> None:
        self.max_threads = max_threads
        self.threads = max_threads
        self._read_pressure = read_pressure
        self._set_threads = set_threads
        self._interval = interval
        self._high = high
        self._low = low
        self._next_check = 0.0

    def tick(self, now: float | None = None) -> int:
        """Re-check the pressure when due (call from the thread that runs the model)."""
        now = time.monotonic() if now is None else now
        if self.max_threads <= 1 or now < self._next_check:
            return self.threads
        self._next_check = now + self._interval
        pressure = self._read_pressure()
        wanted = self.threads
        if pressure is not None and pressure > self._high:
            wanted = 1
        elif pressure is not None and pressure < self._low:
            wanted = self.max_threads
        if wanted != self.threads:
            log.info("CPU pressure %.0f%%: %d intra-op thread(s)", pressure, wanted)
            self._apply(wanted)
        return self.threads

    def _apply(self, threads: int) -> None:
        if self._set_threads is None:
            import torch  # noqa: PLC0415  (the runtime has imported it by now)

            torch.set_num_threads(threads)
        else:
            self._set_threads(threads)
        self.threads = threads
