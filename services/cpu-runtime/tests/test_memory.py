"""Heap trimming reaches glibc's ``malloc_trim`` where there is one."""

from __future__ import annotations

import platform

import pytest

from kaito_cpu_runtime.memory import _malloc_trim, release_free_memory


def test_free_heap_memory_is_released_through_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert _malloc_trim() is not None
    release_free_memory()
