"""One named index: documents, chunks, FAISS vectors and BM25, behind a read/write lock.

The methods here are synchronous and never await: callers hold ``lock.read()`` or
``lock.write()`` around them (embedding happens before the lock is taken), so every
reader sees a consistent index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kaito_ragengine.stores.bm25 import BM25Index
from kaito_ragengine.stores.rwlock import ReadWriteLock
from kaito_ragengine.stores.vectors import FaissVectors

__all__ = ["DENSE_WEIGHT", "DocumentRecord", "NodeRecord", "RagIndex", "content_hash"]

DENSE_WEIGHT = 0.7
"""Share of the cosine similarity in a result's relevance (the rest is BM25)."""
MIN_POOL = 30
"""Fewest candidates taken from each ranking, whatever ``k`` is."""


def content_hash(text: str) -> str:
    """sha256 of the UTF-8 text: KAITO's document id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class DocumentRecord:
    """A stored document and the ids of its chunks."""

    doc_id: str
    text: str
    metadata: dict[str, Any]
    hash_value: str
    node_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeRecord:
    """A chunk of a document."""

    node_id: str
    doc_id: str
    text: str


class RagIndex:
    """Documents with their chunks, searchable densely (FAISS) and lexically (BM25)."""

    def __init__(self, name: str, dim: int, vectors: FaissVectors | None = None) -> None:
        self.name = name
        self.lock = ReadWriteLock()
        self.vectors = vectors or FaissVectors.create(dim)
        self.bm25 = BM25Index()
        self.documents: dict[str, DocumentRecord] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self._by_hash: dict[str, str] = {}

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.vectors.dim

    def find(self, text_hash: str) -> DocumentRecord | None:
        """The document stored under this id or with this content hash."""
        doc_id = self._by_hash.get(text_hash, text_hash)
        return self.documents.get(doc_id)

    def stored(self, text_hash: str) -> DocumentRecord:
        """The document stored under this id or content hash (KeyError when there is none)."""
        record = self.find(text_hash)
        if record is None:
            raise KeyError(text_hash)
        return record

    def add(self, doc: DocumentRecord, chunks: list[str], embeddings: np.ndarray) -> None:
        """Store ``doc`` with one embedding row per chunk."""
        doc.node_ids = [f"{doc.doc_id}-{i}" for i in range(len(chunks))]
        self.vectors.add_embeddings(doc.node_ids, embeddings)
        for node_id, text in zip(doc.node_ids, chunks, strict=True):
            self.nodes[node_id] = NodeRecord(node_id, doc.doc_id, text)
            self.bm25.add(node_id, text)
        self.documents[doc.doc_id] = doc
        self._by_hash[doc.hash_value] = doc.doc_id

    def restore_document(self, doc: DocumentRecord, chunks: list[str]) -> None:
        """Re-register a document whose vectors are already in :attr:`vectors`."""
        for node_id, text in zip(doc.node_ids, chunks, strict=True):
            self.nodes[node_id] = NodeRecord(node_id, doc.doc_id, text)
            self.bm25.add(node_id, text)
        self.documents[doc.doc_id] = doc
        self._by_hash[doc.hash_value] = doc.doc_id

    def remove(self, doc_id: str) -> DocumentRecord | None:
        """Delete a document and its chunks; None if it is not stored."""
        doc = self.documents.pop(doc_id, None)
        if doc is None:
            return None
        self._by_hash.pop(doc.hash_value, None)
        self.vectors.delete_nodes(doc.node_ids)
        for node_id in doc.node_ids:
            self.nodes.pop(node_id, None)
            self.bm25.remove(node_id)
        return doc

    def matching_documents(
        self, metadata_filter: Mapping[str, Any] | None
    ) -> Iterator[DocumentRecord]:
        """Documents whose metadata equals every pair of the filter (all when None)."""
        for doc in self.documents.values():
            if not metadata_filter or all(
                k in doc.metadata and doc.metadata[k] == v for k, v in metadata_filter.items()
            ):
                yield doc

    def allowed_nodes(self, metadata_filter: Mapping[str, Any] | None) -> set[str] | None:
        """Node ids that pass the filter, or None for "all"."""
        if not metadata_filter:
            return None
        return {n for doc in self.matching_documents(metadata_filter) for n in doc.node_ids}

    def hybrid_search(
        self,
        query: str,
        vector: np.ndarray,
        k: int,
        metadata_filter: Mapping[str, Any] | None = None,
        *,
        dense_weight: float = DENSE_WEIGHT,
    ) -> list[dict[str, Any]]:
        """The ``k`` most relevant chunks, best first: dense and BM25 scores combined.

        Candidates are the top ``max(3 * k, MIN_POOL)`` of each ranking. Each gets the
        relevance ``dense_weight * max(cosine, 0) + (1 - dense_weight) * bm25 / best``
        (``best``: the query's highest BM25 score among the searchable chunks), a number
        in [0, 1]: the cosine part is absolute, the keyword part relative to the best
        keyword match. Results also carry the cosine and the raw BM25 score.
        """
        allowed = self.allowed_nodes(metadata_filter)
        if allowed is not None and not allowed:
            return []
        pool = max(3 * k, MIN_POOL)
        dense = self.vectors.search(vector, pool, allowed)
        sparse_all = self.bm25.scores(query, allowed)
        sparse = sparse_all.top(pool)
        dense_ids = {node_id for node_id, _ in dense}
        sparse_ids = {node_id for node_id, _ in sparse}
        candidates = list(dict.fromkeys([n for n, _ in dense] + [n for n, _ in sparse]))
        cosines = dict(zip(candidates, self.vectors.similarities(vector, candidates), strict=True))
        best = sparse[0][1] if sparse else 0.0
        sparse_weight = 1.0 - dense_weight

        def relevance(node_id: str) -> float:
            lexical = sparse_all.get(node_id) / best if best > 0 else 0.0
            return dense_weight * max(cosines[node_id], 0.0) + sparse_weight * lexical

        scored = sorted(((relevance(n), n) for n in candidates), key=lambda item: -item[0])
        results = []
        for score, node_id in scored[:k]:
            node = self.nodes[node_id]
            in_dense, in_sparse = node_id in dense_ids, node_id in sparse_ids
            results.append(
                {
                    "doc_id": node.doc_id,
                    "node_id": node_id,
                    "text": node.text,
                    "score": round(score, 6),
                    "dense_score": cosines[node_id],
                    "sparse_score": sparse_all.get(node_id),
                    "source": "both"
                    if in_dense and in_sparse
                    else ("dense_only" if in_dense else "sparse_only"),
                    "metadata": self.documents[node.doc_id].metadata,
                }
            )
        return results
