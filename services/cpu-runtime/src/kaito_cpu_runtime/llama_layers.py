"""The layers of the fast Llama decoder (:mod:`kaito_cpu_runtime.llama_decoder`): its
weights as :class:`~kaito_cpu_runtime.decoder_weights.DecoderWeights` lays them out, the
embedding and rotary inputs of a pass, the decoder layers themselves (fused projections,
rotary embedding on queries and keys together, in-place residuals, per-row LoRA on top of
the fused projections) and the LM head. Attention is the caller's: each pass hands the
layers its own ``attend``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from kaito_cpu_runtime.compiled_step import Attend
from kaito_cpu_runtime.decoder_weights import DecoderWeights, Linear
from kaito_cpu_runtime.lora import LoraTable, read_lora
from kaito_cpu_runtime.quantized import QuantizedLinear

__all__ = ["AdapterRows", "DecoderLayer", "LlamaLayers"]

log = logging.getLogger(__name__)
#: LoRA rows of a pass: per adapter, the indices (into a ``[batch, length, ...]`` tensor)
#: of the rows it applies to, each index its own update.
AdapterRows = dict[str, list[tuple[Any, ...]]]


@dataclass
class DecoderLayer:
    """One decoder layer's norms and fused projections."""

    input_norm: torch.Tensor
    qkv: Linear
    out: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


