"""Crash-safe snapshots of indexes under one persistence root.

Layout: ``<root>/<index>/snapshots/<UTC timestamp>/{vectors.faiss,state.json,manifest.json}``.
Each snapshot directory (``<root>/<index>`` or a custom ``path``) holds an ``owner`` file
naming the one index allowed to write there; ``<root>/<index>/deleted`` marks an index
that was deleted, so that restore-on-start skips it.
A snapshot is written into ``<root>/<index>/.tmp-<random>/``, every file and the
directory are fsynced, and the directory is renamed into ``snapshots/`` (then the parent
is fsynced): a process killed at any point leaves either the old set of snapshots or the
old set plus one complete new one. ``manifest.json`` records the sha256 of each file;
loading skips snapshots that fail the check and falls back to the next newest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kaito_ragengine.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnprocessableError,
)
from kaito_ragengine.protocol.documents import INDEX_NAME_PATTERN
from kaito_ragengine.stores.index import DocumentRecord, RagIndex
from kaito_ragengine.stores.vectors import FaissVectors

__all__ = ["SNAPSHOT_FORMAT", "IndexSnapshot", "SnapshotStore", "validate_index_name"]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
_MAX_PATH, _MAX_PART = 1024, 255
_NAME = re.compile(INDEX_NAME_PATTERN)
_SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{12}Z_*$")
_VECTORS, _STATE, _MANIFEST, _SNAPSHOTS, _OWNER, _DELETED = (
    "vectors.faiss",
    "state.json",
    "manifest.json",
    "snapshots",
    "owner",
    "deleted",
)


def _is_control(char: str) -> bool:
    """C0 and C1 control characters and DEL."""
    code = ord(char)
    return code < 32 or 127 <= code < 160


def validate_index_name(name: str) -> str:
    """Return ``name`` if it is a safe index name, else raise a 422 naming the rule."""
    if not _NAME.fullmatch(name):
        raise UnprocessableError(
            f"index_name {name[:64]!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', '..', spaces or control characters)"
        )
    return name


@dataclass(frozen=True)
class IndexSnapshot:
    """An index captured in memory (taken under its read lock, written without it)."""

    name: str
    embedding_model_id: str
    dim: int
    vectors: bytes
    id_map: dict[str, int]
    documents: list[dict[str, Any]]

    @classmethod
    def capture(cls, index: RagIndex, embedding_model_id: str) -> IndexSnapshot:
        """Copy everything needed to rebuild ``index``."""
        documents = [
            {
                "doc_id": doc.doc_id,
                "text": doc.text,
                "metadata": dict(doc.metadata),
                "hash_value": doc.hash_value,
                "node_ids": list(doc.node_ids),
                "chunks": [index.nodes[n].text for n in doc.node_ids],
            }
            for doc in index.documents.values()
        ]
        return cls(
            name=index.name,
            embedding_model_id=embedding_model_id,
            dim=index.dim,
            vectors=index.vectors.to_bytes(),
            id_map=index.vectors.id_map(),
            documents=documents,
        )

    def build(self, name: str) -> RagIndex:
        """A live index named ``name`` with this snapshot's content."""
        index = RagIndex(name, self.dim, FaissVectors.from_bytes(self.vectors, self.id_map))
        for item in self.documents:
            fields = {k: v for k, v in item.items() if k != "chunks"}
            index.restore_document(DocumentRecord(**fields), item["chunks"])
        return index


