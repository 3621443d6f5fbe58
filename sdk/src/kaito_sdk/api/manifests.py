"""Manifest I/O: turn dicts and YAML into typed KAITO objects and back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from kaito_sdk.api.base import KubeObject
from kaito_sdk.api.ragengine import RAGEngine
from kaito_sdk.api.workspace import Workspace

__all__ = ["KINDS", "KaitoObject", "ManifestError", "dump_yaml", "load_yaml", "parse_manifest"]

KaitoObject = Workspace | RAGEngine
#: Every kind this SDK models, keyed by ``(apiVersion, kind)``.
KINDS: dict[tuple[str, str], type[Workspace] | type[RAGEngine]] = {
    (model.api_info.api_version, model.api_info.kind): model for model in (Workspace, RAGEngine)
}


class ManifestError(ValueError):
    """A manifest that is not a KAITO object this SDK knows, or a YAML document that fails."""


def parse_manifest(manifest: dict[str, Any]) -> KaitoObject:
    """Parse a manifest into :class:`Workspace` or :class:`RAGEngine` by its apiVersion/kind.

    Raises :class:`ManifestError` for anything that is not a known KAITO kind, and
    :class:`pydantic.ValidationError` (a ``ValueError`` too) for bad or unknown fields.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"a manifest must be a mapping, not {type(manifest).__name__}")
    api_version = manifest.get("apiVersion")
    kind = manifest.get("kind")
    if not api_version or not kind:
        raise ManifestError("apiVersion and kind are required to tell which kind this is")
    model = KINDS.get((str(api_version), str(kind)))
    if model is None:
        known = ", ".join(f"{v} {k}" for v, k in KINDS)
        raise ManifestError(f"unknown kind {api_version} {kind}; known kinds: {known}")
    return model.from_manifest(manifest)


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
