"""Room on CPython's frame stack for a thread's hot loop.

CPython (3.11 and later) keeps a thread's Python frames in chunks of 16 KiB and frees a
chunk (``munmap``) as soon as the first frame in it returns, so a loop whose calls go
back and forth across a chunk boundary maps and unmaps memory at every crossing, and
each unmap flushes the TLB of every CPU the process runs on (an interrupt to each, costly
on a virtual machine). Measured here: the fast decoder's compiled decode step, called
from the batcher thread, crossed a boundary about 73 times per step (5,000 ``mmap`` and
``munmap`` pairs a second, ``strace``) and took 14 ms per step instead of 8.

:func:`run_with_stack_room` runs a function inside a frame too large for a 16 KiB chunk,
so CPython gives that frame a chunk of its own with about 32 KiB free behind it, and the
calls made inside stay there: the chunk lives as long as the call. No library offers
this; it is a few lines around :meth:`types.CodeType.replace`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ROOM_SLOTS", "run_with_stack_room"]

T = TypeVar("T")
#: Unused value-stack slots (8 bytes each) of the outer frame: 32 KiB.
ROOM_SLOTS = 4096


def _call(function: Callable[[], T]) -> T:
    return function()


_roomy_call = types.FunctionType(
    _call.__code__.replace(co_stacksize=_call.__code__.co_stacksize + ROOM_SLOTS),
    _call.__globals__,
    "run_with_stack_room",
)


def run_with_stack_room(function: Callable[[], T]) -> T:
    """``function()``, called from a frame that starts a frame-stack chunk with room
    behind it (see the module docstring); meant for a thread's long-running loop."""
    result: T = _roomy_call(function)
    return result
