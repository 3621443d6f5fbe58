"""Shared fixtures: offline mode, and the ``requires_cpu`` marker for tests that need a
CPU feature.

``@pytest.mark.requires_cpu("avx512bw avx512vl avx512dq", "avx_ne_convert", why="...")``
runs a test only where ``/proc/cpuinfo`` lists every flag of at least one argument, and
skips it with ``why`` and the missing flags elsewhere. Each such test has a counterpart
that runs on every CPU (the ``cpu_flags`` fixture gives the flags to compare against).
"""

from __future__ import annotations

import os

import pytest
from _pytest.nodes import Item

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see threads.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def missing_cpu_flags(flags: frozenset[str], *alternatives: str) -> str | None:
    """``None`` when ``flags`` hold every flag of one alternative, else what is missing."""
    missing = [sorted(set(option.split()) - flags) for option in alternatives]
    if not alternatives or any(not gap for gap in missing):
        return None
    return " or ".join(" ".join(gap) for gap in missing)


@pytest.fixture(scope="session")
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags from ``/proc/cpuinfo``."""
    from kaito_cpu_runtime.linear import cpu_flags as read  # noqa: PLC0415  (loads torch)

    return read()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``requires_cpu`` marker."""
    config.addinivalue_line(
        "markers",
        "requires_cpu(*alternatives, why): skip unless /proc/cpuinfo has all the flags "
        "of one alternative (space-separated flag names)",
    )


def pytest_runtest_setup(item: Item) -> None:
    """Skip ``requires_cpu`` tests on CPUs without the feature, saying which flags lack."""
    for marker in item.iter_markers("requires_cpu"):
        from kaito_cpu_runtime.linear import cpu_flags as read  # noqa: PLC0415  (loads torch)

        missing = missing_cpu_flags(read(), *marker.args)
        if missing is not None:
            why = marker.kwargs.get("why", "a CPU feature")
            pytest.skip(f"this CPU lacks {missing} ({why})")
