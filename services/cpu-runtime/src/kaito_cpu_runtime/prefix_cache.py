"""Automatic prefix caching: prompts that start alike skip recomputing their shared start.

Chat requests repeat long beginnings (the chat template, a system prompt, few-shot
examples). After a prefill the batcher stores the keys and values of each prompt's
block-aligned start; a later prompt that begins with a stored block sequence copies those
into its cache rows and prefills only the rest. Keys and values depend on everything
before them (and on the LoRA adapter), so entries are found by a chained hash of whole
blocks under the adapter's name and checked token by token. The cache holds at most
``max_tokens`` tokens and forgets the least recently used prompts first.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch

__all__ = ["BLOCK_TOKENS", "PrefixCache"]

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
    """Keys and values of recently seen prompt starts, whole blocks of tokens at a time."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        self._index: dict[tuple[str | None, int], _Entry] = {}
        self._tokens = 0

    @property
    def cached_tokens(self) -> int:
        """Tokens held now."""
        return self._tokens

    @staticmethod
    def reusable_length(prompt_length: int) -> int:
        """The longest block-aligned start of a prompt that leaves a token to prefill."""
        return ((prompt_length - 1) // BLOCK_TOKENS) * BLOCK_TOKENS

    def cached_length(self, adapter: str | None, tokens: list[int]) -> int:
        """How many tokens :meth:`lookup` would find now, without marking them used (reads
        only, so another thread may call it while the owner changes the cache)."""
        return self._find(adapter, tokens)[0]

    def lookup(self, adapter: str | None, tokens: list[int]) -> tuple[int, LayerStates]:
        """The longest cached start of ``tokens`` (length, per-layer states of that many
        tokens); ``(0, [])`` when none."""
        length, entry = self._find(adapter, tokens)
        if entry is None:
            return 0, []
        self._entries.move_to_end(id(entry))
        return length, [(k[:, :length], v[:, :length]) for k, v in entry.states]

    def _find(self, adapter: str | None, tokens: list[int]) -> tuple[int, _Entry | None]:
        """The longest cached start of ``tokens`` and the entry holding it."""
        blocks = self.reusable_length(len(tokens)) // BLOCK_TOKENS
        for block, digest in reversed(list(enumerate(_block_hashes(tokens, blocks), 1))):
            entry = self._index.get((adapter, digest))
            length = block * BLOCK_TOKENS
            if entry is not None and entry.tokens[:length] == tuple(tokens[:length]):
                return length, entry
        return 0, None

    def touch(self, adapter: str | None, tokens: list[int]) -> bool:
        """Whether the block-aligned ``tokens`` are held whole; if so they are marked used,
        as :meth:`insert` would (so a caller can skip copying states the cache has)."""
        length = len(tokens)
        if length == 0 or length % BLOCK_TOKENS:
            return False
        digest = _block_hashes(tokens, length // BLOCK_TOKENS)[-1]
        known = self._index.get((adapter, digest))
        if known is None or known.tokens[:length] != tuple(tokens):
            return False
        self._entries.move_to_end(id(known))
        return True

    def insert(self, adapter: str | None, tokens: list[int], states: LayerStates) -> None:
        """Remember ``states`` (per layer ``[heads, len(tokens), dim]``, not shared with any
        running cache) for the block-aligned ``tokens``."""
        length = len(tokens)
        if length == 0 or length % BLOCK_TOKENS or length > self.max_tokens:
            return
        if self.touch(adapter, tokens):
            return
        hashes = _block_hashes(tokens, length // BLOCK_TOKENS)
        for digest in hashes:  # shorter entries this one contains are dropped
            old = self._index.get((adapter, digest))
            if old is not None and tuple(tokens[: len(old.tokens)]) == old.tokens:
                self._remove(old)
        entry = _Entry(adapter, tuple(tokens), states)
        for digest in hashes:
            entry.keys.append((adapter, digest))
            self._index[(adapter, digest)] = entry
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
            if self._index.get(key) is entry:
                del self._index[key]
