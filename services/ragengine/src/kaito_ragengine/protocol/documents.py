"""Index and document wire models (KAITO's ``/index`` and ``/indexes/...`` shapes)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

__all__ = [
    "INDEX_NAME_PATTERN",
    "DeleteDocumentsRequest",
    "DeleteDocumentsResponse",
    "Document",
    "DocumentInput",
    "IndexName",
    "IndexRequest",
    "ListDocumentsResponse",
    "MessageResponse",
    "Metadata",
    "MetadataValue",
    "UpdateDocumentInput",
    "UpdateDocumentsRequest",
    "UpdateDocumentsResponse",
]

#: Metadata values are flat JSON scalars so that filters compare them exactly.
MetadataValue = str | int | float | bool | None
#: 1-128 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
IndexName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=INDEX_NAME_PATTERN)
]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refuse_invalid_json(value: Any, where: str) -> None:
    """Raise naming ``where`` if ``value`` holds NaN, Infinity or a lone UTF-16 surrogate.

    Python's JSON parser accepts all three, but they are not JSON (or not Unicode): they
    could not be stored faithfully, compared in filters or sent on to another service.
    """
    if isinstance(value, str):
        if not _encodable(value):
            raise ValueError(f"{where} holds a lone UTF-16 surrogate, which is not valid Unicode")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} is {value}: NaN and Infinity are not allowed "
                "(send a finite number, a string or null)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_invalid_json(key, f"{where} key")
            refuse_invalid_json(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_invalid_json(item, f"{where}[{i}]")


def check_metadata(metadata: Any) -> Any:
    """Metadata with finite numbers and valid Unicode only (see :func:`refuse_invalid_json`)."""
    refuse_invalid_json(metadata, "metadata")
    return metadata


#: Flat metadata with finite numbers and valid Unicode strings.
Metadata = Annotated[dict[str, MetadataValue], BeforeValidator(check_metadata)]


class DocumentInput(BaseModel):
    """A document to index: its text and optional flat metadata."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    """The document text; its sha256 becomes the document id."""
    metadata: Metadata = Field(default_factory=dict)
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
    metadata: Metadata = Field(default_factory=dict)
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
