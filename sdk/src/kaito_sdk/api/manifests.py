"""Manifest I/O: turn dicts and YAML into typed KAITO objects and back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from kaito_sdk.api.base import KubeObject
from kaito_sdk.api.inferenceset import InferenceSet
from kaito_sdk.api.ragengine import RAGEngine
from kaito_sdk.api.ragengine_v1alpha1 import RAGEngineV1Alpha1, to_v1beta1
from kaito_sdk.api.workspace import Workspace

__all__ = [
    "KINDS",
    "NOT_SUPPORTED_KINDS",
    "KaitoObject",
    "ManifestError",
    "dump_yaml",
    "kaito_kind_problem",
    "load_yaml",
    "parse_manifest",
]

KaitoObject = Workspace | RAGEngine | InferenceSet
KaitoModel = type[Workspace] | type[RAGEngine] | type[RAGEngineV1Alpha1] | type[InferenceSet]
#: The model of every served version of every kind, keyed by ``(apiVersion, kind)``:
#: Workspace and InferenceSet have one schema (one model) in ``kaito.sh/v1alpha1`` and
#: ``kaito.sh/v1beta1``; the v1alpha1 RAGEngine has its own (flat storage).
KINDS: dict[tuple[str, str], KaitoModel] = {
    (api_version, model.api_info.kind): model
    for model in (Workspace, RAGEngine, InferenceSet)
    for api_version in model.api_info.api_versions
}
KINDS[(RAGEngineV1Alpha1.api_info.group + "/v1alpha1", "RAGEngine")] = RAGEngineV1Alpha1


#: KAITO kinds this project does not serve yet, and why (``kaito validate`` says so
#: rather than calling them unknown).
NOT_SUPPORTED_KINDS: dict[str, str] = {
    "MultiRoleInference": (
        "prefill/decode disaggregation (two InferenceSets joined by an llm-d router and "
        "NIXL KV transfer) is not implemented by this operator; serve the model with a "
        "Workspace or an InferenceSet instead"
    ),
    "ModelMirror": (
        "pre-downloading weights to a blob-backed volume is not implemented; the "
        "inference pods download the weights themselves"
    ),
    "AutoIndexer": (
        "scheduled indexing jobs are not implemented; send documents to the RAG "
        "engine's /index endpoint"
    ),
}


class ManifestError(ValueError):
    """A manifest that is not a KAITO object this SDK knows, or a YAML document that fails."""


def parse_manifest(manifest: dict[str, Any]) -> KaitoObject:
    """Parse a manifest into :class:`Workspace`, :class:`RAGEngine` or :class:`InferenceSet`
    by its apiVersion/kind.

    A v1alpha1 RAGEngine is validated against its own schema and returned converted to
    v1beta1 (what the API server stores; fields v1beta1 lacks are kept in an annotation),
    so that every consumer sees one RAGEngine model. Raises :class:`ManifestError` for
    anything that is not a known KAITO kind, and
    :class:`pydantic.ValidationError` (a ``ValueError`` too) for bad or unknown fields.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"a manifest must be a mapping, not {type(manifest).__name__}")
    api_version = manifest.get("apiVersion")
    kind = manifest.get("kind")
    if not api_version or not kind:
        raise ManifestError("apiVersion and kind are required to tell which kind this is")
    problem = kaito_kind_problem(str(api_version), str(kind))
    if problem is not None:
        raise ManifestError(problem)
    obj = KINDS[(str(api_version), str(kind))].from_manifest(manifest)
    if isinstance(obj, RAGEngineV1Alpha1):
        return to_v1beta1(obj)
    return obj


def kaito_kind_problem(api_version: str, kind: str) -> str | None:
    """Why ``api_version``/``kind`` cannot be parsed here, or None for a kind in :data:`KINDS`.

    A KAITO kind in :data:`NOT_SUPPORTED_KINDS` is named as not supported yet, with the
    reason; anything else as unknown, with the known kinds.
    """
    if (api_version, kind) in KINDS:
        return None
    if kind in NOT_SUPPORTED_KINDS and api_version.startswith("kaito.sh/"):
        return f"{kind} is not supported yet: {NOT_SUPPORTED_KINDS[kind]}"
    known = ", ".join(f"{v} {k}" for v, k in KINDS)
    return f"unknown kind {api_version} {kind}; known kinds: {known}"


def load_yaml(text: str) -> list[KaitoObject]:
    """Parse every document of a (multi-document) YAML text; empty documents are skipped.

    Raises :class:`ManifestError` naming the failing document (1-based); the original
    error (a :class:`pydantic.ValidationError` for field errors) is its ``__cause__``.
    """
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}") from exc
    objects: list[KaitoObject] = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        try:
            objects.append(parse_manifest(document))
        except (ManifestError, ValidationError) as exc:
            raise ManifestError(f"document {number}: {exc}") from exc
    return objects


def dump_yaml(objects: KubeObject | Iterable[KubeObject]) -> str:
    """Write objects as a multi-document YAML text (keys in model order)."""
    items = [objects] if isinstance(objects, KubeObject) else list(objects)
    return yaml.safe_dump_all(
        [item.to_manifest() for item in items], sort_keys=False, allow_unicode=True
    )
