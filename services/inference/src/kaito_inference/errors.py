"""Domain errors: what a request can be refused for, with its HTTP status and OpenAI code.

The serving layer raises these; :mod:`kaito_inference.routers.errors` renders them (and
every other error) as ``{"error": {message, type, param, code}}`` in one place. This
module imports no web framework.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AdapterBusyError",
    "AlreadyServedError",
    "ClientDisconnectedError",
    "ContextLengthError",
    "FeatureDisabledError",
    "InferenceError",
    "InvalidValueError",
    "ModelLoadFailedError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "RequestTooLargeError",
    "TooManyRequestsError",
    "too_large",
]


class InferenceError(Exception):
    """An error the client sees with ``status`` and ``code``; ``param`` names the field."""

    status: ClassVar[int] = 500
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidValueError(InferenceError):
    """A field has a value this server cannot serve (400)."""

    status = 400
    code = "invalid_value"


class ContextLengthError(InferenceError):
    """Prompt plus ``max_tokens`` do not fit the model's context (400)."""

    status = 400
    code = "context_length_exceeded"


class AlreadyServedError(InferenceError):
    """A runtime adapter would take the name of a model already served (400)."""

    status = 400
    code = "already_loaded"


class ClientDisconnectedError(InferenceError):
    """The client went away before a non-streamed answer was ready (400)."""

    status = 400
    code = None


class ModelNotFoundError(InferenceError):
    """``model`` (or ``lora_name``) names nothing this server serves (404)."""

    status = 404
    code = "model_not_found"


class FeatureDisabledError(InferenceError):
    """The endpoint exists only when a setting turns it on (404)."""

    status = 404
    code = "not_enabled"


class AdapterBusyError(InferenceError):
    """An adapter cannot be unloaded while requests use it (409)."""

    status = 409
    code = "adapter_busy"


class RequestTooLargeError(InferenceError):
    """The request body is over the configured limit (413)."""

    status = 413
    code = "request_too_large"


class TooManyRequestsError(InferenceError):
    """The engine's waiting queue is full; retry later (429)."""

    status = 429
    code = "rate_limit_exceeded"


class ModelNotReadyError(InferenceError):
    """The model is still loading (503)."""

    status = 503
    code = "model_not_ready"


class ModelLoadFailedError(InferenceError):
    """The model failed to load; the server will not serve it (503)."""

    status = 503
    code = "model_load_failed"


def too_large(max_bytes: int) -> RequestTooLargeError:
    """The 413 error for a body over ``max_bytes``."""
    return RequestTooLargeError(
        f"the request body is larger than {max_bytes} bytes; set "
        "KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES (--max-request-body-bytes) to allow more"
    )
