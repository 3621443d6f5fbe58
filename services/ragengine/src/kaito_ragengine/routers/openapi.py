"""The OpenAPI document as the running service enforces it, and exact ``Allow`` headers.

The wire models are static, but some limits are settings (``MAX_TOP_K``,
``MAX_DOCUMENT_CHARS``, ``MAX_DOCUMENTS_PER_REQUEST``): :func:`install_openapi` writes the
configured values into the schema, and declares ``metadata_filter`` as what it is, a
JSON object of scalars serialised into the query string.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from kaito_ragengine.settings import Settings

__all__ = ["install_openapi"]

_SCALAR = {"anyOf": [{"type": t} for t in ("string", "integer", "number", "boolean", "null")]}


def _set(schemas: dict[str, Any], model: str, field: str, **values: Any) -> None:
    prop = schemas[model]["properties"][field]
    target = next((s for s in prop.get("anyOf", []) if s.get("type") != "null"), prop)
    target.update(values)


def _document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = schema["components"]["schemas"]
    _set(schemas, "RetrieveRequest", "max_node_count", maximum=settings.max_top_k)
    for model in ("DocumentInput", "UpdateDocumentInput"):
        _set(schemas, model, "text", maxLength=settings.max_document_chars)
    for model in ("IndexRequest", "UpdateDocumentsRequest"):
        _set(schemas, model, "documents", maxItems=settings.max_documents_per_request)
    for operation in schema["paths"]["/indexes/{index_name}/documents"].values():
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "metadata_filter":
                description = parameter["schema"].get("description", "")
                parameter.pop("schema")
                parameter["content"] = {
                    "application/json": {
                        "schema": {"type": "object", "additionalProperties": _SCALAR},
                    }
                }
                parameter["description"] = description
    return schema


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 whose ``Allow`` lists the methods of every route on the path, not just the first."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods: set[str] = set()
        for route in request.app.router.routes:
            match, _ = route.matches({**request.scope, "method": "\0"})
            if match is Match.PARTIAL:
                methods |= getattr(route, "methods", None) or set()
        headers["Allow"] = ", ".join(sorted(methods))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the settings-aware OpenAPI document and exact ``Allow`` headers on 405."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, settings)
        return app.openapi_schema

    # FastAPI documents replacing ``app.openapi`` as the way to customise the document.
    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    app.add_exception_handler(HTTPException, _method_not_allowed)
