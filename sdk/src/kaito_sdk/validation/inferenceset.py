"""KAITO's admission rules for an InferenceSet (``inferenceset_validation.go``): its own
fields, then the would-be member Workspace checked with the Workspace rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from kaito_sdk.api import InferenceSet
from kaito_sdk.api.inferenceset import (
    ANNOTATION_SCALEDOBJECT_METRICS,
    member_name,
    member_workspace,
    scaling_bounds,
    scaling_metrics,
)
from kaito_sdk.validation.common import check_metadata
from kaito_sdk.validation.errors import DNS1123_LABEL_MAX, FieldError
from kaito_sdk.validation.workspace import check_workspace

__all__ = ["check_inferenceset", "check_inferenceset_update"]

# A Go duration such as "4h", "90m" or "1h30m".
_DURATION: Final = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
# Where a member Workspace's field lives in the InferenceSet.
_MEMBER_PATHS: Final = (
    ("resource.labelSelector", "spec.labelSelector"),
    ("resource", "spec.template.resource"),
    ("inference", "spec.template.inference"),
    ("metadata.annotations", "spec.template.metadata.annotations"),
    ("metadata.labels", "spec.template.metadata.labels"),
)


def check_inferenceset(inference_set: InferenceSet) -> Iterator[FieldError]:
    """Every create-time rule for ``inference_set``."""
    yield from check_metadata(inference_set.metadata)
    spec = inference_set.spec
    if spec.replicas is not None and spec.replicas < 0:
        yield FieldError("spec.replicas", f"must be at least 0, got {spec.replicas}")
    if spec.node_count_limit is not None and spec.node_count_limit < 0:
        yield FieldError("spec.nodeCountLimit", f"must be at least 0, got {spec.node_count_limit}")
    if inference_set.metadata.name:
        longest = member_name(inference_set, max(inference_set.desired_replicas - 1, 0))
        if len(longest) > DNS1123_LABEL_MAX:
            yield FieldError(
                "metadata.name",
                f"member Workspace name {longest!r} would be longer than "
                f"{DNS1123_LABEL_MAX} characters; use a shorter name",
            )
    yield from _check_update_strategy(inference_set)
    yield from _check_auto_upgrade(inference_set)
    yield from _check_autoscaling(inference_set)
    if inference_set.metadata.name:
        for error in check_workspace(member_workspace(inference_set, 0)):
            if error.path != "metadata.name":
                yield FieldError(_set_path(error.path), error.message)


def _set_path(member_path: str) -> str:
    for prefix, replacement in _MEMBER_PATHS:
        if member_path == prefix or member_path.startswith((f"{prefix}.", f"{prefix}[")):
            return replacement + member_path[len(prefix) :]
    return f"spec.template.{member_path}"


def _check_autoscaling(inference_set: InferenceSet) -> Iterator[FieldError]:
    try:
        scaling_metrics(inference_set)
    except ValueError as exc:
        yield FieldError(f"metadata.annotations[{ANNOTATION_SCALEDOBJECT_METRICS}]", str(exc))
    try:
        scaling_bounds(inference_set)
    except ValueError as exc:
        yield FieldError("metadata.annotations", str(exc))


def _check_update_strategy(inference_set: InferenceSet) -> Iterator[FieldError]:
    strategy = inference_set.spec.update_strategy
    if strategy is None:
        return
    kind = strategy.get("type", "RollingUpdate")
    if kind != "RollingUpdate":
        yield FieldError(
            "spec.updateStrategy.type", f"only 'RollingUpdate' is supported, got {kind!r}"
        )
    rolling = strategy.get("rollingUpdate") or {}
    if not isinstance(rolling, dict):
        yield FieldError("spec.updateStrategy.rollingUpdate", "must be an object")
        return
    unavailable = rolling.get("maxUnavailable", 1)
    if isinstance(unavailable, bool) or not isinstance(unavailable, int) or unavailable < 1:
        yield FieldError(
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            f"must be a whole number of replicas, at least 1, got {unavailable!r}",
        )


def _check_auto_upgrade(inference_set: InferenceSet) -> Iterator[FieldError]:
    upgrade = inference_set.spec.auto_upgrade
    if upgrade is None or upgrade.maintenance_window is None:
        return
    window = upgrade.maintenance_window
    if len(window.schedule.split()) != 5:
        yield FieldError(
            "spec.autoUpgrade.maintenanceWindow.schedule",
            f"must be a 5-field cron expression (UTC), got {window.schedule!r}",
        )
    if window.duration is not None and (
        not _DURATION.match(window.duration) or not re.search(r"[1-9]", window.duration)
    ):
        yield FieldError(
            "spec.autoUpgrade.maintenanceWindow.duration",
            f"must be a positive duration such as '4h' or '90m', got {window.duration!r}",
        )


def check_inferenceset_update(old: InferenceSet, new: InferenceSet) -> Iterator[FieldError]:
    """The fields of an InferenceSet that may not change: the GPU partitioning."""
    old_resource, new_resource = old.spec.template.resource, new.spec.template.resource
    old_partition = old_resource.partition if old_resource else None
    new_partition = new_resource.partition if new_resource else None
    if old_partition != new_partition:
        yield FieldError("spec.template.resource.partition", "is immutable after creation")
