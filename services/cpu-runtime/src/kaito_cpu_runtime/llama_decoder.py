"""A lean forward pass for Llama-family decoders on CPU: the batcher's fast path.

Hugging Face's modelling code runs about forty small tensor operations and a dozen
``nn.Module`` calls per decoder layer and reads every projection's weights separately.
This module runs the same mathematics with fewer, larger operations:

- the query/key/value projections and the gate/up projections are fused, so each layer
  makes four matrix multiplications instead of seven, all through oneDNN with weights
  prepacked once; with bfloat16 linears (the inference service's ``--dtype bfloat16``)
  the packed weights are bfloat16 (on CPUs
  with AVX512-BF16 or AMX about 1.5x faster; activations, norms, attention and
  accumulation stay float32), otherwise float32;
- RMSNorm is ``torch.nn.functional.rms_norm``; the rotary embedding is applied to
  queries and keys together; residual additions happen in place;
- only the last position of each row goes through the final norm and the LM head;
- LoRA adapters (plain LoRA, as PEFT attached them) are applied per row on top of the
  fused projections, so a batch mixing adapters and the base model stays one pass and
  base rows compute exactly what they compute without adapters.

The KV cache is the batcher's own (:mod:`kaito_cpu_runtime.kvcache`), so merging,
padding and dropping rows work the same on both paths. :meth:`FastDecoder.build` returns
``None`` (with the reason logged) for models it does not reproduce exactly; those use the
transformers forward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from kaito_cpu_runtime.linear import PackedLinear

__all__ = ["FastDecoder", "LoraUpdate", "read_lora"]

log = logging.getLogger(__name__)
SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2"})
LoraTable = dict[tuple[int, str, int], dict[str, "LoraUpdate"]]


@dataclass(frozen=True)
class LoraUpdate:
    """One adapter's low-rank update of one projection: ``(x @ A.T) @ B.T (+ b)``, scaled."""

    down: torch.Tensor
    up: torch.Tensor
    up_bias: torch.Tensor | None
    scale: float

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update for float32 ``x``."""
        hidden = functional.linear(x, self.down)
        return functional.linear(hidden, self.up, self.up_bias) * self.scale


# Where each PEFT target lands in the fused layers: (fused layer, part index).
_TARGETS = {
    "q_proj": ("qkv", 0),
    "k_proj": ("qkv", 1),
    "v_proj": ("qkv", 2),
    "o_proj": ("out", 0),
    "gate_proj": ("gate_up", 0),
    "up_proj": ("gate_up", 1),
    "down_proj": ("down", 0),
}


def read_lora(model: Any) -> LoraTable | None:
    """Plain LoRA weights of a PEFT model, keyed by (layer, fused layer, part), then adapter.

    ``None`` when an adapter uses anything else (DoRA and other variants, merged weights,
    targets outside the decoder layers' projections).
    """
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415  (only with adapters)

    table: LoraTable = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        parts = name.split(".")
        target = _TARGETS.get(parts[-1])
        if target is None or "layers" not in parts or module.merged or module.lora_variant:
            return None
        layer = int(parts[parts.index("layers") + 1])
        entries = table.setdefault((layer, *target), {})
        down: Any
        for adapter, down in module.lora_A.items():
            up: Any = module.lora_B[adapter]
            scale = float(module.scaling[adapter])
            entries[adapter] = LoraUpdate(down.weight, up.weight, up.bias, scale)
    return table


@dataclass
class _Layer:
    input_norm: torch.Tensor
    qkv: PackedLinear
    out: PackedLinear
    post_norm: torch.Tensor
    gate_up: PackedLinear
    down: PackedLinear


def _fused(linears: tuple[Any, ...], dtype: torch.dtype) -> PackedLinear:
    """One packed layer computing every ``nn.Linear`` in ``linears`` side by side."""
    bias = None
    if any(m.bias is not None for m in linears):
        parts = [m.weight.new_zeros(m.out_features) if m.bias is None else m.bias for m in linears]
        bias = torch.cat(parts)
    weight = torch.cat([m.weight for m in linears])
    return PackedLinear(weight, bias, dtype, tuple(m.out_features for m in linears))


def _unsupported(model: Any) -> str | None:
    """Why ``model`` cannot take the fast path, or ``None`` when it can."""
    config = model.config
    weights = next(model.parameters())
    sliding = getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", True
    )
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]  # unannotated in torch
    checks = (
        (getattr(config, "model_type", None) in SUPPORTED_TYPES, "its model type"),
        (not hasattr(model, "peft_config"), "it is wrapped by PEFT"),
        (getattr(config, "hidden_act", "silu") == "silu", "its activation"),
        (not sliding, "sliding-window attention"),
        (weights.device.type == "cpu", "the model is not on CPU"),
        (weights.dtype == torch.float32, "the model is not float32"),
        (mkldnn, "oneDNN is unavailable"),
    )
    return next((reason for ok, reason in checks if not ok), None)


class FastDecoder:
    """Runs a Llama-family causal LM forward for the batcher (see the module docstring)."""

    def __init__(self, model: Any, linear_dtype: torch.dtype) -> None:
        config = model.config
        inner = model.model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = float(config.rms_norm_eps)
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.final_norm = inner.norm.weight
        self.linear_dtype = linear_dtype
        self.lm_head = PackedLinear(model.lm_head.weight, model.lm_head.bias, linear_dtype)
        self.layers = [
            _Layer(
                input_norm=layer.input_layernorm.weight,
                qkv=_fused(
                    (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                    linear_dtype,
                ),
                out=_fused((layer.self_attn.o_proj,), linear_dtype),
                post_norm=layer.post_attention_layernorm.weight,
                gate_up=_fused((layer.mlp.gate_proj, layer.mlp.up_proj), linear_dtype),
                down=_fused((layer.mlp.down_proj,), linear_dtype),
            )
            for layer in inner.layers
        ]
        self._lora: LoraTable = {}
        self._serves_adapters = True

    @classmethod
    def build(cls, model: Any, linear_dtype: torch.dtype = torch.float32) -> FastDecoder | None:
        """A fast decoder for the plain (not yet PEFT-wrapped) ``model``, or ``None``."""
        reason = _unsupported(model)
        if reason is not None:
            log.info("fast CPU decoder off: %s", reason)
            return None
        try:
            with torch.inference_mode():
                return cls(model, linear_dtype)
        except (RuntimeError, AttributeError) as exc:
            log.warning("fast CPU decoder unavailable (%s); using the transformers forward", exc)
            return None

    def use_adapters(self, model: Any) -> bool:
        """Read the LoRA adapters now attached to ``model`` (after every load or unload).

        False when one of them is not plain LoRA: the batcher then runs that model through
        the transformers forward.
        """
        table = read_lora(model) if hasattr(model, "peft_config") else {}
        self._serves_adapters = table is not None
        self._lora = table or {}
        if not self._serves_adapters:
            log.info("fast CPU decoder off while a non-LoRA adapter is attached")
        return self._serves_adapters

    def applies_to(self, model: Any) -> bool:
        """Whether the fast path can run ``model`` as it is now."""
        return self._serves_adapters or not hasattr(model, "peft_config")

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        adapters: list[str | None] | None = None,
    ) -> torch.Tensor:
        """Logits (float32) of the last position of every row; appends to ``cache``.

        ``attention_mask`` covers the cached tokens plus the new ones (1 = real token,
        left padding is 0), as in the Hugging Face forward. ``adapters`` names each row's
        LoRA adapter (``None``: the base model).
        """
        rows = self._adapter_rows(adapters)
        batch, length = input_ids.shape
        hidden = self.embed(input_ids).float()
        cos, sin = self.rotary(hidden, position_ids)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        mask = self._attention_mask(attention_mask, length)
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        qk_width = (heads + kv_heads) * dim
        half = dim // 2
        norm_shape = (self.hidden_size,)
        size = self.intermediate_size
        for index, layer in enumerate(self.layers):
            normed = functional.rms_norm(hidden, norm_shape, layer.input_norm, self.eps)
            qkv = self._project(layer.qkv, normed, rows, index, "qkv")
            qk = qkv[..., :qk_width].view(batch, length, heads + kv_heads, dim)
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            query = qk[:, :, :heads].transpose(1, 2)
            key = qk[:, :, heads:].transpose(1, 2)
            value = qkv[..., qk_width:].view(batch, length, kv_heads, dim).transpose(1, 2)
            key, value = cache.layers[index].update(key, value)
            attended = functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, enable_gqa=heads != kv_heads
            )
            attended = attended.transpose(1, 2).reshape(batch, length, heads * dim)
            hidden += self._project(layer.out, attended, rows, index, "out")
            normed = functional.rms_norm(hidden, norm_shape, layer.post_norm, self.eps)
            gate_up = self._project(layer.gate_up, normed, rows, index, "gate_up")
            activated = functional.silu(gate_up[..., :size]) * gate_up[..., size:]
            hidden += self._project(layer.down, activated, rows, index, "down")
        last = functional.rms_norm(hidden[:, -1, :], norm_shape, self.final_norm, self.eps)
        return self.lm_head(last)

    def _adapter_rows(self, adapters: list[str | None] | None) -> dict[str, torch.Tensor | None]:
        """The rows of each adapter in this batch (``None``: every row)."""
        if not self._lora or not adapters or all(a is None for a in adapters):
            return {}
        if len(set(adapters)) == 1:
            return {str(adapters[0]): None}
        rows: dict[str, list[int]] = {}
        for row, adapter in enumerate(adapters):
            if adapter is not None:
                rows.setdefault(adapter, []).append(row)
        return {adapter: torch.tensor(indices) for adapter, indices in rows.items()}

    def _project(
        self,
        linear: PackedLinear,
        x: torch.Tensor,
        rows: dict[str, torch.Tensor | None],
        layer: int,
        fused: str,
    ) -> torch.Tensor:
        """``linear(x)`` plus each row's LoRA update of the projections fused into it."""
        out = linear(x)
        for adapter, selected in rows.items():
            start = 0
            for part, width in enumerate(linear.part_sizes):
                lora = self._lora.get((layer, fused, part), {}).get(adapter)
                if lora is not None and selected is None:
                    out[..., start : start + width] += lora.delta(x)
                elif lora is not None:
                    out[selected, :, start : start + width] += lora.delta(x[selected])
                start += width
        return out

    @staticmethod
    def _attention_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """Boolean ``[batch, 1, length, total]``: causal, no padding keys; a padding query
        sees itself so no row is empty (an empty row would put NaN into the cache)."""
        keys = attention_mask.bool()[:, None, None, :]
        if length == 1:
            return keys
        total = attention_mask.shape[1]
        query_pos = torch.arange(total - length, total, device=attention_mask.device)[:, None]
        key_pos = torch.arange(total, device=attention_mask.device)[None, :]
        return ((key_pos <= query_pos) & keys) | (key_pos == query_pos)
