"""RagService: the indexes of one process and every operation on them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from kaito_ragengine.embeddings.base import Embedder
from kaito_ragengine.embeddings.batching import QueryBatcher
from kaito_ragengine.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    StorageError,
    UnprocessableError,
)
from kaito_ragengine.metrics import Metrics
from kaito_ragengine.protocol.documents import (
    Document,
    DocumentInput,
    ListDocumentsResponse,
    UpdateDocumentInput,
    UpdateDocumentsResponse,
)
from kaito_ragengine.settings import Settings
from kaito_ragengine.stores.chunking import Chunker
from kaito_ragengine.stores.index import DocumentRecord, RagIndex, content_hash
from kaito_ragengine.stores.snapshots import IndexSnapshot, SnapshotStore, validate_index_name
from kaito_ragengine.stores.vectors import set_faiss_threads

__all__ = ["RagService"]

log = logging.getLogger(__name__)


def _to_document(doc: DocumentRecord, max_text_length: int | None = None) -> Document:
    truncated = max_text_length is not None and len(doc.text) > max_text_length
    return Document(
        doc_id=doc.doc_id,
        text=doc.text[:max_text_length] if truncated else doc.text,
        metadata=doc.metadata,
        hash_value=doc.hash_value,
        is_truncated=truncated,
    )


class RagService:
    """Creates, fills, searches, snapshots and restores indexes.

    Embedding and chunking run before an index's write lock is taken; the lock is held
    only to splice the results in, so searches keep running during bulk indexing.
    Documents are embedded in slices of bounded size, so a query waits behind at most one
    slice. Once :meth:`begin_shutdown` is called, writes that have not been spliced in
    are refused with 503 (nothing of them is stored) and new ones are refused at once.
    """

    def __init__(self, settings: Settings, embedder: Embedder, metrics: Metrics) -> None:
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        self.indexes: dict[str, RagIndex] = {}
        self.snapshots = SnapshotStore(Path(settings.persist_dir), settings.snapshot_retention)
        self._chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
        self._queries = QueryBatcher(
            embedder,
            max_batch=settings.embedding_batch_size,
            on_batch=metrics.query_batch_size.observe,
        )
        self._persist_locks: dict[str, asyncio.Lock] = {}
        self.draining = False
        """True once the server is stopping: writes are refused (503)."""
        set_faiss_threads(settings.faiss_threads)

    def begin_shutdown(self) -> None:
        """Refuse every write not yet applied (called from the SIGTERM handler)."""
        self.draining = True

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise ServiceUnavailableError(
                "the server is shutting down: this request was not applied (nothing of it "
                "was stored); retry it after the restart or on another replica"
            )

    def get(self, name: str) -> RagIndex:
        """The index called ``name`` (404 if there is none)."""
        validate_index_name(name)
        index = self.indexes.get(name)
        if index is None:
            raise NotFoundError(f"index {name!r} not found")
        return index

    def _check_limits(self, texts: list[str]) -> None:
        if len(texts) > self.settings.max_documents_per_request:
            raise PayloadTooLargeError(
                f"documents: {len(texts)} documents is over the limit of "
                f"{self.settings.max_documents_per_request} per request"
            )
        for i, text in enumerate(texts):
            if len(text) > self.settings.max_document_chars:
                raise UnprocessableError(
                    f"documents[{i}].text: {len(text)} characters is over the limit of "
                    f"{self.settings.max_document_chars}"
                )

    async def _embed_documents(
        self, items: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[list[str], np.ndarray]]:
        chunked = await asyncio.to_thread(
            lambda: [self._chunker.split(text, meta) for text, meta in items]
        )
        flat = [chunk for chunks in chunked for chunk in chunks]
        started = time.perf_counter()
        matrix = await self._embed_in_slices(flat)
        elapsed = time.perf_counter() - started
        self.metrics.embedding_seconds.labels("document").observe(elapsed)
        self.metrics.embedded_texts.labels("document").inc(len(flat))
        if len(flat) >= 100:
            log.info(
                "embedded %d chunks in %.1fs (%.0f chunks/s)",
                len(flat),
                elapsed,
                len(flat) / max(elapsed, 1e-9),
            )
        result, row = [], 0
        for chunks in chunked:
            result.append((chunks, matrix[row : row + len(chunks)]))
            row += len(chunks)
        return result

    async def _embed_in_slices(self, texts: list[str]) -> np.ndarray:
        """Embed longest first, in slices of at most ``embedding_batch_size`` texts and
        ``embedding_batch_chars`` characters, checking for shutdown before each slice."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        parts: list[np.ndarray] = []
        start = 0
        while start < len(order):
            self._refuse_if_draining()
            end, chars = start + 1, len(texts[order[start]])
            while (
                end < len(order)
                and end - start < self.settings.embedding_batch_size
                and chars + len(texts[order[end]]) <= self.settings.embedding_batch_chars
            ):
                chars += len(texts[order[end]])
                end += 1
            parts.append(await self.embedder.embed([texts[i] for i in order[start:end]]))
            start = end
        matrix = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        matrix[order] = np.vstack(parts)
        return matrix

    def _index_for_write(self, name: str, dim: int) -> RagIndex:
        index = self.indexes.get(name)
        if index is None:
            index = self.indexes[name] = RagIndex(name, dim)
        if index.dim != dim:
            raise UnprocessableError(
                f"index {name!r} holds {index.dim}-d vectors, the embedder gives {dim}-d"
            )
        return index

    async def add_documents(self, name: str, documents: list[DocumentInput]) -> list[Document]:
        """Index new texts (creating the index); texts already stored are skipped."""
        validate_index_name(name)
        self._refuse_if_draining()
        self._check_limits([d.text for d in documents])
        existing = self.indexes.get(name)
        todo: dict[str, DocumentInput] = {}
        for doc in documents:
            text_hash = content_hash(doc.text)
            if text_hash not in todo and (existing is None or existing.find(text_hash) is None):
                todo[text_hash] = doc
        embedded = await self._embed_documents([(d.text, d.metadata) for d in todo.values()])
        dim = next((m.shape[1] for _, m in embedded if m.size), 0)
        while True:
            index = self._index_for_write(name, dim) if dim else self.get(name)
            async with index.lock.write():
                self._refuse_if_draining()
                if self.indexes.get(name) is not index:
                    continue  # deleted or replaced meanwhile: splice into the live one
                for (text_hash, doc), (chunks, matrix) in zip(todo.items(), embedded, strict=True):
                    if index.find(text_hash) is None:
                        record = DocumentRecord(text_hash, doc.text, dict(doc.metadata), text_hash)
                        index.add(record, chunks, matrix)
                self.metrics.documents.labels(name).set(len(index.documents))
                return [_to_document(index.stored(content_hash(d.text))) for d in documents]

    async def update_documents(
        self, name: str, updates: list[UpdateDocumentInput]
    ) -> UpdateDocumentsResponse:
        """Replace text and metadata of documents by id, keeping their ids."""
        index = self.get(name)
        self._refuse_if_draining()
        self._check_limits([u.text for u in updates])
        changed: list[UpdateDocumentInput] = []
        unchanged: list[Document] = []
        not_found: list[UpdateDocumentInput] = []
        for update in updates:
            doc = index.documents.get(update.doc_id)
            if doc is None:
                not_found.append(update)
            elif doc.text == update.text and doc.metadata == update.metadata:
                unchanged.append(_to_document(doc))
            else:
                changed.append(update)
        embedded = await self._embed_documents([(u.text, u.metadata) for u in changed])
        updated: list[Document] = []
        async with index.lock.write():
            self._refuse_if_draining()
            for update, (chunks, matrix) in zip(changed, embedded, strict=True):
                if index.remove(update.doc_id) is None:
                    not_found.append(update)
                    continue
                record = DocumentRecord(
                    update.doc_id, update.text, dict(update.metadata), content_hash(update.text)
                )
                index.add(record, chunks, matrix)
                updated.append(_to_document(record))
        return UpdateDocumentsResponse(
            updated_documents=updated, unchanged_documents=unchanged, not_found_documents=not_found
        )

    async def delete_documents(self, name: str, doc_ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete documents by id: (deleted ids, ids not found)."""
        index = self.get(name)
        deleted: list[str] = []
        missing: list[str] = []
        self._refuse_if_draining()
        async with index.lock.write():
            self._refuse_if_draining()
            for doc_id in doc_ids:
                (deleted if index.remove(doc_id) is not None else missing).append(doc_id)
            self.metrics.documents.labels(name).set(len(index.documents))
        return deleted, missing

    async def list_documents(
        self,
        name: str,
        *,
        limit: int,
        offset: int,
        max_text_length: int,
        metadata_filter: dict[str, Any] | None,
    ) -> ListDocumentsResponse:
        """One page of documents in insertion order."""
        index = self.get(name)
        async with index.lock.read():
            matching = list(index.matching_documents(metadata_filter))
        page = [_to_document(d, max_text_length) for d in matching[offset : offset + limit]]
        return ListDocumentsResponse(documents=page, count=len(page), total_items=len(matching))

    async def delete_index(self, name: str) -> None:
        """Forget an index; its snapshots stay on disk but are not restored on start."""
        index = self.get(name)
        self._refuse_if_draining()
        location = self.snapshots.location(name)
        persist_lock = self._persist_locks.setdefault(str(location), asyncio.Lock())
        async with persist_lock, index.lock.write():
            self._refuse_if_draining()
            if self.indexes.get(name) is not index:
                raise NotFoundError(f"index {name!r} not found")
            try:
                await asyncio.to_thread(self.snapshots.mark_deleted, name)
            except OSError as exc:
                message = f"could not record the deletion under {location}: {exc}"
                raise StorageError(message) from exc
            self.indexes.pop(name, None)
        with contextlib.suppress(KeyError):
            self.metrics.documents.remove(name)

    async def retrieve(
        self, name: str, query: str, k: int, metadata_filter: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Hybrid search: the ``k`` best chunks, best first (see ``RagIndex.hybrid_search``)."""
        if k > self.settings.max_top_k:
            raise UnprocessableError(
                f"max_node_count: {k} is over the limit of {self.settings.max_top_k}"
            )
        index = self.get(name)
        started = time.perf_counter()
        vector = await self._queries.embed(query)
        self.metrics.embedding_seconds.labels("query").observe(time.perf_counter() - started)
        self.metrics.embedded_texts.labels("query").inc()
        async with index.lock.read():
            results = index.hybrid_search(
                query, vector, k, metadata_filter, dense_weight=self.settings.dense_weight
            )
        if results:
            self.metrics.retrieve_top_score.observe(max(r["dense_score"] for r in results))
        return results

    async def persist(self, name: str, path: str | None = None) -> Path:
        """Snapshot one index atomically; returns the snapshot directory."""
        index = self.get(name)
        location = self.snapshots.location(name, path)
        place = location.relative_to(self.snapshots.root.resolve()).parts[0]
        if place != name and place in self.indexes:
            raise ConflictError(
                f"path: {path!r} is inside the snapshot directory of index {place!r}; "
                f"choose another path for {name!r}"
            )
        async with self._persist_locks.setdefault(str(location), asyncio.Lock()):
            if self.indexes.get(name) is not index:
                raise NotFoundError(f"index {name!r} not found")
            async with index.lock.read():  # writers wait; the copy runs off the event loop
                snapshot = await asyncio.to_thread(
                    IndexSnapshot.capture, index, self.embedder.model_id
                )
            try:
                final = await asyncio.to_thread(self.snapshots.write, location, snapshot)
            except OSError as exc:
                self.metrics.snapshots.labels("persist", "error").inc()
                raise StorageError(f"could not write a snapshot under {location}: {exc}") from exc
        self.metrics.snapshots.labels("persist", "ok").inc()
        log.info("persisted index %s (%d documents) to %s", name, len(snapshot.documents), final)
        return final

    async def load(self, name: str, path: str | None = None, *, overwrite: bool = False) -> int:
        """Replace or create ``name`` from its newest complete snapshot; returns its size."""
        self._refuse_if_draining()
        location = self.snapshots.location(name, path)
        if name in self.indexes and not overwrite:
            raise ConflictError(f"index {name!r} already exists; pass overwrite=true to replace it")
        if not location.is_dir():
            raise NotFoundError(f"no snapshot directory at {location}")
        snapshot = await asyncio.to_thread(
            self.snapshots.read_latest, location, embedding_model_id=self.embedder.model_id
        )
        if path is None and snapshot.name != name:
            raise ConflictError(
                f"{location} holds snapshots of index {snapshot.name!r}, not of {name!r}"
            )
        index = await asyncio.to_thread(snapshot.build, name)
        self._refuse_if_draining()
        if name in self.indexes and not overwrite:
            raise ConflictError(f"index {name!r} already exists; pass overwrite=true to replace it")
        await asyncio.to_thread(self.snapshots.unmark_deleted, name)
        self.indexes[name] = index
        self.metrics.documents.labels(name).set(len(index.documents))
        self.metrics.snapshots.labels("restore", "ok").inc()
        return len(index.documents)

    async def restore_all(self) -> None:
        """Load every index that has a snapshot under the persistence root."""
        for name in await asyncio.to_thread(self.snapshots.discover):
            try:
                count = await self.load(name, overwrite=True)
            except Exception:
                self.metrics.snapshots.labels("restore", "error").inc()
                log.exception("could not restore index %s", name)
            else:
                log.info("restored index %s (%d documents)", name, count)

    async def persist_all(self) -> None:
        """Snapshot every index (on shutdown); failures are logged, not raised."""
        for name in list(self.indexes):
            try:
                await self.persist(name)
            except Exception:
                log.exception("could not persist index %s", name)
