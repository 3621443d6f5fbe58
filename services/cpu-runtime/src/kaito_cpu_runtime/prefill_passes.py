"""Prefill passes of fixed sizes that pack several prompts, without changing their numbers.

A sequence's tokens must not depend on which other requests arrived with it. Prefilling
each prompt in its own pass keeps that, but a burst of sixteen prompts then waits for
sixteen passes, each reading every weight. Packing the prompts into one pass is what a
batch is for; the obstacle is the matrix multiplication: oneDNN picks its kernel and
blocking by the number of rows, so a row's result can change with the pass's length.
Measured here (bfloat16, SmolLM2's projections, AMX): a row computed in a pass of 7-32 rows
differs from the same row in a pass of 64 for the 3072 x 576 projection, and passes of 256
or 320 rows differ with two threads but not with one. Within passes of *one* length,
though, a row's result depended neither on its position, nor on the other rows, nor on
the thread count.

So every pass here has one of a few lengths (:data:`PASS_ROWS`), padded with zero rows,
and the decoder keeps only the lengths whose results it finds equal to a 64-row pass's on
its own weights, with one thread and with the configured threads
(:func:`agreeing_pass_rows`, run at startup: another CPU may block otherwise). On an AMD
EPYC without AMX every length from 2 to 256 rows agreed, in bfloat16 and in float32 on
AVX2 kernels, so a prompt end of a few tokens takes an 8-row pass there (one pass of
SmolLM2's matmuls: 13 ms against 64 ms at 64 rows, float32 on AVX2 kernels). Each pass
is padded up to the shortest kept length that holds its rows, and a prompt is cut at the
positions that are multiples of the longest, decided by its own tokens alone (after a
prefix-cache hit too, so its chunks end where the whole prompt's do). Attention stays per
prompt (each chunk attends to its own cache, through
:func:`~kaito_cpu_runtime.attention.prefill_attention`). The prompt then gets the same
numbers alone, beside others, or after a prefix cache hit at any length, where only its
uncached tokens are computed (measured on the served SmolLM2 for prompts of 41-600
tokens with 1 to all but one of them cached).

Measured on SmolLM2-135M (2 cores, bfloat16 copy of int4 weights): one pass of 8 rows
30 ms, 64 rows 46 ms, 128 rows 75 ms, 256 rows 141 ms; sixteen 25-token prompt ends took
16 passes of about 37 ms before.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ANCHOR_ROWS",
    "PASS_ROWS",
    "PassLayout",
    "PrefillChunk",
    "agreeing_pass_rows",
    "pass_rows",
    "plan_passes",
    "split_prompt",
]


#: The pass lengths a decoder may use, shortest first (kept as :func:`agreeing_pass_rows`
#: finds them on the CPU it runs on).
PASS_ROWS = (8, 16, 32, 64, 96, 128, 160, 192, 224, 256)
#: The length every kept pass length must agree with.
ANCHOR_ROWS = 64


@dataclass
class PrefillChunk:
    """Consecutive prompt tokens of one sequence, computed in one pass.

    ``start`` is the position of the first (the tokens before it are in ``cache``);
    ``last`` says the chunk ends its prompt, so its last position's logits are wanted.
    ``sequence`` is the caller's index of the sequence.
    """

    sequence: int
    ids: list[int]
    start: int
    cache: Any
    adapter: str | None
    last: bool


@dataclass
class PassLayout:
    """Where each chunk's tokens sit in a prefill pass of ``length`` rows: in order from
    the first row (``spans``: each chunk's ``(start, end)`` rows), the rest zero tokens at
    position 0. ``ids`` and ``positions`` are the pass's inputs (``[1, length]``)."""

    chunks: list[PrefillChunk]
    length: int
    ids: torch.Tensor
    positions: torch.Tensor
    spans: list[tuple[int, int]]

    @classmethod
    def of(cls, chunks: list[PrefillChunk], length: int) -> PassLayout:
        """The layout of ``chunks`` in a pass of ``length`` rows."""
        ids = torch.zeros((1, length), dtype=torch.long)
        positions = torch.zeros((1, length), dtype=torch.long)
        spans = []
        at = 0
        for chunk in chunks:
            end = at + len(chunk.ids)
            ids[0, at:end] = torch.tensor(chunk.ids)
            positions[0, at:end] = torch.arange(chunk.start, chunk.start + len(chunk.ids))
            spans.append((at, end))
            at = end
        return cls(chunks, length, ids, positions, spans)

    @property
    def rows(self) -> int:
        """How many rows hold chunk tokens."""
        return self.spans[-1][1] if self.spans else 0


def split_prompt(
    sequence: int, ids: list[int], start: int, cache: Any, adapter: str | None, *, longest: int
) -> list[PrefillChunk]:
    """The chunks of a prompt's uncached tokens ``ids`` (from position ``start``), cut at
    the positions that are multiples of ``longest``: the prompt is cut where it is when
    nothing of it is cached, so after a prefix-cache hit every chunk ends where one of the
    whole prompt's does, and its rows attend to the keys they attend to there (cut
    elsewhere, rows of a prompt longer than a pass rounded otherwise). Depends on the
    prompt alone."""
    cuts = [0, *range(longest - start % longest, len(ids), longest), len(ids)]
    return [
        PrefillChunk(sequence, ids[begin:end], start + begin, cache, adapter, end == len(ids))
        for begin, end in itertools.pairwise(cuts)
        if end > begin
    ]


def plan_passes(prompts: Sequence[list[PrefillChunk]], longest: int) -> list[list[PrefillChunk]]:
    """Passes of at most ``longest`` rows, in arrival order: a prompt's chunks go in order,
    each into the current pass if it fits, else into a new one."""
    passes: list[list[PrefillChunk]] = []
    current: list[PrefillChunk] = []
    rows = 0
    for chunks in prompts:
        for chunk in chunks:
            if current and rows + len(chunk.ids) > longest:
                passes.append(current)
                current, rows = [], 0
            current.append(chunk)
            rows += len(chunk.ids)
    if current:
        passes.append(current)
    return passes


def pass_rows(rows: int, lengths: Sequence[int]) -> int:
    """The shortest of ``lengths`` (ascending) that holds ``rows``."""
    for length in lengths:
        if length >= rows:
            return length
    raise ValueError(f"{rows} rows do not fit a pass of {lengths[-1]}")


def agreeing_pass_rows(
    linears: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], int]],
    thread_counts: Sequence[int],
    candidates: Sequence[int] = PASS_ROWS,
    anchor: int = ANCHOR_ROWS,
) -> tuple[int, ...]:
    """The ``candidates`` (ascending) whose results agree with passes of ``anchor`` rows:
    for each ``(linear, inputs)``, every row of a pass of random rows of a length, run with
    each of ``thread_counts`` threads, must have the bits it gets in a pass of ``anchor``
    rows at another position beside other rows (run with the first thread count).
    ``anchor`` and the longer candidates are kept up to the first that differs; each
    shorter one is kept if it agrees (a kernel may block short passes otherwise, as
    oneDNN's bfloat16 ones do with AMX). Returns ``()`` when ``anchor`` itself fails."""
    longer = [length for length in candidates if length >= anchor]
    shorter = [length for length in candidates if length < anchor]
    if not longer or longer[0] != anchor:
        raise ValueError(f"the candidates {tuple(candidates)} must hold the anchor {anchor}")
    generator = torch.Generator().manual_seed(0)
    threads_before = torch.get_num_threads()
    try:
        kept_longer = longer
        for index, length in enumerate(longer):
            if not _agrees(linears, thread_counts, length, anchor, generator):
                kept_longer = longer[:index]
                break
        if not kept_longer:
            return ()
        kept_shorter = [
            length
            for length in shorter
            if _agrees(linears, thread_counts, length, anchor, generator)
        ]
    finally:
        torch.set_num_threads(threads_before)
    return (*kept_shorter, *kept_longer)


def _agrees(
    linears: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], int]],
    thread_counts: Sequence[int],
    length: int,
    anchor: int,
    generator: torch.Generator,
) -> bool:
    """Whether every linear gives each row of a ``length``-row pass, with each thread
    count, the bits it gets in passes of ``anchor`` rows."""
    for linear, inputs in linears:
        rows = torch.randn(1, length, inputs, generator=generator)
        torch.set_num_threads(thread_counts[0])
        want = _in_passes_of(linear, rows, anchor, generator)
        for threads in thread_counts:
            torch.set_num_threads(threads)
            if not torch.equal(linear(rows), want):
                return False
    return True


def _in_passes_of(
    linear: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    length: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``linear`` of ``rows`` (``[1, n, inputs]``) computed in passes of ``length`` rows,
    half a pass of them at a time after half a pass of random rows: each row at another
    position and beside other rows than in one pass of all of them."""
    half = length // 2
    parts = []
    for start in range(0, rows.shape[1], half):
        part = rows[:, start : start + half]
        filler = torch.randn(1, length - part.shape[1], rows.shape[2], generator=generator)
        parts.append(linear(torch.cat((filler, part), dim=1))[:, filler.shape[1] :])
    return torch.cat(parts, dim=1)
