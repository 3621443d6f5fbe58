"""Automatic prefix caching: prompts that start alike skip recomputing their shared start.

Chat requests repeat long beginnings (the chat template, a system prompt, few-shot
examples, the conversation so far). After a prefill the batcher stores the keys and values
of each prompt; a later prompt that begins like a stored one copies the shared start into
its cache rows and prefills only the rest, down to its last token (whose logits are
wanted), so a prompt sent again computes one token. Matches run to the token, as
llama.cpp's slots and SGLang's radix cache reuse prompts, not to whole blocks as vLLM's
block tables do: a burst of repeated chat prompts of about 40 tokens then prefills 16 rows
instead of 16 x 9. Keys and values depend on everything before them (and on the LoRA
adapter), so entries are found by a chained hash of their whole blocks of
:data:`BLOCK_TOKENS` under the adapter's name, then compared token by token past the last
shared block. The cache holds at most ``max_tokens`` tokens and forgets the least
recently used prompts first.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch

__all__ = ["BLOCK_TOKENS", "PrefixCache"]

#: Tokens per hashed block: the granularity of the index, not of a match.
BLOCK_TOKENS = 16
LayerStates = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [heads, n, dim]


@dataclass(eq=False)
class _Entry:
    adapter: str | None
    tokens: tuple[int, ...]
    states: LayerStates
    keys: list[tuple[str | None, int]] = field(default_factory=list)  # its index keys


def _block_hashes(tokens: list[int] | tuple[int, ...], blocks: int) -> list[int]:
    """Chained hashes of the first ``blocks`` whole blocks of ``tokens``."""
    hashes, current = [], 0
    for block in range(blocks):
        chunk = tuple(tokens[block * BLOCK_TOKENS : (block + 1) * BLOCK_TOKENS])
        current = hash((current, chunk))
        hashes.append(current)
    return hashes


class PrefixCache:
    """Keys and values of recently seen prompts, found by the start a new prompt shares."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        #: (adapter, chained hash of an entry's first blocks) -> the entries holding them
        self._index: dict[tuple[str | None, int], dict[int, _Entry]] = {}
        self._tokens = 0

    @property
    def cached_tokens(self) -> int:
        """Tokens held now."""
        return self._tokens

    def keeps(self, length: int) -> bool:
        """Whether a prompt of ``length`` tokens is stored (one shorter than a block could
        not be found, one longer than the cache does not fit)."""
        return BLOCK_TOKENS <= length <= self.max_tokens

    def cached_length(self, adapter: str | None, tokens: list[int]) -> int:
        """How many tokens :meth:`lookup` would find now, without marking them used (reads
        only, so another thread may call it while the owner changes the cache)."""
        return self._find(adapter, tokens)[0]

    def lookup(self, adapter: str | None, tokens: list[int]) -> tuple[int, LayerStates]:
        """The longest cached start of ``tokens`` that leaves their last token to compute
        (length, per-layer states of that many tokens); ``(0, [])`` when none."""
        length, entry = self._find(adapter, tokens)
        if entry is None:
            return 0, []
        self._entries.move_to_end(id(entry))
        return length, [(k[:, :length], v[:, :length]) for k, v in entry.states]

    def _find(self, adapter: str | None, tokens: list[int]) -> tuple[int, _Entry | None]:
        """The longest cached start of ``tokens`` short of their last token, and the entry
        holding it: among the entries that share the most whole blocks with ``tokens``, the
        one that shares the most tokens after them."""
        limit = len(tokens) - 1
        hashes = _block_hashes(tokens, max(limit, 0) // BLOCK_TOKENS)
        for blocks in range(len(hashes), 0, -1):
            candidates = list(self._index.get((adapter, hashes[blocks - 1]), {}).values())
            if not candidates:
                continue
            shared = blocks * BLOCK_TOKENS
            start = tuple(tokens[:shared])
            best, best_entry = 0, None
            for entry in candidates:
                if entry.tokens[:shared] == start:
                    length = _common_length(entry.tokens, tokens, shared, limit)
                    if length > best:
                        best, best_entry = length, entry
            if best_entry is not None:
                return best, best_entry
        return 0, None

    def touch(self, adapter: str | None, tokens: list[int]) -> bool:
        """Whether ``tokens`` (a block or more) are held whole, as a stored prompt or the
        start of one; if so that prompt is marked used, as :meth:`insert` would (so a
        caller can skip copying states the cache has)."""
        entry = self._holding(adapter, tokens)
        if entry is None:
            return False
        self._entries.move_to_end(id(entry))
        return True

    def _holding(self, adapter: str | None, tokens: list[int]) -> _Entry | None:
        """An entry whose tokens start with all of ``tokens``, or ``None``."""
        blocks = len(tokens) // BLOCK_TOKENS
        if blocks == 0:
            return None
        whole = tuple(tokens)
        digest = _block_hashes(tokens, blocks)[-1]
        for entry in self._index.get((adapter, digest), {}).values():
            if entry.tokens[: len(whole)] == whole:
                return entry
        return None

    def insert(self, adapter: str | None, tokens: list[int], states: LayerStates) -> None:
        """Remember ``states`` (per layer ``[heads, len(tokens), dim]``, not shared with any
        running cache) for the prompt ``tokens``. Prompts shorter than a block are not
        kept (nothing could find them); stored prompts that ``tokens`` start with give
        way to it."""
        length = len(tokens)
        if not self.keeps(length) or self.touch(adapter, tokens):
            return
        hashes = _block_hashes(tokens, length // BLOCK_TOKENS)
        whole = tuple(tokens)
        for digest in hashes:  # shorter entries this one contains are dropped
            for old in list(self._index.get((adapter, digest), {}).values()):
                if whole[: len(old.tokens)] == old.tokens:
                    self._remove(old)
        entry = _Entry(adapter, whole, states)
        for digest in hashes:
            entry.keys.append((adapter, digest))
            self._index.setdefault((adapter, digest), {})[id(entry)] = entry
        self._entries[id(entry)] = entry
        self._tokens += length
        while self._tokens > self.max_tokens:
            self._evict()

    def clear(self, adapter: str | None = None) -> None:
        """Forget every entry (of ``adapter`` only, when given)."""
        for entry in list(self._entries.values()):
            if adapter is None or entry.adapter == adapter:
                self._remove(entry)

    def _evict(self) -> None:
        _, oldest = next(iter(self._entries.items()))
        self._remove(oldest)

    def _remove(self, entry: _Entry) -> None:
        del self._entries[id(entry)]
        self._tokens -= len(entry.tokens)
        for key in entry.keys:
            holders = self._index.get(key)
            if holders is not None:
                holders.pop(id(entry), None)
                if not holders:
                    del self._index[key]


def _common_length(stored: tuple[int, ...], tokens: list[int], start: int, limit: int) -> int:
    """How many leading tokens ``stored`` and ``tokens`` share, at most ``limit``, given
    that they share the first ``start``."""
    length = start
    end = min(len(stored), limit)
    while length < end and stored[length] == tokens[length]:
        length += 1
    return length
