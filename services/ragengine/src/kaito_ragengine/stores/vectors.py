"""Dense vectors in FAISS through LlamaIndex's ``FaissMapVectorStore``.

Upstream's map store numbers new vectors with ``ntotal``, which repeats ids after a
delete, adds one vector per call and cannot filter. This subclass keeps a monotonic id
counter, adds in batches and restricts searches with a FAISS ``IDSelectorBatch``. The
index is ``IndexIDMap2(IndexFlatIP)`` over L2-normalised embeddings, so a search score
is the cosine similarity: higher is more similar.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

import faiss
import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryResult
from llama_index.vector_stores.faiss import FaissMapVectorStore

__all__ = ["FaissVectors", "set_faiss_threads"]


def set_faiss_threads(threads: int) -> None:
    """Set FAISS's OpenMP threads (process-wide; torch has its own runtime).

    One query against a flat index is a single memory-bound scan: on a busy 2-core
    machine OpenMP's spinning workers made it take about 20 ms instead of 0.3 ms.
    """
    faiss.omp_set_num_threads(threads)


class FaissVectors(FaissMapVectorStore):
    """Cosine-similarity FAISS store keyed by node id, with deletes and filtered search."""

    _next_id: int = PrivateAttr(default=0)

    @classmethod
    def create(cls, dim: int) -> FaissVectors:
        """An empty store for ``dim``-dimensional embeddings."""
        return cls(faiss_index=faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self._faiss_index.d)

    def __len__(self) -> int:
        return int(self._faiss_index.ntotal)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add LlamaIndex nodes that carry embeddings."""
        matrix = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        self.add_embeddings([node.node_id for node in nodes], matrix)
        return [node.node_id for node in nodes]

    def add_embeddings(self, node_ids: list[str], matrix: np.ndarray) -> None:
        """Add one row of ``matrix`` per node id (rows must be L2-normalised)."""
        if not node_ids:
            return
        ids = np.arange(self._next_id, self._next_id + len(node_ids), dtype=np.int64)
        self._next_id += len(node_ids)
        self._faiss_index.add_with_ids(np.ascontiguousarray(matrix, dtype=np.float32), ids)
        for node_id, faiss_id in zip(node_ids, ids.tolist(), strict=True):
            self._node_id_to_faiss_id_map[node_id] = faiss_id
            self._faiss_id_to_node_id_map[faiss_id] = node_id

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes, restricted to ``query.node_ids`` when given."""
        if query.filters is not None:
            raise ValueError("metadata filters are resolved to node_ids by the caller")
        vector = np.asarray(query.query_embedding, dtype=np.float32)
        hits = self.search(vector, query.similarity_top_k, query.node_ids)
        return VectorStoreQueryResult(
            ids=[node_id for node_id, _ in hits], similarities=[score for _, score in hits]
        )

    def search(
        self, vector: np.ndarray, k: int, node_ids: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """(node id, cosine similarity) pairs, best first."""
        if not len(self) or k <= 0:
            return []
        params = None
        if node_ids is not None:
            wanted = [
                self._node_id_to_faiss_id_map[n]
                for n in node_ids
                if n in self._node_id_to_faiss_id_map
            ]
            if not wanted:
                return []
            selector = faiss.IDSelectorBatch(np.asarray(wanted, dtype=np.int64))
            params = faiss.SearchParameters()
            params.sel = selector  # ``selector`` (a local) outlives the search below
        scores, ids = self._faiss_index.search(
            vector.reshape(1, -1).astype(np.float32, copy=False), min(k, len(self)), params=params
        )
        to_node = self._faiss_id_to_node_id_map  # one pydantic private-attribute lookup
        return [
            (to_node[i], s)
            for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True)
            if i >= 0
        ]

    def similarities(self, vector: np.ndarray, node_ids: list[str]) -> list[float]:
        """Cosine similarity of ``vector`` with each stored node."""
        if not node_ids:
            return []
        faiss_ids = self._node_id_to_faiss_id_map
        index = self._faiss_index
        rows = np.vstack([index.reconstruct(faiss_ids[n]) for n in node_ids])
        return cast(list[float], (rows @ vector.astype(np.float32)).tolist())

    def to_bytes(self) -> bytes:
        """The FAISS index serialised (ids included); pair it with :meth:`id_map`."""
        return bytes(faiss.serialize_index(self._faiss_index))

    def id_map(self) -> dict[str, int]:
        """node id -> FAISS id."""
        return dict(self._node_id_to_faiss_id_map)

    @classmethod
    def from_bytes(cls, data: bytes, id_map: dict[str, int]) -> FaissVectors:
        """Rebuild a store from :meth:`to_bytes` and :meth:`id_map`."""
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        store = cls(faiss_index=index)
        store._node_id_to_faiss_id_map = dict(id_map)
        store._faiss_id_to_node_id_map = {v: k for k, v in id_map.items()}
        store._next_id = max(id_map.values(), default=-1) + 1
        if len(store) != len(id_map):
            raise ValueError(f"FAISS holds {len(store)} vectors but the id map {len(id_map)}")
        return store
