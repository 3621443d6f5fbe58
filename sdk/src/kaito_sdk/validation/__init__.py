"""KAITO's admission rules, callable from Python.

``validate(obj)`` checks a new object, ``validate_update(old, new)`` an update (the new
object's rules plus the fields that may not change), and ``validate_manifest(dict)``
starts from a raw manifest, so that schema errors (unknown or missing fields, wrong
types) come back as :class:`FieldError` s too. Every error names the field by its wire
path and the rule it breaks::

    for error in validate(workspace):
        print(error)  # inference.adapters[1].strength: must be between 0 and 1, got 1.5

``check(obj)`` and ``check_manifest(dict)`` return a :class:`Report`: the errors, and the
:class:`FieldWarning` s for what KAITO accepts but will not do what the user may expect
(a gated model without a token Secret, an adapter strength under vLLM, a deprecated
preset). Warnings never refuse an object; admission returns them to ``kubectl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kaito_sdk.api import (
    InferenceSet,
    KaitoObject,
    ManifestError,
    RAGEngine,
    Workspace,
    parse_manifest,
)
from kaito_sdk.api.inferenceset import member_workspace
from kaito_sdk.validation.errors import FieldError, FieldWarning
from kaito_sdk.validation.inferenceset import check_inferenceset, check_inferenceset_update
from kaito_sdk.validation.ragengine import check_ragengine, ragengine_warnings
from kaito_sdk.validation.update import check_ragengine_update, check_workspace_update
from kaito_sdk.validation.workspace import check_workspace
from kaito_sdk.validation.workspace_warnings import workspace_warnings

__all__ = [
    "FieldError",
    "FieldWarning",
    "Report",
    "check",
    "check_manifest",
    "errors_from_validation_error",
    "validate",
    "validate_manifest",
    "validate_update",
]


def validate(obj: KaitoObject) -> list[FieldError]:
    """Every rule ``obj`` breaks as a new object; empty when it is valid."""
    if isinstance(obj, Workspace):
        return list(check_workspace(obj))
    if isinstance(obj, RAGEngine):
        return list(check_ragengine(obj))
    if isinstance(obj, InferenceSet):
        return list(check_inferenceset(obj))
    raise TypeError(
        f"cannot validate {type(obj).__name__}; expected Workspace, RAGEngine or InferenceSet"
    )


def validate_update(old: KaitoObject, new: KaitoObject) -> list[FieldError]:
    """Every rule ``new`` breaks as an update of ``old``: the create rules for ``new``
    and the immutable fields. Empty when the update is allowed."""
    if isinstance(old, Workspace) and isinstance(new, Workspace):
        return [*check_workspace(new), *check_workspace_update(old, new)]
    if isinstance(old, RAGEngine) and isinstance(new, RAGEngine):
        return [*check_ragengine(new), *check_ragengine_update(old, new)]
    if isinstance(old, InferenceSet) and isinstance(new, InferenceSet):
        return [*check_inferenceset(new), *check_inferenceset_update(old, new)]
    return [
        FieldError("kind", f"cannot change from {old.kind} to {new.kind}"),
    ]


def validate_manifest(manifest: dict[str, Any]) -> list[FieldError]:
    """Parse ``manifest`` and validate it: schema errors, or else the admission rules."""
    try:
        obj = parse_manifest(manifest)
    except ManifestError as exc:
        return [FieldError("kind", str(exc))]
    except ValidationError as exc:
        return errors_from_validation_error(exc)
    return validate(obj)


@dataclass(frozen=True)
class Report:
    """What checking one object found: errors refuse it, warnings do not."""

    errors: list[FieldError] = field(default_factory=list)
    """Rules it breaks (the same list :func:`validate` returns)."""
    warnings: list[FieldWarning] = field(default_factory=list)
    """What will not do what the user may expect; admitted all the same."""


def warnings_for(obj: KaitoObject) -> list[FieldWarning]:
    """The warnings for ``obj``: a Workspace's, or those of an InferenceSet's members
    (reported on ``spec.template``)."""
    if isinstance(obj, Workspace):
        return list(workspace_warnings(obj))
    if isinstance(obj, InferenceSet):
        member = member_workspace(obj, 0)
        return [
            FieldWarning(f"spec.template.{warning.path}", warning.message)
            for warning in workspace_warnings(member)
        ]
    if isinstance(obj, RAGEngine):
        return list(ragengine_warnings(obj))
    return []


def check(obj: KaitoObject) -> Report:
    """Errors and warnings for ``obj`` as a new object."""
    return Report(validate(obj), warnings_for(obj))


def check_manifest(manifest: dict[str, Any]) -> Report:
    """Errors and warnings for a raw manifest: schema errors, or else :func:`check`."""
    try:
        obj = parse_manifest(manifest)
    except ManifestError as exc:
        return Report([FieldError("kind", str(exc))])
    except ValidationError as exc:
        return Report(errors_from_validation_error(exc))
    return check(obj)


def errors_from_validation_error(error: ValidationError) -> list[FieldError]:
    """A pydantic error as :class:`FieldError` s with manifest paths."""
    errors = []
    for item in error.errors(include_url=False):
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the KAITO API)"
        elif item["type"] == "missing":
            message = "is required"
        errors.append(FieldError(path or "(root)", message))
    return errors
