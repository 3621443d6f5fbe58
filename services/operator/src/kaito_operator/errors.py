"""Domain errors of the operator, mapped onto kopf's retry semantics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kopf

__all__ = ["InvalidSpecError", "NotReadyError", "refuse_invalid"]


class InvalidSpecError(kopf.PermanentError):
    """The object cannot be reconciled as written (retrying will not help)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class NotReadyError(kopf.TemporaryError):
    """Something the object depends on is not there yet; retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message, delay=delay)


def refuse_invalid(errors: Sequence[Any]) -> None:
    """Raise :class:`InvalidSpecError` with every SDK ``FieldError`` (none: return)."""
    if errors:
        first = errors[0]
        message = "; ".join(str(error) for error in errors)
        raise InvalidSpecError(first.path, message.removeprefix(f"{first.path}: "))
