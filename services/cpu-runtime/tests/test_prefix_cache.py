"""Prefix caching: matches to the token, indexed by blocks, per adapter, least recently used
first out."""

from __future__ import annotations

from typing import Any

import torch

from kaito_cpu_runtime.prefix_cache import BLOCK_TOKENS, PrefixCache


def states(length: int, fill: float = 0.0, layers: int = 2) -> list[Any]:
    return [(torch.full((2, length, 4), fill), torch.full((2, length, 4), -fill))] * layers


def test_lookup_finds_the_longest_shared_start_to_the_token() -> None:
    cache = PrefixCache(max_tokens=1000)
    prompt = list(range(3 * BLOCK_TOKENS + 5))
    assert cache.lookup(None, prompt) == (0, [])
    stored = prompt[: 2 * BLOCK_TOKENS + 3]
    cache.insert(None, stored, states(len(stored), 1.0))
    length, found = cache.lookup(None, prompt)
    assert length == len(stored)  # past the last whole block
    assert found[0][0].shape == (2, len(stored), 4)
    other = prompt[: BLOCK_TOKENS + 7] + [999] * (2 * BLOCK_TOKENS)  # diverges in block 2
    assert cache.lookup(None, other)[0] == BLOCK_TOKENS + 7
    assert cache.cached_length(None, other) == BLOCK_TOKENS + 7  # what lookup finds, read only
    assert cache.cached_length(None, prompt) == len(stored)
    assert cache.cached_length(None, prompt[:5] + [999] * 40) == 0  # not a whole block shared
    assert cache.lookup("an-adapter", prompt) == (0, [])  # adapters never share states


def test_prompts_that_share_blocks_are_told_apart_by_their_tails() -> None:
    cache = PrefixCache(max_tokens=1000)
    start = list(range(2 * BLOCK_TOKENS))
    tails = {name: [1000 + i, 2000 + i, 3000 + i] for i, name in enumerate("abc")}
    for fill, tail in enumerate(tails.values()):
        cache.insert(None, start + tail, states(len(start) + 3, float(fill)))
    for fill, tail in enumerate(tails.values()):
        length, found = cache.lookup(None, [*start, *tail, 7])
        assert length == len(start) + 3
        assert float(found[0][0][0, 0, 0]) == fill  # the entry that holds this tail
    assert cache.lookup(None, [*start, 1000, 5, 5])[0] == len(start) + 1
    assert cache.cached_tokens == 3 * (len(start) + 3)


def test_a_prompt_sent_again_keeps_one_token_to_compute() -> None:
    cache = PrefixCache(max_tokens=1000)
    prompt = list(range(2 * BLOCK_TOKENS + 9))
    cache.insert(None, prompt, states(len(prompt)))
    assert cache.lookup(None, prompt)[0] == len(prompt) - 1
    whole = list(range(2 * BLOCK_TOKENS))
    cache.insert(None, whole, states(len(whole)))  # a start of the first: held already
    assert cache.cached_tokens == len(prompt)
    assert cache.lookup(None, whole)[0] == len(whole) - 1
    assert cache.lookup(None, whole[: BLOCK_TOKENS + 1])[0] == BLOCK_TOKENS
    assert cache.lookup(None, whole[:BLOCK_TOKENS])[0] == 0  # a block, less its last token
    assert not cache.keeps(BLOCK_TOKENS - 1)
    assert cache.keeps(BLOCK_TOKENS)
    assert not cache.keeps(1001)


def test_eviction_by_tokens_and_subsumed_entries() -> None:
    cache = PrefixCache(max_tokens=3 * BLOCK_TOKENS)
    first = list(range(BLOCK_TOKENS))
    cache.insert(None, first, states(BLOCK_TOKENS))
    longer = first + list(range(100, 100 + BLOCK_TOKENS))
    cache.insert(None, longer, states(2 * BLOCK_TOKENS))  # contains the first: replaces it
    assert cache.cached_tokens == 2 * BLOCK_TOKENS
    assert cache.lookup(None, [*first, 7])[0] == BLOCK_TOKENS
    cache.insert(None, list(range(500, 500 + 2 * BLOCK_TOKENS)), states(2 * BLOCK_TOKENS))
    assert cache.cached_tokens == 2 * BLOCK_TOKENS  # the least recently used went
    assert cache.lookup(None, [*longer, 7]) == (0, [])
    cache.insert(None, list(range(5 * BLOCK_TOKENS)), states(5 * BLOCK_TOKENS))  # too big
    assert cache.cached_tokens == 2 * BLOCK_TOKENS
    cache.clear()
    assert cache.cached_tokens == 0


def test_asking_the_cached_length_does_not_mark_a_prompt_used() -> None:
    cache = PrefixCache(max_tokens=2 * BLOCK_TOKENS)
    older, newer = list(range(BLOCK_TOKENS)), list(range(200, 200 + BLOCK_TOKENS))
    cache.insert(None, older, states(BLOCK_TOKENS))
    cache.insert(None, newer, states(BLOCK_TOKENS))
    assert cache.cached_length(None, [*older, 1]) == BLOCK_TOKENS
    cache.insert(None, list(range(400, 400 + BLOCK_TOKENS)), states(BLOCK_TOKENS))
    assert cache.cached_length(None, [*older, 1]) == 0  # still the least recently used
    assert cache.lookup(None, [*newer, 1])[0] == BLOCK_TOKENS


def test_touch_says_whether_tokens_are_held_and_marks_them_used() -> None:
    cache = PrefixCache(max_tokens=2 * BLOCK_TOKENS)
    older, newer = list(range(BLOCK_TOKENS)), list(range(200, 200 + BLOCK_TOKENS))
    cache.insert(None, older, states(BLOCK_TOKENS))
    cache.insert(None, newer, states(BLOCK_TOKENS))
    assert cache.touch(None, older)  # now the most recently used
    assert not cache.touch("an-adapter", older)
    assert not cache.touch(None, [*older[:-1], 999])  # the last token differs
    assert not cache.touch(None, older[:5])  # held, but shorter than a block: not indexed
    cache.insert(None, list(range(400, 400 + BLOCK_TOKENS)), states(BLOCK_TOKENS))
    assert cache.cached_length(None, [*older, 1]) == BLOCK_TOKENS  # kept: touched
    assert cache.cached_length(None, [*newer, 1]) == 0  # evicted instead
