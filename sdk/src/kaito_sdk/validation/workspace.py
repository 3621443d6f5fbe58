"""KAITO's admission rules for a Workspace (``workspace_validation.go``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final

from kaito_sdk.api import (
    MAX_ADAPTERS,
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    PresetSpec,
    TuningSpec,
    Workspace,
)
from kaito_sdk.labels import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    ANNOTATION_PERFORMANCE_MODE,
    ANNOTATION_RUNTIME,
    RUNTIME_TRANSFORMERS,
    RUNTIME_VLLM,
)
from kaito_sdk.presets import Preset, UnknownPresetError, resolve_preset
from kaito_sdk.urls import UnsafeURLError, check_public_url
from kaito_sdk.validation.common import check_metadata, check_object_name, check_resource
from kaito_sdk.validation.errors import FieldError, dns1123_label_problem

__all__ = ["TUNING_METHODS", "check_workspace", "workspace_runtime"]

#: Tuning methods (compared case-insensitively).
TUNING_METHODS: Final = ("lora", "qlora")
_ANNOTATION_VALUES: Final = {
    ANNOTATION_RUNTIME: (RUNTIME_VLLM, RUNTIME_TRANSFORMERS),
    ANNOTATION_PERFORMANCE_MODE: ("balanced", "interactivity", "throughput"),
    ANNOTATION_NODE_IMAGE_FAMILY: ("ubuntu", "azurelinux"),
}
_CASE_INSENSITIVE_ANNOTATIONS: Final = frozenset({ANNOTATION_NODE_IMAGE_FAMILY})
_ACCESS_MODES: Final = ("public", "private")


def workspace_runtime(workspace: Workspace, preset: Preset | None = None) -> str:
    """The runtime serving ``workspace``: the ``kaito.sh/runtime`` annotation, else the
    preset's default runtime, else vLLM."""
    annotations = workspace.metadata.annotations or {}
    if ANNOTATION_RUNTIME in annotations:
        return annotations[ANNOTATION_RUNTIME]
    return str(preset.default_runtime) if preset is not None else RUNTIME_VLLM


def check_workspace(workspace: Workspace) -> Iterator[FieldError]:
    """Every create-time rule for ``workspace``."""
    yield from check_metadata(workspace.metadata)
    yield from _check_annotations(workspace.metadata.annotations or {})
    if (workspace.inference is None) == (workspace.tuning is None):
        state = "both are set" if workspace.inference is not None else "neither is set"
        yield FieldError("inference", f"exactly one of inference and tuning is required; {state}")
    tuning = workspace.tuning is not None and workspace.inference is None
    yield from check_resource("resource", workspace.resource, tuning=tuning)
    if workspace.inference is not None:
        yield from _check_inference(workspace, workspace.inference)
    if workspace.tuning is not None:
        yield from _check_tuning(workspace.tuning)


def _check_annotations(annotations: dict[str, str]) -> Iterator[FieldError]:
    for key, allowed in _ANNOTATION_VALUES.items():
        value = annotations.get(key)
        if value is not None and key in _CASE_INSENSITIVE_ANNOTATIONS:
            value = value.lower()  # KAITO normalises the image family (AzureLinux)
        if value is not None and value not in allowed:
            yield FieldError(
                f"metadata.annotations[{key}]",
                f"{value!r} is not one of {', '.join(allowed)}",
            )


def _resolve(path: str, preset: PresetSpec) -> tuple[Preset | None, list[FieldError]]:
    """The catalog entry for ``preset``, or the errors that say why there is none."""
    if not preset.name.strip():
        return None, [FieldError(f"{path}.name", "is required")]
    try:
        found = resolve_preset(preset.name)
    except UnknownPresetError as exc:
        return None, [FieldError(f"{path}.name", str(exc))]
    errors: list[FieldError] = []
    if preset.access_mode is not None and preset.access_mode not in _ACCESS_MODES:
        errors.append(
            FieldError(f"{path}.accessMode", f"must be one of {', '.join(_ACCESS_MODES)}")
        )
    options = preset.preset_options
    secret = options.model_access_secret if options is not None else None
    if secret:
        errors.extend(
            check_object_name(f"{path}.presetOptions.modelAccessSecret", secret, required=False)
        )
    return found, errors


