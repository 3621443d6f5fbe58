"""Domain errors: each carries the status code the routers answer it with.

No web framework here: serving, stores and embeddings raise these, and
``kaito_ragengine.routers.errors`` maps them to responses.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RagError",
    "ServiceUnavailableError",
    "StartupError",
    "StorageError",
    "UnprocessableError",
    "UpstreamError",
]


class RagError(Exception):
    """Base of every error the service answers with a status code and a message."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(RagError):
    """The request is well-formed JSON but asks for something impossible (400)."""

    status_code = 400


class NotFoundError(RagError):
    """An index, path or document does not exist (404)."""

    status_code = 404


class ConflictError(RagError):
    """The request would overwrite something that exists (409)."""

    status_code = 409


class PayloadTooLargeError(RagError):
    """The request body or the number of documents is over a limit (413)."""

    status_code = 413


class UnprocessableError(RagError):
    """A field breaks a rule that the schema alone cannot express (422)."""

    status_code = 422


class ServiceUnavailableError(RagError):
    """The feature needs something that is not configured, or the server is stopping (503)."""

    status_code = 503


class StorageError(RagError):
    """The persistence volume could not be written or read (500, with the OS reason)."""

    status_code = 500


class UpstreamError(RagError):
    """The LLM or the embeddings endpoint failed (502 unless it sent its own status)."""

    status_code = 502

    def __init__(self, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.status_code = status_code


class StartupError(Exception):
    """A fatal problem found while starting: the process exits non-zero with this message."""
