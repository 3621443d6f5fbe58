"""Incremental detokenisation with stop strings, shared by every token-level engine."""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalText"]


class IncrementalText:
    """Turns a growing list of token ids into text deltas, stopping at any stop string.

    Text that might be the start of a stop string, or an incomplete UTF-8 character, is
    held back until the next token decides it, so a stop string never leaks into the
    output, even split across tokens.
    """

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stops = stops
        self._ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to send (maybe empty)."""
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        for stop in self._stops:
            at = text.find(stop, max(0, self._emitted - len(stop)))
            if at != -1:
                self.stopped = True
                return self._take(text, at)
        return self._take(text, len(text) - self._held_back(text))

    def flush(self) -> str:
        """The held-back text once generation ended without a stop string."""
        if self.stopped:
            return ""
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        return self._take(text, len(text))

    def _take(self, text: str, end: int) -> str:
        delta = text[self._emitted : max(end, self._emitted)]
        self._emitted = max(end, self._emitted)
        return delta

    def _held_back(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
