"""KAITO's ``kaito.sh/v1alpha1`` RAGEngine and its lossless conversion to and from v1beta1.

The v1alpha1 spec is the v1beta1 :class:`~kaito_sdk.api.ragengine.RAGEngineSpec` with two
differences, as in KAITO: ``storage`` is flat (``persistentVolumeClaim``, ``mountPath``;
no ``vectorDB``) and ``queryServiceName`` / ``indexServiceName`` exist. The conversion
functions work on manifests (what a ConversionReview carries) and lose nothing: a field
one version cannot hold is kept, as JSON, in an annotation of the converted object
(:data:`V1ALPHA1_FIELDS` on a v1beta1 object, :data:`V1BETA1_FIELDS` on a v1alpha1 one)
and put back when the object is converted back, so a round trip is exact.
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar, Final, Literal

from kaito_sdk.api.base import ApiInfo, KubeModel, KubeObject
from kaito_sdk.api.ragengine import RAGEngine, RAGEngineSpec, RAGEngineStatus

__all__ = [
    "V1ALPHA1",
    "V1ALPHA1_FIELDS",
    "V1BETA1",
    "V1BETA1_FIELDS",
    "ConversionError",
    "FlatStorageSpec",
    "RAGEngineV1Alpha1",
    "RAGEngineV1Alpha1Spec",
    "convert_manifest",
    "to_v1alpha1",
    "to_v1beta1",
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


class FlatStorageSpec(KubeModel):
    """v1alpha1 storage: a PersistentVolumeClaim for the index snapshots, inline."""

    persistent_volume_claim: str | None = None
    """Name of the PersistentVolumeClaim (same namespace) the indexes persist to."""
    mount_path: str | None = None
    """Where the volume is mounted in the service (default ``/mnt/data``)."""


class RAGEngineV1Alpha1Spec(RAGEngineSpec):
    """Desired state of a v1alpha1 RAGEngine: the v1beta1 spec with KAITO's flat storage
    and the service names."""

    storage: FlatStorageSpec | None = None  # type: ignore[assignment]  # v1alpha1's flat shape replaces v1beta1's on purpose
    """Index persistence on a PersistentVolumeClaim (v1beta1: ``storage.persistentVolume``)."""
    query_service_name: str | None = None
    """Name KAITO v1alpha1 gave the query Service; kept, not used by this operator."""
    index_service_name: str | None = None
    """Name KAITO v1alpha1 gave the index Service; kept, not used by this operator."""


class RAGEngineV1Alpha1(KubeObject):
    """A RAGEngine as ``kaito.sh/v1alpha1`` serves it (deprecated; stored as v1beta1)."""

    api_info: ClassVar[ApiInfo] = RAGEngine.api_info

    api_version: Literal["kaito.sh/v1alpha1"] = V1ALPHA1
    """Versioned schema of this object: ``kaito.sh/v1alpha1``."""
    kind: Literal["RAGEngine"] = "RAGEngine"
    """Kind of this object: ``RAGEngine``."""
    spec: RAGEngineV1Alpha1Spec
    """Desired state."""
    status: RAGEngineStatus | None = None
    """Observed state, written by the operator."""


def to_v1beta1(obj: RAGEngineV1Alpha1) -> RAGEngine:
    """The v1beta1 RAGEngine of a v1alpha1 one (v1alpha1-only fields in an annotation)."""
    return RAGEngine.from_manifest(convert_manifest(obj.to_manifest(), V1BETA1))


def to_v1alpha1(obj: RAGEngine) -> RAGEngineV1Alpha1:
    """The v1alpha1 RAGEngine of a v1beta1 one (v1beta1-only fields in an annotation)."""
    return RAGEngineV1Alpha1.from_manifest(convert_manifest(obj.to_manifest(), V1ALPHA1))


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
