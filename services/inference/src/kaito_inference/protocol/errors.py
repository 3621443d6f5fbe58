"""OpenAI's error body: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ErrorBody", "ErrorResponse"]


class ErrorBody(BaseModel):
    """The inside of an OpenAI error."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """``{"error": {...}}``, OpenAI's error shape."""

    error: ErrorBody
