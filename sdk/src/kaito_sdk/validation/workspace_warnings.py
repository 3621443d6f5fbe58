"""Where we know better than KAITO's webhook, we warn rather than refuse.

KAITO admits a gated model without a token Secret, an adapter ``strength`` under the
vLLM runtime and a deprecated preset. So do we (a KAITO manifest must apply unchanged),
but each gets a :class:`FieldWarning` that says what will happen and how to avoid it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from kaito_sdk.api import PresetSpec, Workspace
from kaito_sdk.labels import ANNOTATION_RUNTIME, RUNTIME_TRANSFORMERS, RUNTIME_VLLM
from kaito_sdk.presets import Preset, UnknownPresetError, resolve_preset
from kaito_sdk.validation.errors import FieldWarning
from kaito_sdk.validation.workspace import workspace_runtime

__all__ = ["workspace_warnings"]


def workspace_warnings(workspace: Workspace) -> Iterator[FieldWarning]:
    """Every warning for ``workspace``; rules it breaks are errors, never warnings."""
    inference_preset: Preset | None = None
    if workspace.inference is not None and workspace.inference.preset is not None:
        spec = workspace.inference.preset
        inference_preset = _known(spec)
        if inference_preset is not None:
            yield from _preset_warnings("inference.preset", spec, inference_preset)
    if workspace.tuning is not None and workspace.tuning.preset is not None:
        tuning_preset = _known(workspace.tuning.preset)
        if tuning_preset is not None:
            yield from _preset_warnings("tuning.preset", workspace.tuning.preset, tuning_preset)
    if workspace.inference is None:
        return
    if workspace_runtime(workspace, inference_preset) != RUNTIME_VLLM:
        return
    for index, adapter in enumerate(workspace.inference.adapters or []):
        strength = _number(adapter.strength)
        if strength is None or strength == 1.0:
            continue
        yield FieldWarning(
            f"inference.adapters[{index}].strength",
            f"{adapter.strength} is ignored by the vLLM runtime: vLLM applies a LoRA adapter "
            f"at full strength (1.0). To scale it, set the {ANNOTATION_RUNTIME}: "
            f"{RUNTIME_TRANSFORMERS} annotation",
        )


def _known(spec: PresetSpec) -> Preset | None:
    """The catalog preset ``spec`` names; None when the name is empty or unknown (an error)."""
    if not spec.name.strip():
        return None
    try:
        return resolve_preset(spec.name)
    except UnknownPresetError:
        return None


def _preset_warnings(path: str, spec: PresetSpec, preset: Preset) -> Iterator[FieldWarning]:
    if preset.deprecated:
        yield FieldWarning(
            f"{path}.name",
            f"preset {spec.name!r} is deprecated: it is still served, and stays in the "
            "catalog only so that old manifests keep working; prefer a current model "
            "(`kaito presets`)",
        )
    options = spec.preset_options
    if preset.gated and not (options is not None and options.model_access_secret):
        yield FieldWarning(
            f"{path}.presetOptions.modelAccessSecret",
            f"is not set, but {preset.hf_id} is gated on Hugging Face: the weight download "
            "will be refused (401/403) and the pods will not become ready. Name a Secret "
            "with key HF_TOKEN from an account that accepted the model's terms",
        )


def _number(text: str | None) -> float | None:
    """``text`` as a strength in [0, 1], or None (anything else is an error, reported
    by the rules)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None
