"""Units: BM25, chunking, the FAISS store and the read/write lock."""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest

from kaito_ragengine.stores.bm25 import BM25Index, tokenize
from kaito_ragengine.stores.chunking import Chunker, split_lines
from kaito_ragengine.stores.rwlock import ReadWriteLock
from kaito_ragengine.stores.vectors import FaissVectors


def test_bm25_ranks_and_updates_incrementally() -> None:
    bm25 = BM25Index()
    bm25.add("a", "the quick brown fox jumps")
    bm25.add("b", "a lazy dog sleeps all day, the dog snores")
    bm25.add("c", "foxes and dogs are animals")
    assert tokenize("The Dog's bowl") == ["dog", "s", "bowl"]
    scores = bm25.scores("dog")
    assert set(scores) == {"b"}
    assert BM25Index.top(bm25.scores("quick fox"), 1) == [
        ("a", pytest.approx(scores_of(bm25, "quick fox", "a")))
    ]
    bm25.remove("b")
    assert bm25.scores("dog") == {}
    assert len(bm25) == 2
    bm25.add("a", "dog dog dog")  # re-adding replaces
    assert set(bm25.scores("dog")) == {"a"}
    assert bm25.scores("fox") == {}
    assert set(bm25.scores("animals", allowed={"a"})) == set()


def scores_of(bm25: BM25Index, query: str, key: str) -> float:
    return bm25.scores(query)[key]


def test_sentence_chunks_respect_the_size() -> None:
    chunker = Chunker(chunk_size=64, chunk_overlap=8)
    text = " ".join(f"Sentence number {i} says something." for i in range(100))
    chunks = chunker.split(text, {})
    assert len(chunks) > 5
    assert all(len(c.split()) < 80 for c in chunks)
    assert chunker.split("short text", {}) == ["short text"]


CODE = "\n".join(
    f"def function_{i}(x):\n    value = x + {i}\n    return value * 2\n\n" for i in range(60)
)


@pytest.mark.skipif(
    importlib.util.find_spec("tree_sitter_language_pack") is None,
    reason="tree-sitter grammars not installed",
)
def test_code_documents_use_the_tree_sitter_splitter() -> None:
    chunks = Chunker(256, 32).split(CODE, {"split_type": "code", "language": "python"})
    assert len(chunks) > 1
    assert all(c.lstrip().startswith("def function_") for c in chunks)


def test_code_without_a_grammar_falls_back_to_lines() -> None:
    chunks = Chunker(256, 32).split(CODE, {"split_type": "code", "language": "no-such-language"})
    assert chunks == split_lines(CODE)
    assert len(chunks) > 1
    assert "".join(c.replace("\n", "") for c in chunks) == CODE.replace("\n", "")
    assert all(c.startswith("def function_") for c in chunks)  # cut at blank lines


def test_faiss_store_ids_never_repeat_and_filters_work() -> None:
    store = FaissVectors.create(4)
    eye = np.eye(4, dtype=np.float32)
    store.add_embeddings(["a", "b", "c"], eye[:3])
    store.delete_nodes(["a"])
    store.add_embeddings(["d"], eye[3:])  # upstream would reuse id 2 here (ntotal)
    assert store.search(eye[2], 1) == [("c", pytest.approx(1.0))]
    assert store.search(eye[3], 1) == [("d", pytest.approx(1.0))]
    assert [n for n, _ in store.search(eye[2], 3, {"b", "d"})] in (["b", "d"], ["d", "b"])
    assert store.search(eye[2], 3, {"zzz"}) == []
    assert store.similarities(eye[1], ["b", "c"]) == pytest.approx([1.0, 0.0])
    copy = FaissVectors.from_bytes(store.to_bytes(), store.id_map())
    copy.add_embeddings(["e"], eye[:1])
    assert {n for n, _ in copy.search(eye[0], 5)} == {"b", "c", "d", "e"}


@pytest.mark.asyncio
async def test_rwlock_excludes_writers_from_readers() -> None:
    lock = ReadWriteLock()
    events: list[str] = []

    async def read(tag: str) -> None:
        async with lock.read():
            events.append(f"{tag}+")
            await asyncio.sleep(0.01)
            events.append(f"{tag}-")

    async def write() -> None:
        async with lock.write():
            events.append("w+")
            await asyncio.sleep(0.01)
            events.append("w-")

    await asyncio.gather(read("r1"), read("r2"), write(), read("r3"))
    w = events.index("w+")
    assert events[w + 1] == "w-"  # nobody inside while the writer is
    assert {"r1+", "r2+"} <= set(events[:w])  # readers share
