"""Fixtures shared by every test directory (pytest loads this file from the rootdir)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises ``KeyboardInterrupt`` in this process, and children start with its
    default action, even where the test run inherited SIGINT ignored (a background job of
    a non-interactive shell ignores it, and Python then leaves it ignored): tests that
    stop a program with SIGINT need that."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
