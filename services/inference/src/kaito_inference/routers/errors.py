"""The one place errors become responses: OpenAI's ``{"error": {...}}`` for every error.

Domain errors (:mod:`kaito_inference.errors`) carry their status and code; pydantic's
validation errors become a 400 naming the field and its rule (OpenAI's status, not
FastAPI's 422); unknown routes keep their status; anything unexpected is a 500 without a
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaito_inference.errors import InferenceError, too_large
from kaito_inference.protocol.errors import ErrorBody, ErrorResponse

__all__ = [
    "RequestBodyTooLarge",
    "error_response",
    "install_error_handlers",
    "render_error",
]

log = logging.getLogger(__name__)

#: OpenAI's error ``type`` for each status.
_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class RequestBodyTooLarge(StarletteHTTPException):
    """The body grew past the limit while it was being read (raised from ``receive``).

    An ``HTTPException``, so FastAPI's body parsing lets it through instead of turning it
    into a 400; it is rendered as :class:`RequestTooLargeError`.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413)
        self.max_bytes = max_bytes


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error response."""
    body = ErrorBody(
        message=message,
        type=type_ or _TYPES.get(status, "server_error"),
        param=param,
        code=code,
    )
    return JSONResponse(ErrorResponse(error=body).model_dump(), status_code=status)


def render_error(error: InferenceError) -> JSONResponse:
    """The response for a domain error: its status, message, field and code."""
    return error_response(error.status, error.message, param=error.param, code=error.code)


#: Names pydantic puts in an error's location for the member of a union that failed.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "list", "dict"})


def _location(loc: tuple[int | str, ...]) -> str | None:
    """The field path of an error: ``messages.0.content`` (no ``body``, no union members)."""
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path")
        and not (isinstance(p, str) and (p in _UNION_MEMBERS or "[" in p))
    ]
    return ".".join(parts) or None


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """400 naming the first invalid field and its rule (OpenAI's status, not FastAPI's 422)."""
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its location is a character offset
        detail = first.get("ctx", {}).get("error", "not valid JSON")
        message = f"the request body is not valid JSON: {detail}"
        return error_response(400, message, code="invalid_json")
    param = _location(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = f"unsupported parameter: {param}"
    elif param:
        message = f"{param}: {message}"
    return error_response(400, message, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise come out in OpenAI's shape."""

    @app.exception_handler(InferenceError)
    async def _domain(_request: Request, exc: InferenceError) -> JSONResponse:
        return render_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(RequestBodyTooLarge)
    async def _too_large(_request: Request, exc: RequestBodyTooLarge) -> JSONResponse:
        return render_error(too_large(exc.max_bytes))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal server error", type_="server_error")
