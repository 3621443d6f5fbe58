"""KAITO's admission rules for a RAGEngine (``ragengine_validation.go``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from kaito_sdk.api import EmbeddingSpec, RAGEngine, StorageSpec
from kaito_sdk.validation.common import (
    check_metadata,
    check_object_name,
    check_resource,
    check_url_syntax,
)
from kaito_sdk.validation.errors import FieldError, FieldWarning

__all__ = ["check_ragengine", "ragengine_warnings"]

# repo/name:tag, optionally with a registry host (and port) and deeper repository paths.
_IMAGE_WITH_TAG: Final = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)


def check_ragengine(engine: RAGEngine) -> Iterator[FieldError]:
    """Every create-time rule for ``engine``."""
    yield from check_metadata(engine.metadata)
    spec = engine.spec
    if spec.compute is not None:
        yield from check_resource("spec.compute", spec.compute, tuning=False)
    yield from _check_embedding(spec.embedding)
    service = spec.inference_service
    if service is not None:
        if service.url:  # without a URL the engine is retrieve-only, as in KAITO
            yield from check_url_syntax("spec.inferenceService.url", service.url)
        yield from check_object_name(
            "spec.inferenceService.accessSecret", service.access_secret, required=False
        )
        if service.context_window_size is None or service.context_window_size <= 0:
            yield FieldError(
                "spec.inferenceService.contextWindowSize",
                "must be greater than 0 when inferenceService is set, "
                f"got {service.context_window_size}",
            )
    if spec.storage is not None:
        yield from _check_storage(spec.storage)
    guardrails = spec.guardrails
    if guardrails is not None and guardrails.config_map_ref is not None:
        yield from check_object_name(
            "spec.guardrails.configMapRef.name", guardrails.config_map_ref.name
        )


def _check_embedding(embedding: EmbeddingSpec) -> Iterator[FieldError]:
    if (embedding.local is None) == (embedding.remote is None):
        state = "both are set" if embedding.local is not None else "neither is set"
        yield FieldError("spec.embedding", f"exactly one of local or remote is required; {state}")
    local = embedding.local
    if local is not None:
        if bool(local.image) == bool(local.model_id):
            yield FieldError("spec.embedding.local", "exactly one of image or modelID is required")
        if local.image and not _IMAGE_WITH_TAG.match(local.image):
            yield FieldError(
                "spec.embedding.local.image",
                f"{local.image!r} is not an image reference of the form repo/name:tag",
            )
        for field, secret in (
            ("imagePullSecret", local.image_pull_secret),
            ("modelAccessSecret", local.model_access_secret),
        ):
            yield from check_object_name(f"spec.embedding.local.{field}", secret, required=False)
    if embedding.remote is not None:
        yield from check_url_syntax("spec.embedding.remote.url", embedding.remote.url)
        yield from check_object_name(
            "spec.embedding.remote.accessSecret", embedding.remote.access_secret, required=False
        )


def _check_storage(storage: StorageSpec) -> Iterator[FieldError]:
    volume = storage.persistent_volume
    if volume is not None:
        yield from check_object_name(
            "spec.storage.persistentVolume.persistentVolumeClaim", volume.persistent_volume_claim
        )
        if volume.mount_path is not None and not volume.mount_path.startswith("/"):
            yield FieldError(
                "spec.storage.persistentVolume.mountPath",
                f"must be an absolute path, got {volume.mount_path!r}",
            )
    database = storage.vector_db
    if database is not None:
        if not database.engine:
            yield FieldError("spec.storage.vectorDB.engine", "required")
        yield from check_url_syntax("spec.storage.vectorDB.url", database.url)
        yield from check_object_name(
            "spec.storage.vectorDB.accessSecret", database.access_secret, required=False
        )


def ragengine_warnings(engine: RAGEngine) -> Iterator[FieldWarning]:
    """What KAITO admits and kaito-ragengine will not do as asked (admitted, with a warning)."""
    spec = engine.spec
    database = spec.storage.vector_db if spec.storage is not None else None
    if database is not None:
        yield FieldWarning(
            "spec.storage.vectorDB",
            f"is ignored: kaito-ragengine does not use {database.engine!r}, it keeps vectors "
            "in its in-process FAISS store; add storage.persistentVolume to keep indexes "
            "across restarts",
        )
    service = spec.inference_service
    if service is not None and not service.url:
        yield FieldWarning(
            "spec.inferenceService.url",
            "not set: the engine is retrieve-only (/retrieve and the index endpoints work; "
            "RAG chat answers 503)",
        )
