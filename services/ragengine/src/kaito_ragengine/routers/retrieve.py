"""``POST /retrieve``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from kaito_ragengine.protocol.retrieve import RetrievedNode, RetrieveRequest, RetrieveResponse
from kaito_ragengine.routers.deps import rag_service
from kaito_ragengine.serving.rag import RagService

__all__ = ["router"]

router = APIRouter(tags=["retrieve"])


@router.post("/retrieve")
async def retrieve(
    body: RetrieveRequest, rag: Annotated[RagService, Depends(rag_service)]
) -> RetrieveResponse:
    """Hybrid dense + BM25 retrieval fused with reciprocal rank fusion."""
    results = await rag.retrieve(
        body.index_name, body.query, body.max_node_count, body.metadata_filter
    )
    nodes = [RetrievedNode.model_validate(r) for r in results]
    return RetrieveResponse(query=body.query, results=nodes, count=len(nodes))
