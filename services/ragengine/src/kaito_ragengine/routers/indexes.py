"""Index and document endpoints (KAITO's paths and shapes)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from kaito_ragengine.errors import UnprocessableError
from kaito_ragengine.protocol.documents import (
    INDEX_NAME_PATTERN,
    DeleteDocumentsRequest,
    DeleteDocumentsResponse,
    Document,
    IndexRequest,
    ListDocumentsResponse,
    MessageResponse,
    UpdateDocumentsRequest,
    UpdateDocumentsResponse,
)
from kaito_ragengine.routers.deps import rag_service
from kaito_ragengine.routers.errors import error_responses
from kaito_ragengine.serving.rag import RagService

__all__ = ["router"]

router = APIRouter(tags=["indexes"])
Rag = Annotated[RagService, Depends(rag_service)]
IndexNamePath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=INDEX_NAME_PATTERN,
        description="Index name: 1-128 letters, digits, '.', '_' or '-', first a letter or digit",
    ),
]
PathParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$",
        description="Snapshot directory inside the persistence root (default <root>/<name>); "
        "no control characters; one directory holds the snapshots of one index (else 409); "
        "a path outside the root is refused with 400",
    ),
]


def _no_nan(constant: str) -> Any:
    raise ValueError(f"{constant} is not allowed")


def metadata_filter_param(
    metadata_filter: Annotated[
        str | None, Query(description="JSON object of metadata key/value pairs")
    ] = None,
) -> dict[str, Any] | None:
    """Parse the ``metadata_filter`` query parameter (a JSON object of scalars)."""
    if metadata_filter is None:
        return None
    try:
        parsed = json.loads(metadata_filter, parse_constant=_no_nan)
    except ValueError as exc:
        raise UnprocessableError(f"metadata_filter: not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict) or any(isinstance(v, dict | list) for v in parsed.values()):
        raise UnprocessableError("metadata_filter: must be a JSON object of scalar values")
    return parsed


@router.post("/index", responses=error_responses(400, 413, 422, 502, 503))
async def index_documents(body: IndexRequest, rag: Rag) -> list[Document]:
    """Add documents to an index (created if missing); known texts are skipped."""
    return await rag.add_documents(body.index_name, body.documents)


@router.get("/indexes")
async def list_indexes(rag: Rag) -> list[str]:
    """Names of all indexes."""
    return sorted(rag.indexes)


@router.get("/indexes/{index_name}/documents", responses=error_responses(404, 422))
async def list_documents(  # noqa: PLR0917 - FastAPI passes query parameters by name
    index_name: IndexNamePath,
    rag: Rag,
    metadata_filter: Annotated[dict[str, Any] | None, Depends(metadata_filter_param)],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    max_text_length: Annotated[int, Query(ge=1)] = 1000,
) -> ListDocumentsResponse:
    """A page of an index's documents, texts cut to ``max_text_length``."""
    return await rag.list_documents(
        index_name,
        limit=limit,
        offset=offset,
        max_text_length=max_text_length,
        metadata_filter=metadata_filter,
    )


@router.post(
    "/indexes/{index_name}/documents", responses=error_responses(400, 404, 413, 422, 502, 503)
)
async def update_documents(
    index_name: IndexNamePath, body: UpdateDocumentsRequest, rag: Rag
) -> UpdateDocumentsResponse:
    """Replace documents' text and metadata by id."""
    return await rag.update_documents(index_name, body.documents)


@router.post(
    "/indexes/{index_name}/documents/delete",
    responses=error_responses(400, 404, 413, 422, 503),
)
async def delete_documents(
    index_name: IndexNamePath, body: DeleteDocumentsRequest, rag: Rag
) -> DeleteDocumentsResponse:
    """Delete documents by id."""
    deleted, missing = await rag.delete_documents(index_name, body.doc_ids)
    return DeleteDocumentsResponse(deleted_doc_ids=deleted, not_found_doc_ids=missing)


@router.delete("/indexes/{index_name}", responses=error_responses(404, 422, 500, 503))
async def delete_index(index_name: IndexNamePath, rag: Rag) -> MessageResponse:
    """Delete an index; its snapshots stay on disk but are not restored on start."""
    await rag.delete_index(index_name)
    return MessageResponse(message=f"Successfully deleted index {index_name}.")


@router.post("/persist/{index_name}", responses=error_responses(400, 404, 409, 413, 422, 500))
async def persist_index(
    index_name: IndexNamePath, rag: Rag, path: PathParam = None
) -> MessageResponse:
    """Write an atomic snapshot of the index."""
    final = await rag.persist(index_name, path)
    return MessageResponse(message=f"Successfully persisted index {index_name} to {final}.")


@router.post("/load/{index_name}", responses=error_responses(400, 404, 409, 413, 422, 503))
async def load_index(
    index_name: IndexNamePath, rag: Rag, path: PathParam = None, overwrite: bool = False
) -> MessageResponse:
    """Load the newest complete snapshot (409 if the index exists and not ``overwrite``)."""
    count = await rag.load(index_name, path, overwrite=overwrite)
    return MessageResponse(message=f"Successfully loaded index {index_name} ({count} documents).")
