"""Rules shared by both kinds: object metadata, ``ResourceSpec`` and URL syntax."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit

from kaito_sdk.api import PARTITION_MODES, LabelSelector, ObjectMeta, PartitionSpec, ResourceSpec
from kaito_sdk.labels import is_reserved_label_key
from kaito_sdk.skus import find_sku, list_skus
from kaito_sdk.validation.errors import (
    FieldError,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    label_key_problem,
    label_value_problem,
)

__all__ = [
    "check_label_selector",
    "check_metadata",
    "check_object_name",
    "check_resource",
    "check_url_syntax",
    "instance_type_problem",
]

# KAITO lets any Azure GPU (N-series) or general-purpose (D-series) size through.
_AZURE_PASSTHROUGH: Final = re.compile(r"^Standard_[ND]", re.IGNORECASE)
_MIG_PROFILE: Final = re.compile(r"^[1-7]g\.[1-9][0-9]*gb(\+me)?$")


def check_metadata(meta: ObjectMeta) -> Iterator[FieldError]:
    """The object's name (or generateName) and namespace are DNS-1123 labels."""
    if meta.name:
        problem = dns1123_label_problem(meta.name)
        if problem:
            yield FieldError("metadata.name", problem)
    elif not meta.generate_name:
        yield FieldError("metadata.name", "is required (or set metadata.generateName)")
    if meta.namespace:
        problem = dns1123_label_problem(meta.namespace)
        if problem:
            yield FieldError("metadata.namespace", problem)


def check_object_name(
    path: str, name: str | None, *, required: bool = True
) -> Iterator[FieldError]:
    """``name`` names another object (ConfigMap, Secret, PVC): a DNS-1123 subdomain."""
    if not name:
        if required:
            yield FieldError(path, "is required")
        return
    problem = dns1123_subdomain_problem(name)
    if problem:
        yield FieldError(path, problem)


def instance_type_problem(instance_type: str) -> str | None:
    """Why ``instance_type`` is not a known SKU, or None when it is one."""
    if find_sku(instance_type) is not None or _AZURE_PASSTHROUGH.match(instance_type):
        return None
    names = [sku.name for sku in list_skus()]
    close = difflib.get_close_matches(instance_type, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"{instance_type!r} is not in the GPU SKU catalog ({hint}known: {len(names)} SKUs, "
        "for example " + ", ".join(names[:3]) + "; any Azure Standard_N*/Standard_D* also passes)"
    )


def check_label_selector(path: str, selector: LabelSelector) -> Iterator[FieldError]:
    """Only ``matchLabels`` and ``In`` expressions; valid keys; not only reserved keys."""
    keys: list[str] = []
    for key, value in (selector.match_labels or {}).items():
        keys.append(key)
        for problem in (label_key_problem(key), label_value_problem(value)):
            if problem:
                yield FieldError(f"{path}.matchLabels", problem)
    for index, requirement in enumerate(selector.match_expressions or []):
        item = f"{path}.matchExpressions[{index}]"
        keys.append(requirement.key)
        problem = label_key_problem(requirement.key)
        if problem:
            yield FieldError(f"{item}.key", problem)
        if requirement.operator != "In":
            yield FieldError(
                f"{item}.operator",
                f"operator {requirement.operator!r} is not supported; only 'In' is allowed",
            )
        if not requirement.values:
            yield FieldError(f"{item}.values", "must list at least one value for 'In'")
        for value in requirement.values or []:
            problem = label_value_problem(value)
            if problem:
                yield FieldError(f"{item}.values", problem)
    if not keys:
        yield FieldError(
            path, "must select on at least one label (matchLabels or matchExpressions)"
        )
    elif all(is_reserved_label_key(key) for key in keys):
        yield FieldError(
            path,
            "selects only on labels KAITO reserves for itself ("
            + ", ".join(sorted(set(keys)))
            + "); add a label of your own",
        )


def check_resource(path: str, resource: ResourceSpec, *, tuning: bool) -> Iterator[FieldError]:
    """``resource`` (or a RAGEngine's ``compute``): SKU, selector, count and partition."""
    if resource.instance_type is not None:
        problem = instance_type_problem(resource.instance_type)
        if problem:
            yield FieldError(f"{path}.instanceType", problem)
    yield from check_label_selector(f"{path}.labelSelector", resource.label_selector)
    if resource.count is not None:
        if resource.count < 1:
            yield FieldError(f"{path}.count", f"must be at least 1, got {resource.count}")
        elif tuning and resource.count > 1:
            yield FieldError(f"{path}.count", "must be at most 1 for tuning (one node per job)")
    if resource.partition is not None:
        if tuning:
            yield FieldError(f"{path}.partition", "GPU partitioning is not supported for tuning")
        yield from _check_partition(f"{path}.partition", resource.partition)


def _check_partition(ppath: str, partition: PartitionSpec) -> Iterator[FieldError]:
    if partition.mode not in PARTITION_MODES:
        yield FieldError(f"{ppath}.mode", f"must be one of {', '.join(PARTITION_MODES)}")
    elif partition.mode == "mig":
        if not partition.profile:
            yield FieldError(f"{ppath}.profile", "is required for mode mig")
        elif not _MIG_PROFILE.match(partition.profile):
            yield FieldError(
                f"{ppath}.profile", f"{partition.profile!r} is not an NVIDIA MIG profile (1g.10gb)"
            )
        if partition.count is not None:
            yield FieldError(f"{ppath}.count", "is not allowed for mode mig (use profile)")
    else:
        if partition.count is None or partition.count < 1:
            yield FieldError(f"{ppath}.count", "must be at least 1 for mode accelerator")
        if partition.profile is not None:
            yield FieldError(f"{ppath}.profile", "is only allowed for mode mig")


def check_url_syntax(path: str, url: str) -> Iterator[FieldError]:
    """``url`` parses as an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        yield FieldError(path, f"{url!r} is not a valid URL: {exc}")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        yield FieldError(path, f"{url!r} is not a valid URL (want http(s)://host[:port]/path)")