def _check_inference(workspace: Workspace, inference: InferenceSpec) -> Iterator[FieldError]:
    preset: Preset | None = None
    if inference.preset is not None and inference.template is not None:
        yield FieldError("inference", "preset and template are mutually exclusive; set only one")
    elif inference.preset is None and inference.template is None:
        yield FieldError("inference", "one of preset or template is required")
    if inference.preset is not None:
        preset, errors = _resolve("inference.preset", inference.preset)
        yield from errors
    if inference.template is not None:
        yield from _check_template(inference.template)
    yield from check_object_name("inference.config", inference.config, required=False)
    adapters = inference.adapters or []
    if len(adapters) > MAX_ADAPTERS:
        yield FieldError(
            "inference.adapters",
            f"at most {MAX_ADAPTERS} adapters allowed, got {len(adapters)}",
        )
    runtime = workspace_runtime(workspace, preset)
    if preset is not None and runtime in (RUNTIME_VLLM, RUNTIME_TRANSFORMERS):
        served_by = [str(r) for r in preset.runtimes]
        if runtime not in served_by:
            yield FieldError(
                f"metadata.annotations[{ANNOTATION_RUNTIME}]",
                f"runtime {runtime} cannot serve {preset.name}; it runs on {', '.join(served_by)}",
            )
    seen: set[str] = set()
    for index, adapter in enumerate(adapters):
        yield from _check_adapter(f"inference.adapters[{index}]", adapter, seen)


def _check_template(template: dict[str, object]) -> Iterator[FieldError]:
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list) or not containers:
        yield FieldError(
            "inference.template.spec.containers",
            "a pod template needs at least one container",
        )


def _check_adapter(path: str, adapter: AdapterSpec, seen: set[str]) -> Iterator[FieldError]:
    source = adapter.source
    if source is None:
        yield FieldError(f"{path}.source", "is required")
    else:
        if not source.name:
            yield FieldError(f"{path}.source.name", "is required")
        else:
            problem = dns1123_label_problem(source.name)
            if problem:
                yield FieldError(f"{path}.source.name", f"{problem}; it names a container")
            if source.name in seen:
                yield FieldError(f"{path}.source.name", f"duplicate adapter name {source.name!r}")
            seen.add(source.name)
        if source.urls:
            yield FieldError(f"{path}.source.urls", "are not supported for adapters")
        if bool(source.image) == bool(source.volume_source):
            yield FieldError(
                f"{path}.source", "exactly one of image or volumeSource is required for an adapter"
            )
    if adapter.strength is not None:
        yield from _check_strength(f"{path}.strength", adapter.strength)


def _check_strength(path: str, strength: str) -> Iterator[FieldError]:
    try:
        value = float(strength)
    except ValueError:
        yield FieldError(path, f"{strength!r} is not a number")
        return
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        yield FieldError(path, f"must be between 0 and 1, got {strength}")


def _check_tuning(tuning: TuningSpec) -> Iterator[FieldError]:
    if tuning.preset is None:
        yield FieldError("tuning.preset", "is required")
    else:
        preset, errors = _resolve("tuning.preset", tuning.preset)
        yield from errors
        if preset is not None and not preset.tunable:
            yield FieldError(
                "tuning.preset.name", f"preset {tuning.preset.name!r} does not support tuning"
            )
    if not tuning.method:
        yield FieldError("tuning.method", f"is required ({' or '.join(TUNING_METHODS)})")
    elif tuning.method.lower() not in TUNING_METHODS:
        yield FieldError(
            "tuning.method", f"{tuning.method!r} is not one of {', '.join(TUNING_METHODS)}"
        )
    yield from check_object_name("tuning.config", tuning.config, required=False)
    if tuning.input is None:
        yield FieldError("tuning.input", "is required")
    else:
        yield from _check_input(tuning.input)
    if tuning.output is None:
        yield FieldError("tuning.output", "is required")
    else:
        yield from _check_output(tuning.output)


def _check_input(source: DataSource) -> Iterator[FieldError]:
    given = [
        name
        for name, value in (
            ("urls", source.urls),
            ("image", source.image),
            ("volumeSource", source.volume_source),
        )
        if value
    ]
    if len(given) != 1:
        state = f"got {', '.join(given)}" if given else "got none"
        yield FieldError(
            "tuning.input", f"exactly one of urls, image or volumeSource is required; {state}"
        )
    for index, url in enumerate(source.urls or []):
        try:
            check_public_url(url)
        except UnsafeURLError as exc:
            yield FieldError(f"tuning.input.urls[{index}]", str(exc))


def _check_output(destination: DataDestination) -> Iterator[FieldError]:
    if bool(destination.image) == bool(destination.volume_source):
        yield FieldError("tuning.output", "exactly one of image or volumeSource is required")
    if destination.image and not destination.image_push_secret:
        yield FieldError("tuning.output.imagePushSecret", "is required when output.image is set")
    if destination.image_push_secret:
        yield from check_object_name(
            "tuning.output.imagePushSecret", destination.image_push_secret, required=False
        )