class LlamaLayers:
    """The weights and layer mathematics of a Llama-family decoder;
    :class:`~kaito_cpu_runtime.llama_decoder.FastDecoder` adds the passes (decode steps,
    packed prefills) and their attention."""

    def __init__(self, model: Any, linear_dtype: torch.dtype, weights: DecoderWeights) -> None:
        config = model.config
        inner = model.model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.gqa = self.num_heads != self.num_kv_heads  # grouped-query attention
        self.eps = float(config.rms_norm_eps)
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.final_norm = inner.norm.weight
        self.linear_dtype = linear_dtype
        self.weights = weights.layers
        self.head_weights = weights.head_format
        #: Whether the LM head multiplies int8 activations (:mod:`kaito_cpu_runtime.int8_head`).
        self.int8_head_activations = weights.head_format == "int8" and (
            weights.head_float_channels is not None or weights.int_dot
        )
        self.activation_dtype = weights.activation_dtype
        #: Whether int4 layers and an int8 LM head multiply int8 activations on our integer
        #: kernels (:mod:`kaito_cpu_runtime.int_dot`).
        self.int_dot = weights.int_dot
        #: How many projections hold a GGUF file's Q4_1 blocks as they are.
        self.exact_q4_blocks = len(weights.blocks)
        #: Positions per sequence from which int8/int4 layers use their dense copy (0: never).
        self.dense_from_positions = weights.dense_from_positions
        self.dense_dtype = weights.dense_dtype
        self.lm_head = weights.head(model.lm_head)
        self.layers = [
            DecoderLayer(
                input_norm=layer.input_layernorm.weight,
                qkv=weights.fused(
                    (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
                ),
                out=weights.fused((layer.self_attn.o_proj,)),
                post_norm=layer.post_attention_layernorm.weight,
                gate_up=weights.fused((layer.mlp.gate_proj, layer.mlp.up_proj)),
                down=weights.fused((layer.mlp.down_proj,)),
            )
            for layer in inner.layers
        ]
        self._lora: LoraTable = {}
        self._serves_adapters = True

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

    @contextmanager
    def quantized_kernels_only(self) -> Iterator[None]:
        """Within the block every pass multiplies on the quantized kernels, as decode steps
        do, not on the dense copies prefills use (to score what decode steps compute)."""
        linears = [self.lm_head] + [
            linear
            for layer in self.layers
            for linear in (layer.qkv, layer.out, layer.gate_up, layer.down)
        ]
        saved = [(linear, linear.dense) for linear in linears
                 if isinstance(linear, QuantizedLinear)]  # fmt: skip
        for linear, _ in saved:
            linear.dense = None
        try:
            yield
        finally:
            for linear, dense in saved:
                linear.dense = dense

    def _inputs(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layers' inputs: the embeddings (float32) and the rotary embedding's ``cos``
        and ``signed_sin`` (``[batch, length, 1, head_dim]``)."""
        hidden: torch.Tensor = self.embed(input_ids).float()
        half = self.head_dim // 2
        cos, sin = self.rotary(hidden, position_ids)
        # rotate_half(x) * sin == roll(x, half) * sin with its first half negated (exactly:
        # negation is exact), one roll instead of two slices, a negation and a concatenation.
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return hidden, cos[:, :, None, :], signed_sin[:, :, None, :]

    def _stack(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        attend: Attend,
        rows: AdapterRows,
        *,
        layers: range | None = None,
    ) -> torch.Tensor:
        """The layers (all, or those numbered in ``layers``) applied to ``hidden`` (updated
        in place and returned), with the rotary embedding's ``cos`` and ``signed_sin``;
        ``attend(layer, query, key, value)`` caches the new keys and values and returns the
        attention output (``[batch, heads, length, head_dim]``)."""
        batch, length = hidden.shape[:2]
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        half = dim // 2
        qk_width = (heads + kv_heads) * dim
        norm_shape = (self.hidden_size,)
        size = self.intermediate_size
        # Projections whose result is only added to the float32 residual stream may stay in
        # the kernel's dtype (the in-place add widens it exactly), unless LoRA adds to them.
        widen = bool(rows)
        for index in range(len(self.layers)) if layers is None else layers:
            layer = self.layers[index]
            normed = functional.rms_norm(hidden, norm_shape, layer.input_norm, self.eps)
            qkv = self._project(layer.qkv, normed, rows, index, "qkv")
            qk = qkv[..., :qk_width].view(batch, length, heads + kv_heads, dim)
            qk = qk * cos + torch.roll(qk, half, -1) * signed_sin
            query = qk[:, :, :heads].transpose(1, 2)
            key = qk[:, :, heads:].transpose(1, 2)
            value = qkv[..., qk_width:].view(batch, length, kv_heads, dim).transpose(1, 2)
            attended = attend(index, query, key, value)
            attended = attended.transpose(1, 2).reshape(batch, length, heads * dim)
            hidden += self._project(layer.out, attended, rows, index, "out", widen=widen)
            normed = functional.rms_norm(hidden, norm_shape, layer.post_norm, self.eps)
            gate_up = self._project(layer.gate_up, normed, rows, index, "gate_up")
            activated = functional.silu(gate_up[..., :size]) * gate_up[..., size:]
            hidden += self._project(layer.down, activated, rows, index, "down", widen=widen)
        return hidden

    def _head(self, final: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of the final hidden states ``final``."""
        norm_shape = (self.hidden_size,)
        return self.lm_head(functional.rms_norm(final, norm_shape, self.final_norm, self.eps))

    def _adapter_rows(self, adapters: list[str | None] | None) -> AdapterRows:
        """The rows of each adapter in this batch, as one index into the batch dimension."""
        if not self._lora or not adapters or all(a is None for a in adapters):
            return {}
        if len(set(adapters)) == 1:
            return {str(adapters[0]): [(slice(None),)]}
        rows: dict[str, list[int]] = {}
        for row, adapter in enumerate(adapters):
            if adapter is not None:
                rows.setdefault(adapter, []).append(row)
        return {adapter: [(torch.tensor(indices),)] for adapter, indices in rows.items()}

    def _project(
        self,
        linear: Linear,
        x: torch.Tensor,
        rows: AdapterRows,
        layer: int,
        fused: str,
        *,
        widen: bool = True,
    ) -> torch.Tensor:
        """``linear(x)`` plus each row's LoRA update of the projections fused into it; in
        the kernel's dtype unless ``widen`` (then float32)."""
        out = linear(x, widen=widen)
        for adapter, indices in rows.items():
            start = 0
            for part, width in enumerate(linear.part_sizes):
                lora = self._lora.get((layer, fused, part), {}).get(adapter)
                if lora is not None:
                    for index in indices:
                        out[(*index, ..., slice(start, start + width))] += lora.delta(x[index])
                start += width
        return out
