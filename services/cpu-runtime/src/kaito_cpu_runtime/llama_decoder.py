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
- the linear weights are float32 or bfloat16 (oneDNN, prepacked) or int8 or int4
  (:mod:`kaito_cpu_runtime.quantized`, torch's weight-only kernels), by ``weights``; int4
  takes a GGUF file's Q4_1 blocks as they are when given them (``q4_blocks``), and the
  LM head is int8 when the rest is int4; given calibration tokens, an int8 LM head
  multiplies int8 activations (:mod:`kaito_cpu_runtime.int8_head`);
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from kaito_cpu_runtime.int8_head import largest_channels, split_int8_head
from kaito_cpu_runtime.linear import PackedLinear
from kaito_cpu_runtime.lora import LoraTable, read_lora
from kaito_cpu_runtime.quantized import (
    Q4Blocks,
    QuantizedLinear,
    WeightFormat,
    int4_fits,
    int8_round_trip,
)

__all__ = ["FastDecoder"]

log = logging.getLogger(__name__)
SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2"})
Linear = PackedLinear | QuantizedLinear


@dataclass
class _Layer:
    input_norm: torch.Tensor
    qkv: Linear
    out: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


@dataclass(frozen=True)
class _Weights:
    """How the decoder stores its linear weights (see :meth:`FastDecoder.build`)."""

    layers: WeightFormat
    head_format: WeightFormat
    activation_dtype: torch.dtype
    blocks: dict[int, Q4Blocks]  # by id() of the nn.Linear whose weights they hold
    dense_dtype: torch.dtype = torch.float32
    dense_from_positions: int = 0  # 0: no dense copy
    head_float_channels: torch.Tensor | None = None  # None: no int8 activations

    def head(self, lm_head: Any) -> Linear:
        """The LM head in the head's format (as :meth:`fused` makes the layers); an int8
        head with ``head_float_channels`` multiplies int8 activations
        (:func:`~kaito_cpu_runtime.int8_head.split_int8_head`)."""
        if self.head_format != "int8" or self.head_float_channels is None:
            return self.fused((lm_head,), self.head_format)
        layer, stands_for = split_int8_head(lm_head.weight, lm_head.bias, self.head_float_channels)
        return self._dense(layer, lambda: stands_for)

    def fused(self, linears: tuple[Any, ...], weight_format: WeightFormat | None = None) -> Linear:
        """One layer computing every ``nn.Linear`` in ``linears`` side by side."""
        weight_format = weight_format or self.layers
        bias = None
        if any(m.bias is not None for m in linears):
            parts = [m.weight.new_zeros(m.out_features) if m.bias is None else m.bias
                     for m in linears]  # fmt: skip
            bias = torch.cat(parts)
        weight = torch.cat([m.weight for m in linears])
        sizes = tuple(m.out_features for m in linears)
        if weight_format in ("float32", "bfloat16"):
            return PackedLinear(weight, bias, getattr(torch, weight_format), sizes)
        if weight_format == "int4" and int4_fits(*weight.shape):
            blocks = Q4Blocks.concat(
                [self.blocks.get(id(m)) or Q4Blocks.quantize(m.weight) for m in linears]
            )
            layer = QuantizedLinear.int4_from_blocks(blocks, bias, sizes, self.activation_dtype)
            return self._dense(layer, blocks.dequantize)
        layer = QuantizedLinear.int8(weight, bias, sizes, self.activation_dtype)
        return self._dense(layer, lambda: int8_round_trip(weight))

    def _dense(self, layer: QuantizedLinear, dequantize: Any) -> QuantizedLinear:
        """``layer`` with a dense copy of its weights for prefills, when asked for."""
        if self.dense_from_positions <= 0:
            return layer
        return layer.with_dense(dequantize(), self.dense_dtype, self.dense_from_positions)


def _matching_blocks(model: Any, q4_blocks: Mapping[str, Q4Blocks]) -> dict[int, Q4Blocks]:
    """The blocks whose dequantised weights are the model's own, by module id; blocks for
    other weights (another file, a fine-tuned copy) are left out with a warning."""
    found: dict[int, Q4Blocks] = {}
    for name, blocks in q4_blocks.items():
        try:
            module = model.get_submodule(name.removesuffix(".weight"))
        except AttributeError:
            continue
        weight = module.weight
        if blocks.codes.shape == weight.shape and torch.allclose(
            blocks.dequantize(), weight, rtol=0, atol=1e-6
        ):
            found[id(module)] = blocks
    if len(found) < len(q4_blocks):
        log.warning(
            "%d of %d Q4_1 tensors do not hold the model's weights; those are quantized "
            "from the float weights",
            len(q4_blocks) - len(found),
            len(q4_blocks),
        )
    return found


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

    def __init__(self, model: Any, linear_dtype: torch.dtype, weights: _Weights) -> None:
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
        self.weights = weights.layers
        self.head_weights = weights.head_format
        #: Whether the LM head multiplies int8 activations (:mod:`kaito_cpu_runtime.int8_head`).
        self.int8_head_activations = (
            weights.head_format == "int8" and weights.head_float_channels is not None
        )
        self.activation_dtype = weights.activation_dtype
        #: How many projections hold a GGUF file's Q4_1 blocks as they are.
        self.exact_q4_blocks = len(weights.blocks)
        #: Positions per sequence from which int8/int4 layers use their dense copy (0: never).
        self.dense_from_positions = weights.dense_from_positions
        self.dense_dtype = weights.dense_dtype
        self.lm_head = weights.head(model.lm_head)
        self.layers = [
            _Layer(
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

    @classmethod
    def build(
        cls,
        model: Any,
        linear_dtype: torch.dtype = torch.float32,
        *,
        weights: WeightFormat | None = None,
        activation_dtype: torch.dtype = torch.float32,
        q4_blocks: Mapping[str, Q4Blocks] | None = None,
        dense_dtype: torch.dtype = torch.float32,
        dense_from_positions: int = 0,
        int8_head_calibration: torch.Tensor | None = None,
    ) -> FastDecoder | None:
        """A fast decoder for the plain (not yet PEFT-wrapped) ``model``, or ``None``.

        ``weights`` is the linear layers' format (default: ``linear_dtype``'s, float32 or
        bfloat16); int8 and int4 multiply in ``activation_dtype``. int4 layers take
        ``q4_blocks`` (by parameter name, from :func:`~kaito_cpu_runtime.quantized.read_gguf_q4_1`)
        where they hold exactly the model's weights, and quantize the float weights
        otherwise; a shape the int4 kernel does not take, and the LM head, are int8.
        With ``dense_from_positions`` > 0 int8/int4 layers also keep their dequantised
        weights prepacked in ``dense_dtype`` for passes of that many positions per sequence
        or more, i.e. prefills (see
        :meth:`~kaito_cpu_runtime.quantized.QuantizedLinear.with_dense`).
        With ``int8_head_calibration`` (token ids, ``[1, n]``) an int8 LM head multiplies
        int8 activations, keeping float32 the channels of the final hidden state that are
        largest on those tokens (:mod:`kaito_cpu_runtime.int8_head`; check
        :func:`~kaito_cpu_runtime.int8_head.int8_head_available` first).
        """
        reason = _unsupported(model)
        if reason is not None:
            log.info("fast CPU decoder off: %s", reason)
            return None
        layers: WeightFormat = weights or (
            "bfloat16" if linear_dtype == torch.bfloat16 else "float32"
        )
        try:
            with torch.inference_mode():
                blocks = _matching_blocks(model, q4_blocks or {}) if layers == "int4" else {}
                head: WeightFormat = "int8" if layers == "int4" else layers
                channels = None
                if head == "int8" and int8_head_calibration is not None:
                    hidden = model.model(input_ids=int8_head_calibration).last_hidden_state
                    channels = largest_channels(hidden)
                plan = _Weights(
                    layers, head, activation_dtype, blocks, dense_dtype, dense_from_positions,
                    channels,
                )  # fmt: skip
                return cls(model, linear_dtype, plan)
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
        *,
        all_positions: bool = False,
    ) -> torch.Tensor:
        """Logits (float32) of the last position of every row (``[batch, vocab]``), or of
        every position with ``all_positions`` (``[batch, length, vocab]``); appends to
        ``cache``.

        ``attention_mask`` covers the cached tokens plus the new ones (1 = real token,
        left padding is 0), as in the Hugging Face forward. ``adapters`` names each row's
        LoRA adapter (``None``: the base model).
        """
        rows = self._adapter_rows(adapters)
        batch, length = input_ids.shape
        hidden = self.embed(input_ids).float()
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        half = dim // 2
        cos, sin = self.rotary(hidden, position_ids)
        cos = cos[:, :, None, :]
        # rotate_half(x) * sin == roll(x, half) * sin with its first half negated (exactly:
        # negation is exact), one roll instead of two slices, a negation and a concatenation.
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)[:, :, None, :]
        mask = self._attention_mask(attention_mask, length)
        starts = self._row_starts(attention_mask) if length == 1 and mask is not None else None
        qk_width = (heads + kv_heads) * dim
        norm_shape = (self.hidden_size,)
        size = self.intermediate_size
        # Projections whose result is only added to the float32 residual stream may stay in
        # the kernel's dtype (the in-place add widens it exactly), unless LoRA adds to them.
        widen = bool(rows)
        for index, layer in enumerate(self.layers):
            normed = functional.rms_norm(hidden, norm_shape, layer.input_norm, self.eps)
            qkv = self._project(layer.qkv, normed, rows, index, "qkv")
            qk = qkv[..., :qk_width].view(batch, length, heads + kv_heads, dim)
            qk = qk * cos + torch.roll(qk, half, -1) * signed_sin
            query = qk[:, :, :heads].transpose(1, 2)
            key = qk[:, :, heads:].transpose(1, 2)
            value = qkv[..., qk_width:].view(batch, length, kv_heads, dim).transpose(1, 2)
            key, value = cache.layers[index].update(key, value)
            attended = self._attend(query, key, value, mask, starts)
            attended = attended.transpose(1, 2).reshape(batch, length, heads * dim)
            hidden += self._project(layer.out, attended, rows, index, "out", widen=widen)
            normed = functional.rms_norm(hidden, norm_shape, layer.post_norm, self.eps)
            gate_up = self._project(layer.gate_up, normed, rows, index, "gate_up")
            activated = functional.silu(gate_up[..., :size]) * gate_up[..., size:]
            hidden += self._project(layer.down, activated, rows, index, "down", widen=widen)
        final = hidden if all_positions else hidden[:, -1, :]
        return self.lm_head(functional.rms_norm(final, norm_shape, self.final_norm, self.eps))

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
        linear: Linear,
        x: torch.Tensor,
        rows: dict[str, torch.Tensor | None],
        layer: int,
        fused: str,
        *,
        widen: bool = True,
    ) -> torch.Tensor:
        """``linear(x)`` plus each row's LoRA update of the projections fused into it; in
        the kernel's dtype unless ``widen`` (then float32)."""
        out = linear(x, widen=widen)
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

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        starts: list[int] | None,
    ) -> torch.Tensor:
        """Attention of every row; with ``starts`` (a decode step with left-padded rows)
        each row attends alone to its keys from its first real one, so its numbers are
        those of the same row decoded without the others (over padded keys the sums run in
        another order, and rounding to bfloat16 activations can turn that into another
        token)."""
        gqa = self.num_heads != self.num_kv_heads
        if starts is None:
            return functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, enable_gqa=gqa
            )
        rows = [
            functional.scaled_dot_product_attention(
                query[row : row + 1],
                key[row : row + 1, :, start:],
                value[row : row + 1, :, start:],
                enable_gqa=gqa,
            )
            for row, start in enumerate(starts)
        ]
        return torch.cat(rows)

    @staticmethod
    def _row_starts(attention_mask: torch.Tensor) -> list[int] | None:
        """Each row's first real position when every row is only left-padded, else
        ``None`` (a row with a gap attends through the mask)."""
        padding = attention_mask.logical_not().long().cumprod(dim=1).sum(dim=1)
        real = int(attention_mask.bool().sum())
        if real != attention_mask.shape[1] * attention_mask.shape[0] - int(padding.sum()):
            return None
        return [int(start) for start in padding.tolist()]

    @staticmethod
    def _attention_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor | None:
        """Additive float ``[batch, 1, length, total]`` (0 or -inf): causal, no padding keys;
        a padding query sees itself so no row is empty (an empty row would put NaN into the
        cache). ``None`` for one new position per row and no padding: every key counts.

        Built once per forward in the form attention uses (a boolean mask would be converted
        by every layer); adding 0 leaves scores as they are, so ``None`` and a mask of zeros
        give the same numbers.
        """
        keys = attention_mask.bool()[:, None, None, :]
        if length == 1:
            if bool(keys.all()):
                return None
            allowed = keys
        else:
            total = attention_mask.shape[1]
            query_pos = torch.arange(total - length, total, device=attention_mask.device)[:, None]
            key_pos = torch.arange(total, device=attention_mask.device)[None, :]
            allowed = ((key_pos <= query_pos) & keys) | (key_pos == query_pos)
        additive = torch.zeros(allowed.shape, dtype=torch.float32)
        return additive.masked_fill_(allowed.logical_not(), float("-inf"))
