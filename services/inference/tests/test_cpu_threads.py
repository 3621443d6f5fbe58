"""CPU thread policy: the container's CPU limit caps the thread count; explicit env wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaito_inference.engines.cpu_threads import (
    OPENMP_SPIN_COUNT,
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
