"""Units: BM25, chunking, the FAISS store and the read/write lock."""

from __future__ import annotations

import asyncio
import importlib.util
import math

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
    bm25.add("c", "foxes and cats are animals")
    assert tokenize("The Dog's bowls") == ["dog", "s", "bowl"]
    assert [key for key, _ in bm25.scores("dog").top(5)] == ["b"]
    assert bm25.scores("dog").get("a") == 0.0
    assert bm25.scores("dog").get("unknown") == 0.0
    assert bm25.scores("quick fox").top(1)[0][0] == "a"
    assert [key for key, _ in bm25.scores("cat").top(5)] == ["c"]  # plural stemmed
    bm25.remove("b")
    assert bm25.scores("dog").top(5) == []
    assert len(bm25) == 2
    bm25.add("a", "dog dog dog")  # re-adding replaces
    assert [key for key, _ in bm25.scores("dog").top(5)] == ["a"]
    assert bm25.scores("fox").top(5) == []
    assert bm25.scores("animals", allowed={"a"}).top(5) == []
    assert bm25.scores("animals", allowed={"c"}).top(5)[0][0] == "c"


def test_bm25_matches_the_okapi_formula() -> None:
    texts = {f"k{i}": f"alpha beta {'gamma ' * (i % 3)}delta{i}" for i in range(10)}
    bm25 = BM25Index()
    for key, text in texts.items():
        bm25.add(key, text)
    bm25.add("gone", "gamma gamma gamma")
    bm25.remove("gone")
    docs = {key: tokenize(text) for key, text in texts.items()}
    avg = sum(map(len, docs.values())) / len(docs)
    df = sum("gamma" in tokens for tokens in docs.values())
    idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    scores = bm25.scores("gamma")
    for key, tokens in docs.items():
        tf = tokens.count("gamma")
        expected = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(tokens) / avg)) if tf else 0.0
        assert scores.get(key) == pytest.approx(expected, rel=1e-5)
    ranked = scores.top(3)
    assert [score for _, score in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert len(scores) == df


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
