"""The central mapping of errors to HTTP responses, and the error bodies' schema."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from kaito_ragengine.errors import RagError

__all__ = [
    "ErrorResponse",
    "ValidationErrorResponse",
    "ValidationIssue",
    "error_responses",
    "install_exception_handlers",
]


class ErrorResponse(BaseModel):
    """The body of every error the service itself raises."""

    detail: str
    """What went wrong, starting with the field or parameter it concerns."""


class ValidationIssue(BaseModel):
    """One schema violation (FastAPI's shape)."""

    model_config = ConfigDict(extra="allow")

    type: str
    """pydantic's error type, e.g. ``missing`` or ``string_too_short``."""
    loc: list[str | int]
    """Where: ``body``, ``query`` or ``path`` followed by the field's path."""
    msg: str
    """The rule that was broken."""
    input: Any = None
    """The offending value (lone surrogates are shown as ``\\udXXX`` escapes)."""


class ValidationErrorResponse(BaseModel):
    """A 422: a list of schema violations, or one message for a rule the schema cannot state."""

    detail: str | list[ValidationIssue]
    """The violations, or a message naming the field and the rule."""


_DESCRIPTIONS = {
    400: "Bad request: a parameter asks for something impossible",
    404: "Not found: the index or its snapshot does not exist",
    409: "Conflict: the index or snapshot directory belongs to something else",
    413: "Payload too large: over a request limit",
    422: "Validation error: a field breaks a rule",
    500: "Storage error: the persistence volume cannot be written (the OS reason is given)",
    502: "Upstream error: the LLM or the embeddings endpoint failed",
    503: "Unavailable: the server is shutting down, or the feature is not configured",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    return {
        code: {
            "model": ValidationErrorResponse if code == 422 else ErrorResponse,
            "description": _DESCRIPTIONS[code],
        }
        for code in codes
    }


def _printable(value: Any) -> Any:
    """``value`` as strict JSON: lone UTF-16 surrogates escaped, NaN and Infinity as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


async def _handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _printable(jsonable_encoder(exc.errors()))}
    )


async def _handle_rag_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)
    return JSONResponse(status_code=exc.status_code, content={"detail": _printable(exc.message)})


def install_exception_handlers(app: FastAPI) -> None:
    """Map every :class:`RagError` to ``{"detail": message}`` with its status code, and
    schema violations to FastAPI's 422 list with the echoed input made encodable."""
    app.add_exception_handler(RagError, _handle_rag_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
