"""Split documents into chunks: LlamaIndex's sentence splitter, or a code splitter.

A document whose metadata has ``split_type: "code"`` and a ``language`` is split with
LlamaIndex's tree-sitter ``CodeSplitter`` when the grammar is available (the optional
``tree-sitter-language-pack`` dependency); otherwise, and for unknown languages, with a
line-based splitter that cuts at blank lines where it can.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["Chunker", "split_lines"]

log = logging.getLogger(__name__)

CODE_CHUNK_LINES = 40
CODE_MAX_CHARS = 1500


def split_lines(
    text: str, *, max_lines: int = CODE_CHUNK_LINES, max_chars: int = CODE_MAX_CHARS
) -> list[str]:
    """Cut ``text`` into chunks of whole lines, preferring to end a chunk at a blank line."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines():
        if current and (len(current) >= max_lines or size + len(line) > max_chars):
            cut = max((i for i, old in enumerate(current) if not old.strip()), default=0)
            if cut <= len(current) // 2:
                cut = len(current)
            chunks.append("\n".join(current[:cut]).strip("\n"))
            current = current[cut:]
            size = sum(len(old) + 1 for old in current)
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current).strip("\n"))
    return [chunk for chunk in chunks if chunk.strip()] or [text]


@lru_cache(maxsize=32)
def _code_splitter(language: str) -> Any | None:
    try:
        from llama_index.core.node_parser import CodeSplitter  # noqa: PLC0415

        return CodeSplitter(
            language=language, chunk_lines=CODE_CHUNK_LINES, max_chars=CODE_MAX_CHARS
        )
    except Exception as exc:
        log.warning("no tree-sitter grammar for %r (%s); using the line splitter", language, exc)
        return None


class Chunker:
    """Turns a document text into chunk texts according to its metadata."""

    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        from llama_index.core.node_parser import SentenceSplitter  # noqa: PLC0415

        self._sentences = SentenceSplitter(
            chunk_size=chunk_size, chunk_overlap=min(chunk_overlap, chunk_size // 2)
        )

    def split(self, text: str, metadata: Mapping[str, Any]) -> list[str]:
        """The chunks of one document (never empty)."""
        if metadata.get("split_type") == "code":
            language = str(metadata.get("language") or "").lower()
            splitter = _code_splitter(language) if language else None
            if splitter is not None:
                try:
                    chunks = [c for c in splitter.split_text(text) if c.strip()]
                except Exception as exc:
                    log.warning("code splitter failed for %r (%s); using lines", language, exc)
                else:
                    return chunks or [text]
            return split_lines(text)
        return [c for c in self._sentences.split_text(text) if c.strip()] or [text]
