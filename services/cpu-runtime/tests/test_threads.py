"""CPU thread policy: the container's CPU limit caps the thread count; explicit env wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaito_cpu_runtime.threads import (
    ThreadGovernor,
    available_cpus,
    configure_cpu_threads,
)


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_no_quota_means_the_affinity_mask(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == affinity()
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity()


@pytest.mark.parametrize(("quota", "expected"), [("50000 100000", 1), ("100000 100000", 1)])
def test_cgroup_v2_quota_caps_threads(tmp_path: Path, quota: str, expected: int) -> None:
    (tmp_path / "cpu.max").write_text(quota + "\n")
    assert available_cpus(tmp_path) == expected


def test_cgroup_v1_quota_caps_threads(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == min(2, affinity())
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == affinity()


def test_thread_count_default_and_explicit_setting_wins() -> None:
    env: dict[str, str] = {}
    configure_cpu_threads(env)
    assert env == {"OMP_NUM_THREADS": str(available_cpus())}
    env = {"OMP_NUM_THREADS": "3"}
    configure_cpu_threads(env)
    assert env == {"OMP_NUM_THREADS": "3"}


def decode(governor: ThreadGovernor, clock: list[float], rows: int, step: float, n: int) -> None:
    """``n`` decode steps of ``rows`` sequences taking ``step`` seconds each."""
    for _ in range(n):
        clock[0] += step
        governor.record(rows, step, now=clock[0])


def test_governor_keeps_the_faster_choice_after_each_probe() -> None:
    applied: list[int] = []
    governor = ThreadGovernor(max_threads=2, set_threads=applied.append, window=1.0, probe_every=2)
    clock = [0.0]
    decode(governor, clock, 16, 0.0625, 32)  # two 1 s windows at 2 threads: 256 rows/s
    assert governor.threads == 1  # probing one thread
    decode(governor, clock, 16, 0.125, 8)  # one thread is slower (128 rows/s)
    assert governor.threads == 2
    assert applied == [1, 2]
    decode(governor, clock, 16, 0.25, 12)  # contention: two threads collapse (64 rows/s)
    assert governor.threads == 2  # the lost probe doubled the wait: 4 windows, not 2
    decode(governor, clock, 16, 0.25, 4)
    assert governor.threads == 1  # probe
    decode(governor, clock, 16, 0.125, 8)  # one thread does better now: it stays
    assert governor.threads == 1
    assert applied == [1, 2, 1]


def test_losing_probes_come_ever_less_often_up_to_a_limit_and_a_win_resets() -> None:
    """Each lost probe doubles the windows before the next (2, 4, 8, 16, 16 with
    ``probe_every=2``); a probe that wins brings the wait back to ``probe_every``."""
    applied: list[int] = []
    governor = ThreadGovernor(max_threads=2, set_threads=applied.append, window=1.0, probe_every=2)
    clock = [0.0]
    windows_before_probe = []
    for _ in range(5):
        windows = 0
        while governor.threads == 2:
            decode(governor, clock, 16, 0.0625, 16)  # one window at 2 threads: 256 rows/s
            windows += 1
        windows_before_probe.append(windows)
        decode(governor, clock, 16, 0.125, 8)  # the probe: one thread is slower
        assert governor.threads == 2
    assert windows_before_probe == [2, 4, 8, 16, 16]
    assert governor.MAX_BACKOFF * 2 == 16
    while governor.threads == 2:
        decode(governor, clock, 16, 0.25, 4)  # contention: two threads slow down
    decode(governor, clock, 16, 0.125, 8)  # the probe wins: one thread stays
    assert governor.threads == 1
    decode(governor, clock, 16, 0.125, 16)  # two windows at one thread, then a probe
    assert governor.threads == 2


def test_governor_ignores_probes_with_other_batch_sizes() -> None:
    governor = ThreadGovernor(max_threads=2, set_threads=lambda _: None, window=1.0, probe_every=1)
    clock = [0.0]
    decode(governor, clock, 16, 0.125, 8)  # a window at 2 threads, then the probe starts
    assert governor.threads == 1
    decode(governor, clock, 2, 0.0625, 16)  # a much smaller batch: not comparable
    assert governor.threads == 2


def test_one_cpu_never_probes() -> None:
    governor = ThreadGovernor(max_threads=1, set_threads=lambda _: pytest.fail("set"))
    clock = [0.0]
    decode(governor, clock, 16, 0.5, 100)
    assert governor.threads == 1
