"""``POST /retrieve``."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from kaito_ragengine.protocol.retrieve import RetrieveRequest, RetrieveResponse
from kaito_ragengine.routers.deps import rag_service
from kaito_ragengine.routers.errors import error_responses
from kaito_ragengine.serving.rag import RagService

__all__ = ["router"]

router = APIRouter(tags=["retrieve"])


@router.post(
    "/retrieve", response_model=RetrieveResponse, responses=error_responses(400, 404, 413, 422, 502)
)
async def retrieve(
    body: RetrieveRequest, rag: Annotated[RagService, Depends(rag_service)]
) -> Response:
    """Hybrid dense + BM25 retrieval, ranked by a relevance that combines both scores.

    The body is written with ``json.dumps`` straight from the search results, which have
    exactly the fields of :class:`RetrievedNode` (the hot path of the service: no
    per-request model validation); ``response_model`` documents the shape.
    """
    results = await rag.retrieve(
        body.index_name, body.query, body.max_node_count, body.metadata_filter
    )
    content = {"query": body.query, "results": results, "count": len(results)}
    return Response(
        json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(),
        media_type="application/json",
    )
