"""``POST /retrieve`` wire models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kaito_ragengine.protocol.documents import IndexName, Metadata, MetadataValue

__all__ = ["RetrieveRequest", "RetrieveResponse", "RetrievedNode"]


class RetrieveRequest(BaseModel):
    """Hybrid (dense + BM25) retrieval from one index."""

    model_config = ConfigDict(extra="forbid")

    index_name: IndexName
    """The index to search."""
    query: str = Field(min_length=1)
    """The query text."""
    max_node_count: int = Field(default=5, ge=1)
    """How many chunks to return (at most the server's ``max_top_k``, 300 by default)."""
    metadata_filter: Metadata | None = None
    """Only chunks whose document metadata equals every given key/value pair."""


class RetrievedNode(BaseModel):
    """One retrieved chunk. Every score is "higher is more similar"."""

    doc_id: str
    """The document the chunk belongs to."""
    node_id: str
    """The chunk id (``<doc_id>-<n>``)."""
    text: str
    """The chunk text."""
    score: float
    """Relevance in [0, 1] (results sort by it): ``DENSE_WEIGHT`` (0.7) x the cosine
    similarity (negative counts as 0) + the rest x the BM25 score relative to the query's
    best keyword match."""
    dense_score: float | None
    """Cosine similarity of query and chunk embeddings, in [-1, 1]."""
    sparse_score: float | None
    """BM25 score of the chunk for the query (0 when no query term occurs in it)."""
    source: Literal["both", "dense_only", "sparse_only"]
    """Which ranking(s) put the chunk into the candidate pool."""
    metadata: dict[str, MetadataValue]
    """The document's metadata."""


class RetrieveResponse(BaseModel):
    """The ranked chunks."""

    query: str
    """The query as sent."""
    results: list[RetrievedNode]
    """Chunks, best first."""
    count: int
    """Number of results."""
