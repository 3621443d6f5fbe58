"""How the fast Llama decoder holds its linear weights: the format of each fused projection
and of the LM head, and which GGUF Q4_1 blocks stand for the model's own weights."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from kaito_cpu_runtime.int8_head import split_int8_head
from kaito_cpu_runtime.linear import PackedLinear
from kaito_cpu_runtime.quantized import (
    Q4Blocks,
    QuantizedLinear,
    WeightFormat,
    int4_fits,
    int8_round_trip,
    kernel_available,
)
from kaito_cpu_runtime.w8a8 import w8a8_available, w8a8_linear

__all__ = ["DecoderWeights", "Linear", "format_available", "matching_blocks"]

log = logging.getLogger(__name__)
#: A linear layer of the decoder: float (prepacked) or quantized.
Linear = PackedLinear | QuantizedLinear


@dataclass(frozen=True)
class DecoderWeights:
    """How the fast decoder stores its linear weights (see
    :meth:`~kaito_cpu_runtime.llama_decoder.FastDecoder.build`)."""

    layers: WeightFormat
    head_format: WeightFormat
    activation_dtype: torch.dtype
    blocks: dict[int, Q4Blocks]  # by id() of the nn.Linear whose weights they hold
    dense_dtype: torch.dtype = torch.float32
    dense_from_positions: int = 0  # 0: no dense copy
    head_float_channels: torch.Tensor | None = None  # None: no int8 activations
    #: ``w8a8`` layers: per ``nn.Linear`` (by id()), each input channel's largest value on
    #: a calibration text (:func:`~kaito_cpu_runtime.w8a8.input_maxima`).
    input_maxima: Mapping[int, torch.Tensor] = field(default_factory=dict)
    #: int4 layers and the int8 LM head multiply int8 activations on our integer kernels
    #: (:mod:`kaito_cpu_runtime.int_dot`) instead of torch's weight-only kernels.
    int_dot: bool = False

    def head(self, lm_head: Any) -> Linear:
        """The LM head in the head's format (as :meth:`fused` makes the layers); an int8
        head with ``head_float_channels`` multiplies int8 activations
        (:func:`~kaito_cpu_runtime.int8_head.split_int8_head`); with ``int_dot`` an int8 head
        whose inputs come in blocks of 32 is Q8_0 on our kernel instead."""
        if self.head_format == "int8" and self.int_dot and lm_head.in_features % 32 == 0:
            layer, stands_for = QuantizedLinear.int8_dot(lm_head.weight, lm_head.bias)
            return self._dense(layer, lambda: stands_for)
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
            if self.int_dot:
                blocks = blocks.with_half_scales()
                layer = QuantizedLinear.int4_dot(blocks, bias, sizes)
            else:
                layer = QuantizedLinear.int4_from_blocks(blocks, bias, sizes, self.activation_dtype)
            return self._dense(layer, blocks.dequantize)
        if weight_format == "w8a8":
            # The fused projections read the same input: their maxima are one tensor.
            input_max = torch.stack([self.input_maxima[id(m)] for m in linears]).amax(dim=0)
            layer, stands_for = w8a8_linear(weight, input_max, bias, sizes)
            return self._dense(layer, lambda: stands_for)
        layer = QuantizedLinear.int8(weight, bias, sizes, self.activation_dtype)
        return self._dense(layer, lambda: int8_round_trip(weight))

    def _dense(self, layer: QuantizedLinear, dequantize: Any) -> QuantizedLinear:
        """``layer`` with a dense copy of its weights for prefills, when asked for."""
        if self.dense_from_positions <= 0:
            return layer
        return layer.with_dense(dequantize(), self.dense_dtype, self.dense_from_positions)


def matching_blocks(model: Any, q4_blocks: Mapping[str, Q4Blocks]) -> dict[int, Q4Blocks]:
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


def format_available(weight_format: WeightFormat, activation_dtype: torch.dtype) -> str | None:
    """``None`` when ``weight_format`` runs correctly here (its kernel probed, see
    :func:`~kaito_cpu_runtime.quantized.kernel_available` and
    :func:`~kaito_cpu_runtime.w8a8.w8a8_available`), else why not."""
    if weight_format == "w8a8":
        return w8a8_available()
    return kernel_available(weight_format, activation_dtype)
