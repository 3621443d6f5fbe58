"""OpenAI-shaped errors: one exception type and the handlers that render every error."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaito_inference.protocol import ErrorBody, ErrorResponse

__all__ = ["OpenAIError", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class OpenAIError(Exception):
    """An error the client should see as ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            message=message,
            type=type_ or _TYPES.get(status, "server_error"),
            param=param,
            code=code,
        )


def error_response(error: OpenAIError) -> JSONResponse:
    """Render ``error`` as a JSON response."""
    return JSONResponse(ErrorResponse(error=error.body).model_dump(), status_code=error.status)


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


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise come out in OpenAI's shape."""

    @app.exception_handler(OpenAIError)
    async def _openai(_request: Request, exc: OpenAIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # its location is a character offset
            detail = first.get("ctx", {}).get("error", "not valid JSON")
            message = f"the request body is not valid JSON: {detail}"
            return error_response(OpenAIError(400, message, code="invalid_json"))
        param = _location(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "extra_forbidden":
            message = f"unsupported parameter: {param}"
        elif param:
            message = f"{param}: {message}"
        return error_response(OpenAIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(OpenAIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(OpenAIError(500, "internal server error", type_="server_error"))
