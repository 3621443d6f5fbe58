"""KAITO's ``inference_config.yaml``: the ConfigMap a Workspace's ``inference.config`` names.

Keys (reference §4.3): ``max_probe_steps`` (legacy, accepted and unused),
``kv_cache_cpu_memory_utilization`` (0..1, default 0.5; 0 disables CPU KV offload), a
``vllm:`` map of vLLM engine-argument names to values (appended after the operator's flags,
so the user wins), and a ``transformers:`` map for this project's transformers runtime.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "CONFIG_KEY",
    "RESERVED_VLLM_KEYS",
    "InferenceConfig",
    "InferenceConfigError",
    "TransformersRuntimeConfig",
    "load_inference_config",
    "parse_inference_config",
    "vllm_args",
]

#: The ConfigMap data key that holds the file.
CONFIG_KEY: Final = "inference_config.yaml"
#: vLLM arguments the pod contract owns: overriding them would break probes or routing.
RESERVED_VLLM_KEYS: Final = frozenset({"port", "host", "model", "served-model-name"})
_VLLM_KEY = re.compile(r"^[a-z][a-z0-9]*([-_.][a-z0-9]+)*$")

VllmValue = str | int | float | bool | list[str | int | float] | dict[str, Any] | None


class InferenceConfigError(ValueError):
    """The file is not a valid inference config; ``errors`` holds ``(key, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors))


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class TransformersRuntimeConfig(BaseModel):
    """Settings of the transformers runtime (kebab-case or snake_case keys)."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True)

    max_model_len: int | None = Field(default=None, ge=16)
    """Prompt plus completion tokens one request may use."""
    max_running: int | None = Field(default=None, ge=1)
    """Sequences decoded together in one batch."""
    max_waiting: int | None = Field(default=None, ge=0)
    """Queued requests before the server answers 429."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    """Weight and compute dtype."""
    weights: Literal["auto", "float32", "bfloat16", "int8", "int4", "w8a8"] | None = None
    """Weight format of the fast CPU decoder (``auto``: the fastest within 2% perplexity
    of float32; ``int8``/``int4``: weight-only quantized; ``w8a8``: int8 weights and
    activations)."""


class InferenceConfig(BaseModel):
    """The parsed ``inference_config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    max_probe_steps: int | None = Field(default=None, ge=0)
    """Legacy: accepted for compatibility, not used."""
    kv_cache_cpu_memory_utilization: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of free host RAM for CPU KV-cache offload; 0 disables it."""
    vllm: dict[str, VllmValue] = Field(default_factory=dict)
    """vLLM engine arguments (``max-model-len: 4096``), appended after the operator's flags."""
    transformers: TransformersRuntimeConfig = Field(default_factory=TransformersRuntimeConfig)
    """Settings of the transformers runtime."""

    @field_validator("vllm")
    @classmethod
    def _check_vllm_keys(cls, value: dict[str, VllmValue]) -> dict[str, VllmValue]:
        for key in value:
            if not _VLLM_KEY.match(key):
                raise ValueError(f"{key!r} is not a vLLM argument name (like max-model-len)")
            if _kebab(key) in RESERVED_VLLM_KEYS:
                raise ValueError(f"{key!r} is set by the operator and cannot be overridden")
        return value

    def max_model_len(self) -> int | None:
        """``max-model-len`` from the ``vllm`` map (the estimator sizes the KV cache by it)."""
        for key in ("max-model-len", "max_model_len"):
            value = self.vllm.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return self.transformers.max_model_len


def parse_inference_config(text: str) -> InferenceConfig:
    """Parse and validate the YAML text; :class:`InferenceConfigError` names each bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InferenceConfigError([(CONFIG_KEY, f"not valid YAML: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InferenceConfigError([(CONFIG_KEY, "must be a mapping of keys to values")])
    try:
        return InferenceConfig.model_validate(data)
    except ValidationError as exc:
        errors = [
            (".".join(str(part) for part in err["loc"]) or CONFIG_KEY, _message(err))
            for err in exc.errors()
        ]
        raise InferenceConfigError(errors) from None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return str(err["msg"]).removeprefix("Value error, ")


def load_inference_config(path: Path) -> InferenceConfig:
    """Read and parse ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InferenceConfigError([(str(path), f"cannot be read: {exc.strerror}")]) from None
    return parse_inference_config(text)


def vllm_args(config: InferenceConfig) -> list[str]:
    """The ``vllm:`` map as command-line flags, in file order.

    ``true`` gives ``--flag``, ``false`` ``--no-flag``, a list its values after the flag,
    a mapping its JSON; ``null`` leaves the flag out.
    """
    argv: list[str] = []
    for key, value in config.vllm.items():
        flag = f"--{_kebab(key)}"
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{_kebab(key)}")
        elif isinstance(value, list):
            argv += [flag, *(str(item) for item in value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value, separators=(",", ":"))]
        else:
            argv += [flag, str(value)]
    return argv
