"""Conversion of kaito.sh manifests between ``v1alpha1`` and ``v1beta1``, on plain dicts.

Workspace and InferenceSet have one schema in both versions: only ``apiVersion`` changes.
A RAGEngine's storage and service names move as the versions define them (see
:mod:`kaito_sdk.api.ragengine_v1alpha1` for the v1alpha1 model). Dict-level, with no
model imported, so that :class:`~kaito_sdk.api.ragengine.RAGEngine` itself can take a
v1alpha1 manifest.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

__all__ = [
    "V1ALPHA1",
    "V1ALPHA1_FIELDS",
    "V1BETA1",
    "V1BETA1_FIELDS",
    "ConversionError",
    "convert_manifest",
]

V1ALPHA1: Final = "kaito.sh/v1alpha1"
V1BETA1: Final = "kaito.sh/v1beta1"
#: On a v1beta1 RAGEngine: the v1alpha1-only fields of the object it was converted from.
V1ALPHA1_FIELDS: Final = "kaito.sh/v1alpha1-fields"
#: On a v1alpha1 RAGEngine: the v1beta1-only fields of the object it was converted from.
V1BETA1_FIELDS: Final = "kaito.sh/v1beta1-fields"
_ALPHA_ONLY_SPEC_FIELDS: Final = ("queryServiceName", "indexServiceName")


class ConversionError(ValueError):
    """A manifest that cannot be converted (wrong kind or version, a broken annotation)."""


def convert_manifest(manifest: dict[str, Any], api_version: str) -> dict[str, Any]:
    """``manifest`` (any kaito.sh kind) as ``api_version``; a new dict, the input untouched.

    Workspace and InferenceSet have one schema in both versions: only ``apiVersion``
    changes. A RAGEngine's storage and service names are moved as the versions define
    them. Raises :class:`ConversionError` for a version or kind it cannot convert.
    """
    source = manifest.get("apiVersion")
    if api_version not in (V1ALPHA1, V1BETA1):
        raise ConversionError(
            f"desiredAPIVersion: {api_version!r} is not kaito.sh/v1alpha1 or v1beta1"
        )
    if source not in (V1ALPHA1, V1BETA1):
        raise ConversionError(f"apiVersion: {source!r} is not kaito.sh/v1alpha1 or v1beta1")
    result = copy.deepcopy(manifest)
    result["apiVersion"] = api_version
    if manifest.get("kind") != "RAGEngine" or source == api_version:
        return result
    if api_version == V1BETA1:
        _alpha_spec_to_beta(result)
    else:
        _beta_spec_to_alpha(result)
    return result


def _alpha_spec_to_beta(obj: dict[str, Any]) -> None:
    spec: dict[str, Any] = obj.get("spec") or {}
    lost: dict[str, Any] = {}
    for name in _ALPHA_ONLY_SPEC_FIELDS:
        if name in spec:
            lost[name] = spec.pop(name)
    if "storage" in spec:
        storage = spec.pop("storage")
        if storage and "persistentVolumeClaim" in storage:
            spec["storage"] = {"persistentVolume": storage}
        elif storage:  # a mountPath alone: v1beta1 needs the claim
            lost["storage"] = storage
        else:
            spec["storage"] = storage
    _restore(obj, spec, V1BETA1_FIELDS)
    _keep(obj, lost, V1ALPHA1_FIELDS)


def _beta_spec_to_alpha(obj: dict[str, Any]) -> None:
    spec: dict[str, Any] = obj.get("spec") or {}
    lost: dict[str, Any] = {}
    if "storage" in spec:
        storage = spec.pop("storage")
        volume = storage.pop("persistentVolume", None) if storage else None
        if storage:  # vectorDB: no v1alpha1 field holds it
            lost["storage"] = storage
        if volume is not None:
            spec["storage"] = volume
        elif not storage:
            spec["storage"] = storage
    _restore(obj, spec, V1ALPHA1_FIELDS)
    _keep(obj, lost, V1BETA1_FIELDS)


def _restore(obj: dict[str, Any], spec: dict[str, Any], annotation: str) -> None:
    """Merge the fields kept in ``annotation`` back into ``spec`` (what is set wins)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotation not in annotations:
        return
    text = annotations.pop(annotation)
    if not annotations:
        del obj["metadata"]["annotations"]
    try:
        kept = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"metadata.annotations[{annotation}]: not JSON: {exc}") from None
    if not isinstance(kept, dict):
        raise ConversionError(f"metadata.annotations[{annotation}]: must be a JSON object")
    _merge(spec, kept)
    if spec and "spec" not in obj:
        obj["spec"] = spec


def _merge(target: dict[str, Any], kept: dict[str, Any]) -> None:
    for key, value in kept.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target.setdefault(key, value)


def _keep(obj: dict[str, Any], lost: dict[str, Any], annotation: str) -> None:
    """Write the fields the target version cannot hold into ``annotation``."""
    if not lost:
        return
    metadata = obj.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    annotations[annotation] = json.dumps(lost, sort_keys=True, separators=(",", ":"))
    metadata["annotations"] = annotations
