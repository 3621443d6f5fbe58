"""How many CPU threads the transformers runtime uses.

:func:`configure_cpu_threads` sets the starting count before torch starts its OpenMP
threads (so before the runtime's first ``import torch``); :class:`ThreadGovernor` then
moves the batcher thread between one thread and that count by measured decode speed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ThreadGovernor",
    "available_cpus",
    "configure_cpu_threads",
]

log = logging.getLogger(__name__)
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
    """Set the OpenMP thread count for this process (unless set already).

    ``OMP_NUM_THREADS`` = :func:`available_cpus`. The wait policy stays libgomp's default
    (idle threads spin a while, then sleep): a decode step runs a few hundred parallel
    regions back to back, and threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``)
    must be woken for each, which on a virtual machine costs about as much as the
    region's work. Spinning threads are bad neighbours under contention;
    :class:`ThreadGovernor` drops to one thread when that measures faster. An explicit
    ``OMP_NUM_THREADS`` wins. Only takes effect before torch is first imported.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    env.setdefault("OMP_NUM_THREADS", str(available_cpus()))


@dataclass
class _Window:
    """Decode work measured at one thread count since the window opened."""

    threads: int
    opened: float
    rows: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Sequence-steps per second of forward time."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        """Mean sequences per decode step."""
        return self.rows / self.steps if self.steps else 0.0


class ThreadGovernor:
    """Picks the intra-op thread count of the batcher thread by measuring both choices.

    Several threads win on free cores; one thread wins when other processes compete for
    them, because a step waits at every parallel region for its slowest thread and a
    thread the kernel has descheduled stalls the others (measured here with other work on
    the 2 cores: two threads served 47.6 tokens/s at concurrency 16, one thread 133.4;
    on free cores two threads served 211.7). The governor keeps decode windows of about
    ``window`` seconds, runs one window with the other choice every ``probe_every``
    windows, and keeps whichever decoded more sequence-steps per second (windows whose
    mean batch sizes differ by more than a quarter are not compared). A probe that loses
    doubles the wait before the next one, up to ``MAX_BACKOFF`` times ``probe_every``: on
    free cores one thread served a third fewer tokens per second here (one stream: 50.0
    against 76.8; four: 119.9 against 170.8), so every losing probe window cost about 3%
    of the throughput between probes. A probe that wins (a switch) resets the wait.
    """

    #: The longest wait between probes, in multiples of ``probe_every``.
    MAX_BACKOFF = 8

    def __init__(
        self,
        *,
        max_threads: int,
        set_threads: Callable[[int], None] | None = None,
        window: float = 2.0,
        probe_every: int = 10,
    ) -> None:
        self.max_threads = max_threads
        self.threads = max_threads
        self._set_threads = set_threads
        self._window_seconds = window
        self._probe_every = probe_every
        self._probe_wait = probe_every  # windows between probes now
        self._windows_since_probe = 0
        self._current: _Window | None = None
        self._baseline: _Window | None = None  # the last full window before a probe

    def record(self, rows: int, seconds: float, now: float | None = None) -> int:
        """Account one decode step (call from the thread that runs the model, after the
        step); returns the thread count for the next one."""
        if self.max_threads <= 1:
            return self.threads
        now = time.monotonic() if now is None else now
        window = self._current
        if window is None or window.threads != self.threads:
            window = self._current = _Window(self.threads, now - seconds)
        window.rows += rows
        window.steps += 1
        window.seconds += seconds
        if now - window.opened >= self._window_seconds:
            self._close(window)
        return self.threads

    def _close(self, window: _Window) -> None:
        self._current = None
        baseline = self._baseline
        if baseline is not None and baseline.threads != window.threads:  # a probe ended
            self._baseline = None
            comparable = abs(window.mean_batch - baseline.mean_batch) <= 0.25 * max(
                window.mean_batch, baseline.mean_batch
            )
            better = window if comparable and window.rate > baseline.rate else baseline
            if better.threads != self.threads:
                self._apply(better.threads)
            self._probe_wait = (
                self._probe_every
                if better is window
                else min(2 * self._probe_wait, self.MAX_BACKOFF * self._probe_every)
            )
            if better is window:
                log.info(
                    "%d intra-op thread(s): %.0f vs %.0f sequence-steps/s",
                    window.threads,
                    window.rate,
                    baseline.rate,
                )
            return
        self._windows_since_probe += 1
        if self._windows_since_probe >= self._probe_wait:
            self._windows_since_probe = 0
            self._baseline = window
            self._apply(1 if self.threads > 1 else self.max_threads)

    def _apply(self, threads: int) -> None:
        if self._set_threads is None:
            import torch  # noqa: PLC0415  (the runtime has imported it by now)

            torch.set_num_threads(threads)
        else:
            self._set_threads(threads)
        self.threads = threads
