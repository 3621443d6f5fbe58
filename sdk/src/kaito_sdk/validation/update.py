"""KAITO's update rules: the fields that cannot change once an object exists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from kaito_sdk.api import RAGEngine, ResourceSpec, Workspace
from kaito_sdk.validation.errors import FieldError

__all__ = ["check_ragengine_update", "check_workspace_update"]


def _immutable(path: str, old: object, new: object) -> Iterator[FieldError]:
    if old != new:
        yield FieldError(path, f"is immutable: was {old!r}, now {new!r}")


def _dump(value: BaseModel | None) -> dict[str, Any] | None:
    return value.model_dump(by_alias=True, exclude_none=True) if value is not None else None


def _check_resource_update(path: str, old: ResourceSpec, new: ResourceSpec) -> Iterator[FieldError]:
    if old.instance_type:
        yield from _immutable(f"{path}.instanceType", old.instance_type, new.instance_type)
    yield from _immutable(
        f"{path}.labelSelector", _dump(old.label_selector), _dump(new.label_selector)
    )
    yield from _immutable(f"{path}.count", old.count, new.count)
    yield from _immutable(f"{path}.partition", _dump(old.partition), _dump(new.partition))


def check_workspace_update(old: Workspace, new: Workspace) -> Iterator[FieldError]:
    """Fields of ``old`` that ``new`` must keep."""
    yield from _check_resource_update("resource", old.resource, new.resource)
    for section in ("inference", "tuning"):
        was, now = getattr(old, section) is not None, getattr(new, section) is not None
        if was != now:
            change = "removed" if was else "added"
            yield FieldError(section, f"cannot be {change} after creation")
    if old.inference is not None and new.inference is not None:
        before, after = old.inference, new.inference
        if (before.template is None) != (after.template is None):
            change = "unset" if after.template is None else "set"
            yield FieldError("inference.template", f"cannot be {change} after creation")
        if before.preset is not None and after.preset is not None:
            yield from _immutable("inference.preset.name", before.preset.name, after.preset.name)
    if old.tuning is not None and new.tuning is not None:
        before_t, after_t = old.tuning, new.tuning
        yield from _immutable("tuning.preset", _dump(before_t.preset), _dump(after_t.preset))
        yield from _immutable(
            "tuning.method",
            (before_t.method or "").lower(),
            (after_t.method or "").lower(),
        )
        yield from _immutable(
            "tuning.input.name",
            before_t.input.name if before_t.input is not None else None,
            after_t.input.name if after_t.input is not None else None,
        )


def check_ragengine_update(old: RAGEngine, new: RAGEngine) -> Iterator[FieldError]:
    """Fields of ``old`` that ``new`` must keep."""
    before, after = old.spec.compute, new.spec.compute
    if (before is None) != (after is None):
        change = "removed" if after is None else "added"
        yield FieldError("spec.compute", f"cannot be {change} after creation")
    elif before is not None and after is not None:
        yield from _check_resource_update("spec.compute", before, after)
