"""KAITO's ``kaito.sh/v1alpha1`` RAGEngine and its lossless conversion to and from v1beta1.

The models live beside the v1beta1 ones in :mod:`kaito_sdk.api.ragengine` (so that
``RAGEngine.from_manifest`` takes both versions) and are re-exported here. The v1alpha1
spec is the v1beta1 :class:`~kaito_sdk.api.ragengine.RAGEngineSpec` with two differences,
as in KAITO: ``storage`` is flat (``persistentVolumeClaim``, ``mountPath``; no
``vectorDB``) and ``queryServiceName`` / ``indexServiceName`` exist. The conversion works
on manifests (:func:`~kaito_sdk.api.conversion.convert_manifest`, re-exported here) and
loses nothing: a field one version cannot hold is kept, as JSON, in an annotation of the
converted object (:data:`V1ALPHA1_FIELDS` on a v1beta1 object, :data:`V1BETA1_FIELDS` on a
v1alpha1 one) and put back when the object is converted back, so a round trip is exact.
"""

from __future__ import annotations

from kaito_sdk.api.conversion import (
    V1ALPHA1,
    V1ALPHA1_FIELDS,
    V1BETA1,
    V1BETA1_FIELDS,
    ConversionError,
    convert_manifest,
)
from kaito_sdk.api.ragengine import (
    FlatStorageSpec,
    RAGEngine,
    RAGEngineV1Alpha1,
    RAGEngineV1Alpha1Spec,
)

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


def to_v1beta1(obj: RAGEngineV1Alpha1) -> RAGEngine:
    """The v1beta1 RAGEngine of a v1alpha1 one (v1alpha1-only fields in an annotation)."""
    return RAGEngine.model_validate(convert_manifest(obj.to_manifest(), V1BETA1))


def to_v1alpha1(obj: RAGEngine) -> RAGEngineV1Alpha1:
    """The v1alpha1 RAGEngine of a v1beta1 one (v1beta1-only fields in an annotation)."""
    return RAGEngineV1Alpha1.from_manifest(convert_manifest(obj.to_manifest(), V1ALPHA1))
