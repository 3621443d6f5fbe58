"""CPU thread policy: the container's CPU limit caps the thread count; explicit env wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaito_inference.engines.cpu_threads import (
    OPENMP_SPIN_COUNT,
    ThreadGovernor,
    available_cpus,
    configure_cpu_threads,
    cpu_pressure,
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


def test_defaults_and_explicit_settings_win() -> None:
    env: dict[str, str] = {}
    configure_cpu_threads(env)
    assert env == {
        "OMP_NUM_THREADS": str(available_cpus()),
        "GOMP_SPINCOUNT": str(OPENMP_SPIN_COUNT),
    }
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    configure_cpu_threads(env)
    assert env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}


def test_cpu_pressure_prefers_the_container_then_the_machine(tmp_path: Path) -> None:
    own, machine = tmp_path / "cpu.pressure", tmp_path / "pressure-cpu"
    machine.write_text(
        "some avg10=38.37 avg60=69.98 avg300=55.61 total=5951029594\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert cpu_pressure((own, machine)) == 38.37
    own.write_text("some avg10=4.50 avg60=1.00 avg300=0.50 total=12\n")
    assert cpu_pressure((own, machine)) == 4.5
    assert cpu_pressure((tmp_path / "none",)) is None


def test_governor_drops_to_one_thread_under_pressure_and_comes_back() -> None:
    readings = iter([5.0, 40.0, 20.0, 12.0, 3.0, None])
    applied: list[int] = []
    governor = ThreadGovernor(
        max_threads=2,
        read_pressure=lambda: next(readings),
        set_threads=applied.append,
        interval=2.0,
    )
    assert governor.tick(now=0.0) == 2  # 5 %: stays at 2
    assert governor.tick(now=1.0) == 2  # not due: no reading taken
    assert governor.tick(now=2.0) == 1  # 40 %: contention
    assert governor.tick(now=4.0) == 1  # 20 %: between the thresholds, unchanged
    assert governor.tick(now=6.0) == 1  # 12 %: still above the low mark
    assert governor.tick(now=8.0) == 2  # 3 %: free again
    assert governor.tick(now=10.0) == 2  # no pressure source: unchanged
    assert applied == [1, 2]


def test_one_cpu_never_reads_pressure() -> None:
    governor = ThreadGovernor(max_threads=1, read_pressure=lambda: pytest.fail("read"))
    assert governor.tick(now=0.0) == 1
