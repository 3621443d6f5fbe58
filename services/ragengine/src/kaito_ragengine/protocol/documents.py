"""Index and document wire models (KAITO's ``/index`` and ``/indexes/...`` shapes)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "DeleteDocumentsRequest",
    "DeleteDocumentsResponse",
    "Document",
    "DocumentInput",
    "IndexRequest",
    "ListDocumentsResponse",
    "MessageResponse",
    "MetadataValue",
    "UpdateDocumentInput",
    "UpdateDocumentsRequest",
    "UpdateDocumentsResponse",
]

#: Metadata values are flat JSON scalars so that filters compare them exactly.
MetadataValue = str | int | float | bool | None
IndexName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DocumentInput(BaseModel):
    """A document to index: its text and optional flat metadata."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    """The document text; its sha256 becomes the document id."""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    """Flat metadata; ``split_type: "code"`` with ``language`` selects the code splitter."""


class IndexRequest(BaseModel):
    """``POST /index``: add documents to an index, creating it if needed."""

    model_config = ConfigDict(extra="forbid")

    index_name: IndexName
    """Name of the index (letters, digits, ``.``, ``_``, ``-``; no path characters)."""
    documents: list[DocumentInput] = Field(min_length=1)
    """Documents to add; texts already in the index are skipped (idempotent)."""


class Document(BaseModel):
    """A stored document."""

    doc_id: str
    """sha256 of the text the document was first indexed with."""
    text: str
    """The text, possibly cut to ``max_text_length`` (then ``is_truncated``)."""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    """The document's metadata."""
    hash_value: str
    """sha256 of the current text."""
    is_truncated: bool = False
    """Whether ``text`` was shortened for this response."""


class ListDocumentsResponse(BaseModel):
    """``GET /indexes/{name}/documents``: one page of documents."""

    documents: list[Document]
    """The page, in insertion order."""
    count: int
    """Documents in this page."""
    total_items: int
    """Documents matching the filter in the whole index."""


class UpdateDocumentInput(BaseModel):
    """A new version of a stored document."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1)
    """The id of the document to replace."""
    text: str = Field(min_length=1)
    """The new text."""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    """The new metadata."""


class UpdateDocumentsRequest(BaseModel):
    """``POST /indexes/{name}/documents``: replace documents by id."""

    model_config = ConfigDict(extra="forbid")

    documents: list[UpdateDocumentInput] = Field(min_length=1)
    """Documents to update."""


class UpdateDocumentsResponse(BaseModel):
    """Which documents changed, which were identical and which do not exist."""

    updated_documents: list[Document]
    """Documents whose text or metadata changed (re-embedded)."""
    unchanged_documents: list[Document]
    """Documents sent with the stored text and metadata."""
    not_found_documents: list[UpdateDocumentInput]
    """Documents whose id is not in the index."""


class DeleteDocumentsRequest(BaseModel):
    """``POST /indexes/{name}/documents/delete``."""

    model_config = ConfigDict(extra="forbid")

    doc_ids: list[str] = Field(min_length=1)
    """Ids of the documents to delete."""


class DeleteDocumentsResponse(BaseModel):
    """Which ids were deleted and which were not in the index."""

    deleted_doc_ids: list[str]
    """Deleted ids."""
    not_found_doc_ids: list[str]
    """Ids that were not in the index."""


class MessageResponse(BaseModel):
    """A human-readable confirmation."""

    message: str
    """What was done."""