def _write(path: Path, data: bytes) -> str:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """Writes, prunes, lists and reads snapshots below ``root``."""

    def __init__(self, root: Path, retention: int) -> None:
        self.root = root
        self.retention = retention

    def location(self, name: str, path: str | None = None) -> Path:
        """Where snapshots of ``name`` live: ``root/name`` or ``path``, inside root only."""
        validate_index_name(name)
        root = self.root.resolve()
        if path is None:
            return root / name
        candidate = Path(path)
        if (
            len(path) > _MAX_PATH
            or any(len(part.encode()) > _MAX_PART for part in candidate.parts)
            or any(_is_control(c) for c in path)
        ):
            raise InvalidRequestError(
                f"path must be at most {_MAX_PATH} characters, {_MAX_PART} bytes per component, "
                "without control characters (C0, DEL or C1)"
            )
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise InvalidRequestError(
                f"path {path!r} must be a directory inside the persistence root {root}"
            )
        for place in (resolved, *resolved.parents):
            if place == root:
                break
            if place.exists() and not place.is_dir():
                raise InvalidRequestError(f"path {path!r}: {place} is a file, not a directory")
        return resolved

    def owner(self, location: Path) -> str | None:
        """The index whose snapshots ``location`` holds (None if it holds none)."""
        try:
            return (location / _OWNER).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            return None
        for snapshot_dir in self.snapshots_of(location):  # written before owner files existed
            try:
                return str(json.loads((snapshot_dir / _STATE).read_bytes())["name"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def check_owner(self, location: Path, name: str) -> None:
        """409 unless ``location`` may hold snapshots of ``name``.

        A snapshot directory belongs to one index: no directory at or above ``location``
        (below the root) and none below it may hold another index's snapshots.
        """
        root = self.root.resolve()
        places = [location, *(p for p in location.parents if p != root and p.is_relative_to(root))]
        if location.is_dir():
            places += [marker.parent for marker in location.rglob(_OWNER)]
        for place in places:
            other = self.owner(place)
            if other is not None and other != name:
                raise ConflictError(
                    f"path: {place} holds snapshots of index {other!r}; a snapshot directory "
                    f"belongs to one index, choose another path for {name!r}"
                )

    def _claim(self, location: Path, name: str) -> None:
        """Write ``location/owner`` = ``name`` unless it exists: the complete file appears
        at once (written to a temporary name, fsynced, then hard-linked, which fails if
        another writer linked first), so a killed process never leaves a partial owner."""
        self.check_owner(location, name)
        if (location / _OWNER).exists():
            return
        tmp = location / f".tmp-owner-{uuid.uuid4().hex}"
        _write(tmp, name.encode())
        try:
            os.link(tmp, location / _OWNER)
        except FileExistsError:
            self.check_owner(location, name)  # another writer claimed it meanwhile
        finally:
            tmp.unlink()
        _fsync_dir(location)

    def mark_deleted(self, name: str) -> None:
        """Record that ``name`` was deleted, so that :meth:`discover` skips it."""
        location = self.root.resolve() / name
        if self.snapshots_of(location) and not (location / _DELETED).exists():
            _write(location / _DELETED, b"")
            _fsync_dir(location)

    def unmark_deleted(self, name: str) -> None:
        """Undo :meth:`mark_deleted` (the index is live again)."""
        location = self.root.resolve() / name
        if (location / _DELETED).exists():
            (location / _DELETED).unlink()
            _fsync_dir(location)

    def write(self, location: Path, snapshot: IndexSnapshot) -> Path:
        """Write ``snapshot`` atomically under ``location`` and prune old ones.

        Raises 409 if ``location`` belongs to another index (see :meth:`check_owner`).
        """
        location.mkdir(parents=True, exist_ok=True)
        self._claim(location, snapshot.name)
        for stale in location.glob(".tmp-*"):  # left by a killed writer
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        tmp = location / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        state = {
            "format": SNAPSHOT_FORMAT,
            "name": snapshot.name,
            "embedding_model_id": snapshot.embedding_model_id,
            "dim": snapshot.dim,
            "id_map": snapshot.id_map,
            "documents": snapshot.documents,
        }
        files = {
            _VECTORS: _write(tmp / _VECTORS, snapshot.vectors),
            _STATE: _write(tmp / _STATE, json.dumps(state).encode()),
        }
        created = datetime.now(UTC)
        manifest = {"format": SNAPSHOT_FORMAT, "created": created.isoformat(), "files": files}
        _write(tmp / _MANIFEST, json.dumps(manifest).encode())
        _fsync_dir(tmp)
        snapshots = location / _SNAPSHOTS
        snapshots.mkdir(exist_ok=True)
        final = snapshots / created.strftime("%Y%m%dT%H%M%S%fZ")
        while final.exists():
            final = final.with_name(final.name + "_")
        tmp.rename(final)
        _fsync_dir(snapshots)
        for old in self.snapshots_of(location)[self.retention :]:
            shutil.rmtree(old, ignore_errors=True)
        if location == self.root.resolve() / snapshot.name:
            self.unmark_deleted(snapshot.name)
        return final

    def snapshots_of(self, location: Path) -> list[Path]:
        """Complete snapshot directories (named by their UTC time), newest first.

        Other directories there (say, a custom ``path`` that points inside ``snapshots/``)
        are neither listed nor counted against the retention, nor pruned.
        """
        snapshots = location / _SNAPSHOTS
        if not snapshots.is_dir():
            return []
        return sorted(
            (p for p in snapshots.iterdir() if p.is_dir() and _SNAPSHOT_NAME.match(p.name)),
            key=lambda p: p.name,
            reverse=True,
        )

    def read(self, snapshot_dir: Path) -> IndexSnapshot:
        """Read and verify one snapshot directory."""
        manifest = json.loads((snapshot_dir / _MANIFEST).read_bytes())
        blobs = {name: (snapshot_dir / name).read_bytes() for name in (_VECTORS, _STATE)}
        for name, blob in blobs.items():
            if hashlib.sha256(blob).hexdigest() != manifest["files"][name]:
                raise ValueError(f"{snapshot_dir / name} does not match its checksum")
        state = json.loads(blobs[_STATE])
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {state.get('format')!r}")
        return IndexSnapshot(
            name=state["name"],
            embedding_model_id=state["embedding_model_id"],
            dim=int(state["dim"]),
            vectors=blobs[_VECTORS],
            id_map={k: int(v) for k, v in state["id_map"].items()},
            documents=state["documents"],
        )

    def read_latest(self, location: Path, *, embedding_model_id: str) -> IndexSnapshot:
        """The newest snapshot under ``location`` that verifies and fits the embedder."""
        candidates = self.snapshots_of(location)
        if not candidates:
            raise NotFoundError(f"no snapshot found at {location}")
        for snapshot_dir in candidates:
            try:
                snapshot = self.read(snapshot_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("skipping unreadable snapshot %s: %s", snapshot_dir, exc)
                continue
            if snapshot.embedding_model_id != embedding_model_id:
                raise UnprocessableError(
                    f"snapshot {snapshot_dir.name} was embedded with "
                    f"{snapshot.embedding_model_id!r}, "
                    f"but this service embeds with {embedding_model_id!r}"
                )
            return snapshot
        raise NotFoundError(f"no readable snapshot found at {location}")

    def discover(self) -> list[str]:
        """Index names that have at least one snapshot under the root and were not deleted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _NAME.fullmatch(p.name) and self.snapshots_of(p) and not (p / _DELETED).exists()
        )
