"""Packing prompts into prefill passes of fixed lengths, and choosing those lengths."""

from __future__ import annotations

import pytest
import torch

from kaito_cpu_runtime.prefill_passes import (
    PASS_ROWS,
    agreeing_pass_rows,
    pass_rows,
    plan_passes,
    split_prompt,
)


def test_a_prompt_is_cut_at_multiples_of_the_longest_pass() -> None:
    chunks = split_prompt(3, list(range(150)), 20, "cache", "adapter", longest=64)
    assert [len(c.ids) for c in chunks] == [44, 64, 42]  # positions 20-63, 64-127, 128-169
    assert [c.start for c in chunks] == [20, 64, 128]
    assert [c.last for c in chunks] == [False, False, True]
    assert chunks[1].ids == list(range(44, 108))
    assert {(c.sequence, c.cache, c.adapter) for c in chunks} == {(3, "cache", "adapter")}
    whole = split_prompt(0, list(range(170)), 0, None, None, longest=64)
    assert [(c.start, len(c.ids)) for c in whole] == [(0, 64), (64, 64), (128, 42)]
    assert [len(c.ids) for c in split_prompt(0, [1] * 10, 64, None, None, longest=64)] == [10]
    assert [len(c.ids) for c in split_prompt(0, [1] * 10, 60, None, None, longest=64)] == [4, 6]


def test_passes_take_prompts_in_order_as_long_as_they_fit() -> None:
    prompts = [
        split_prompt(i, [i] * n, 0, None, None, longest=64)
        for i, n in enumerate([30, 20, 20, 100, 5])
    ]
    passes = plan_passes(prompts, 64)
    assert [[(c.sequence, len(c.ids)) for c in p] for p in passes] == [
        [(0, 30), (1, 20)],
        [(2, 20)],
        [(3, 64)],
        [(3, 36), (4, 5)],
    ]
    assert plan_passes([], 64) == []


def test_a_pass_is_padded_to_the_shortest_length_that_holds_it() -> None:
    assert pass_rows(1, PASS_ROWS) == 8
    assert pass_rows(9, PASS_ROWS) == 16
    assert pass_rows(33, PASS_ROWS) == 64
    assert pass_rows(64, PASS_ROWS) == 64
    assert pass_rows(65, PASS_ROWS) == 96
    with pytest.raises(ValueError, match="do not fit"):
        pass_rows(PASS_ROWS[-1] + 1, PASS_ROWS)


def exact(x: torch.Tensor) -> torch.Tensor:
    """A row-wise function: every row's result is its own, whatever the pass."""
    return x * 3.0 - 1.0


def test_lengths_are_kept_while_their_rows_agree() -> None:
    assert agreeing_pass_rows([(exact, 8)], [1, 2]) == PASS_ROWS

    def blocks_long_passes(x: torch.Tensor) -> torch.Tensor:
        """Other rounding from 160 rows on, as a kernel that blocks long passes otherwise."""
        return exact(x) + (1e-6 if x.shape[1] >= 160 else 0.0)

    assert agreeing_pass_rows([(exact, 8), (blocks_long_passes, 4)], [1]) == (
        8, 16, 32, 64, 96, 128,
    )  # fmt: skip


def test_short_lengths_that_differ_from_the_anchor_are_dropped_one_by_one() -> None:
    def blocks_short_passes(x: torch.Tensor) -> torch.Tensor:
        """Other rounding in passes of 9-32 rows, as oneDNN's bfloat16 kernels with AMX."""
        return exact(x) + (1e-6 if 8 < x.shape[1] <= 32 else 0.0)

    assert agreeing_pass_rows([(exact, 8), (blocks_short_passes, 4)], [1]) == (
        8, 64, 96, 128, 160, 192, 224, 256,
    )  # fmt: skip
    assert agreeing_pass_rows([(exact, 4)], [1], (16, 64, 96), anchor=64) == (16, 64, 96)
    with pytest.raises(ValueError, match="anchor"):
        agreeing_pass_rows([(exact, 4)], [1], (8, 16, 32), anchor=64)


def test_rows_that_depend_on_their_neighbours_or_threads_keep_no_length() -> None:
    def mixes_rows(x: torch.Tensor) -> torch.Tensor:
        return exact(x) + x.mean(dim=1, keepdim=True)

    def by_threads(x: torch.Tensor) -> torch.Tensor:
        return exact(x) + 1e-6 * torch.get_num_threads()

    threads = torch.get_num_threads()
    assert agreeing_pass_rows([(mixes_rows, 8)], [1]) == ()  # the anchor fails: no length
    assert agreeing_pass_rows([(by_threads, 8)], [1, 2]) == ()
    assert torch.get_num_threads() == threads  # the probe leaves the thread count as it was
