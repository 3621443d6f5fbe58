"""Calls made inside ``run_with_stack_room`` stay in one frame-stack chunk.

A call that lands across a CPython frame-stack chunk boundary maps a fresh chunk each
time and unmaps it on return; touching fresh memory page-faults, so this thread's minor
page faults (``RUSAGE_THREAD``) show the churn. Without room, some call depth churns on
every call; inside ``run_with_stack_room`` none does.
"""

from __future__ import annotations

import resource
import sys
import threading
from collections.abc import Callable

import pytest

from kaito_cpu_runtime.pystack import run_with_stack_room

pytestmark = pytest.mark.skipif(
    not hasattr(resource, "RUSAGE_THREAD"), reason="per-thread page faults need Linux"
)
CALLS = 400


def leaf() -> int:
    return 1


def at_depth(depth: int, call: Callable[[], int]) -> int:
    """``call()`` made ``depth`` Python frames below here."""
    return call() if depth == 0 else at_depth(depth - 1, call)


def faults_per_call(depth: int) -> float:
    """Minor page faults of this thread per call of :func:`leaf` made ``depth`` frames down."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(CALLS):
        at_depth(depth, leaf)
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / CALLS


def churning_depths() -> list[int]:
    """The call depths (up to 200 frames, 24 KiB or so) at which every call page-faults:
    those beyond this thread's first chunk, where the calls of an ordinary thread go."""
    return [depth for depth in range(0, 200, 10) if faults_per_call(depth) >= 0.9]


def in_thread(body: Callable[[], list[int]]) -> list[int]:
    found: list[int] = []
    thread = threading.Thread(target=lambda: found.extend(body()))
    thread.start()
    thread.join()
    return found


@pytest.mark.skipif(sys.version_info < (3, 11), reason="frame-stack chunks came with 3.11")
def test_calls_inside_the_roomy_frame_do_not_churn_frame_stack_chunks() -> None:
    assert in_thread(churning_depths), "no depth churned: the test could not tell a difference"
    assert in_thread(lambda: run_with_stack_room(churning_depths)) == []


def test_the_function_runs_and_its_result_comes_back() -> None:
    assert run_with_stack_room(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        run_with_stack_room(lambda: 1 // 0)
