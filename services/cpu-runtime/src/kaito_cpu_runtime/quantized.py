"""Weight-only quantized linear layers on CPU: int8 per output channel, int4 in groups of 32.

Decoding one token reads every weight once: float32 weights move four bytes per
parameter, int8 one, int4 half of one (what counts where memory bandwidth bounds a step;
on a CPU with a large cache dequantising dominates instead). :class:`QuantizedLinear`
keeps the weights quantized and multiplies with torch's own CPU kernels, which
dequantise inside the matrix multiplication:

- ``int8``: ``torch.ops.aten._weight_int8pack_mm``, symmetric int8 codes with one scale
  per output channel (``w = q * scale``);
- ``int4``: ``torch.ops.aten._weight_int4pack_mm_for_cpu`` on weights packed by
  ``_convert_weight_to_int4pack_for_cpu``: codes 0..15 in groups of 32 inputs with a scale
  and a zero point per group (``w = (q - 8) * scale + zero``).

A GGUF Q4_1 block is 32 codes 0..15 with a scale ``d`` and a minimum ``m``
(``w = q * d + m``), so int4 groups of 32 hold it exactly with ``scale = d`` and
``zero = m + 8 d`` (:meth:`QuantizedLinear.int4_from_blocks`); weights that come as
floats are quantized here with each group's minimum and maximum, as llama.cpp makes Q4_1.
:func:`read_gguf_q4_1` reads a GGUF file's Q4_1 tensors as blocks under their Hugging Face
names.

The layer has :class:`~kaito_cpu_runtime.linear.PackedLinear`'s float32 interface
(float32 in and out, ``part_sizes`` of fused projections, the bias added in float32).
``activation_dtype`` is what the kernel multiplies in: float32, or bfloat16 where the CPU
has native bf16 (see :func:`default_activation_dtype`).

These kernels are built for few rows: measured here (SmolLM2's matmuls, 2 cores,
bfloat16 activations), int8 took 9.9 ms for one row where prepacked bfloat16 took 16.5,
but 48.9 ms for 16 rows where bfloat16 took 20.1, and 294 ms for 128 where bfloat16 took
45. :meth:`QuantizedLinear.with_dense` adds a prepacked dense copy of the same
(dequantised) weights for prefills (passes of several positions per sequence); decode
steps (one position per sequence) stay on the quantized kernel whatever the batch size,
so a sequence's tokens do not depend on how many others share its decode steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from kaito_cpu_runtime.int_dot import (
    load_int_dot,
    pack_q4_codes,
    q4_1_matmul,
    q8_0_codes,
    q8_0_matmul,
)
from kaito_cpu_runtime.linear import PackedLinear, has_native_bf16

__all__ = [
    "INT4_GROUP",
    "Q4Blocks",
    "QuantizedLinear",
    "WeightFormat",
    "default_activation_dtype",
    "int4_fits",
    "int8_codes",
    "int8_round_trip",
    "kernel_available",
    "read_gguf_q4_1",
]

log = logging.getLogger(__name__)

#: Weight formats of the fast decoder's linear layers (``w8a8``: :mod:`kaito_cpu_runtime.w8a8`).
WeightFormat = Literal["float32", "bfloat16", "int8", "int4", "w8a8"]
#: Inputs per int4 group: a GGUF Q4_1 block's size.
INT4_GROUP = 32
_Kernel = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Q4Blocks:
    """Q4_1-style int4 weights of one ``[out, in]`` matrix: ``w = codes * scale + minimum``.

    ``codes`` is ``[out, in]`` (values 0..15, any integer dtype); ``scale`` and ``minimum``
    are ``[out, in / 32]``, one per block of 32 consecutive inputs.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    minimum: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        """The float32 weights the blocks stand for."""
        out, width = self.codes.shape
        grouped = self.codes.reshape(out, width // INT4_GROUP, INT4_GROUP).float()
        weights = grouped * self.scale.float()[..., None] + self.minimum.float()[..., None]
        return weights.reshape(out, width)

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> Q4Blocks:
        """Blocks of float ``weight`` from each block's minimum and maximum (as llama.cpp's
        Q4_1); a constant block gets scale 0."""
        out, width = weight.shape
        grouped = weight.detach().float().reshape(out, width // INT4_GROUP, INT4_GROUP)
        low = grouped.amin(-1)
        scale = (grouped.amax(-1) - low) / 15
        inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
        codes = torch.round((grouped - low[..., None]) * inverse[..., None]).clamp(0, 15)
        return cls(codes.to(torch.uint8).reshape(out, width), scale, low)

    def with_half_scales(self) -> Q4Blocks:
        """These blocks with their scales and minima rounded to float16, as GGUF stores
        them (blocks read from a GGUF file are unchanged)."""
        return Q4Blocks(self.codes, self.scale.half().float(), self.minimum.half().float())

    @staticmethod
    def concat(parts: list[Q4Blocks]) -> Q4Blocks:
        """The blocks of the parts' matrices stacked along the output dimension."""
        return Q4Blocks(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scale for p in parts]),
            torch.cat([p.minimum for p in parts]),
        )


def int4_fits(out_features: int, in_features: int) -> bool:
    """Whether torch's int4 CPU kernel takes this shape (outputs a multiple of 16, inputs
    of the group size)."""
    return out_features % 16 == 0 and in_features % INT4_GROUP == 0


def default_activation_dtype() -> torch.dtype:
    """bfloat16 where the CPU multiplies it natively (AVX-512 BF16 or AMX), else float32."""
    return torch.bfloat16 if has_native_bf16() else torch.float32


class QuantizedLinear:
    """``y = x @ W.T + b`` with ``W`` int8 or int4 (see the module docstring); float32 in
    and out, like a float32-io :class:`~kaito_cpu_runtime.linear.PackedLinear`.

    Build it with :meth:`int8`, :meth:`int4` or :meth:`int4_from_blocks`.
    """

    def __init__(
        self,
        kernel: _Kernel,
        weight_format: WeightFormat,
        bias: torch.Tensor | None,
        part_sizes: tuple[int, ...],
        activation_dtype: torch.dtype,
    ) -> None:
        self._kernel = kernel
        self.weight_format = weight_format
        self.bias = None if bias is None else bias.detach().float()
        self.part_sizes = part_sizes
        self.activation_dtype = activation_dtype
        self.dense: PackedLinear | None = None
        self.dense_from_positions = 0

    def with_dense(
        self, dequantized: torch.Tensor, dtype: torch.dtype, from_positions: int
    ) -> QuantizedLinear:
        """Also keep ``dequantized`` (this layer's weights as floats) prepacked in ``dtype``
        and multiply ``[batch, positions, in]`` inputs of at least ``from_positions``
        positions with it (2-D inputs always take the quantized kernel); returns ``self``."""
        self.dense = PackedLinear(dequantized, self.bias, dtype, self.part_sizes)
        self.dense_from_positions = from_positions
        return self

    @classmethod
    def int8(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        part_sizes: tuple[int, ...] = (),
        activation_dtype: torch.dtype = torch.float32,
    ) -> QuantizedLinear:
        """Symmetric int8 codes with one scale per output channel (``max |w| / 127``)."""
        codes, scale = int8_codes(weight)
        scales = scale.to(activation_dtype)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = torch.ops.aten._weight_int8pack_mm(x, codes, scales)
            return result

        return cls(kernel, "int8", bias, part_sizes or (int(weight.shape[0]),), activation_dtype)

    @classmethod
    def int4(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        part_sizes: tuple[int, ...] = (),
        activation_dtype: torch.dtype = torch.float32,
    ) -> QuantizedLinear:
        """int4 in groups of 32 quantized from float ``weight`` (:meth:`Q4Blocks.quantize`)."""
        return cls.int4_from_blocks(Q4Blocks.quantize(weight), bias, part_sizes, activation_dtype)

    @classmethod
    def int4_from_blocks(
        cls,
        blocks: Q4Blocks,
        bias: torch.Tensor | None = None,
        part_sizes: tuple[int, ...] = (),
        activation_dtype: torch.dtype = torch.float32,
    ) -> QuantizedLinear:
        """int4 holding Q4_1-style ``blocks`` as they are (``zero = minimum + 8 * scale``).

        Raises ``ValueError`` for a shape the kernel does not take (:func:`int4_fits`).
        """
        out, width = blocks.codes.shape
        if not int4_fits(out, width):
            raise ValueError(f"int4: a {out}x{width} weight does not fit the CPU kernel")
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            blocks.codes.to(torch.int32).contiguous(), 1
        )
        scale = blocks.scale.float()
        zero = blocks.minimum.float() + 8 * scale
        # [in / 32, out, 2]: each group's scale and zero point, per output channel.
        scale_zero = torch.stack((scale.T, zero.T), dim=-1).to(activation_dtype).contiguous()

        def kernel(x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x, packed, INT4_GROUP, scale_zero
            )
            return result

        return cls(kernel, "int4", bias, part_sizes or (out,), activation_dtype)

    @classmethod
    def int4_dot(
        cls,
        blocks: Q4Blocks,
        bias: torch.Tensor | None = None,
        part_sizes: tuple[int, ...] = (),
    ) -> QuantizedLinear:
        """int4 holding ``blocks`` with float16 scales and minima (see
        :meth:`Q4Blocks.with_half_scales`), multiplied by int8 activations with integer dot
        products (:mod:`kaito_cpu_runtime.int_dot`'s ``q4_1``; ``RuntimeError`` where it
        cannot load); float32 in and out, the kernel quantizes the activations itself."""
        _require_int_dot()
        codes = pack_q4_codes(blocks.codes)
        scale = blocks.scale.half().contiguous()
        minimum = blocks.minimum.half().contiguous()

        def kernel(x: torch.Tensor) -> torch.Tensor:
            return q4_1_matmul(x, codes, scale, minimum)

        out = int(blocks.codes.shape[0])
        return cls(kernel, "int4", bias, part_sizes or (out,), torch.float32)

    @classmethod
    def int8_dot(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        part_sizes: tuple[int, ...] = (),
    ) -> tuple[QuantizedLinear, torch.Tensor]:
        """int8 codes with a scale per block of 32 inputs (GGUF's Q8_0), multiplied by int8
        activations with integer dot products (:mod:`kaito_cpu_runtime.int_dot`'s
        ``q8_0``; ``RuntimeError`` where it cannot load); and the float32 weights it
        stands for."""
        _require_int_dot()
        codes, scale = q8_0_codes(weight)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            return q8_0_matmul(x, codes, scale)

        out, width = codes.shape
        blocks = codes.float().reshape(out, -1, 32) * scale.float()[..., None]
        stands_for = blocks.reshape(out, width)
        layer = cls(kernel, "int8", bias, part_sizes or (int(out),), torch.float32)
        return layer, stands_for

    def __call__(self, x: torch.Tensor, *, widen: bool = True) -> torch.Tensor:
        """The layer applied to ``x`` (any leading dimensions, float32 or the activation
        dtype); float32 out, or with ``widen=False`` and no bias the kernel's own dtype (for
        a caller that only adds the result to float32, which widens it exactly)."""
        leading = x.shape[:-1]
        if self.dense is not None and x.dim() == 3 and x.shape[1] >= self.dense_from_positions:
            return self.dense(x, widen=widen)
        flat = x.reshape(-1, x.shape[-1]).to(self.activation_dtype).contiguous()
        out = self._kernel(flat)
        if out.dtype != torch.float32 and (widen or self.bias is not None):
            out = out.float()
        if self.bias is not None:
            out += self.bias
        return out.reshape(*leading, out.shape[-1])


def _require_int_dot() -> None:
    """Load :mod:`kaito_cpu_runtime.int_dot`'s kernels, or raise ``RuntimeError`` why not."""
    problem = load_int_dot()
    if problem is not None:
        raise RuntimeError(f"the integer kernels cannot run here: {problem}")


def int8_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of ``weight`` and one float32 scale per output channel."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    codes = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
    return codes, scale


def int8_round_trip(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as :meth:`QuantizedLinear.int8` holds it, back in float32."""
    codes, scale = int8_codes(weight)
    return codes.float() * scale[:, None]


def kernel_available(weight_format: WeightFormat, activation_dtype: torch.dtype) -> str | None:
    """``None`` when this torch and CPU run ``weight_format`` correctly, else why not.

    Runs the kernel on a small probe against the dequantised weights, so a kernel that is
    missing, refuses the dtype or computes something else is caught before serving.
    """
    if weight_format in ("float32", "bfloat16"):
        return None
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 64, generator=generator)
    probe = torch.randn(3, 64, generator=generator)
    try:
        if weight_format == "int8":
            layer = QuantizedLinear.int8(weight, activation_dtype=activation_dtype)
            reference = int8_round_trip(weight)
        else:
            blocks = Q4Blocks.quantize(weight)
            layer = QuantizedLinear.int4_from_blocks(blocks, activation_dtype=activation_dtype)
            reference = blocks.dequantize()
        with torch.inference_mode():
            got = layer(probe)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        return f"torch's {weight_format} kernel failed: {exc}"
    want = probe.to(activation_dtype).float() @ reference.T
    tolerance = 5e-2 if activation_dtype == torch.bfloat16 else 1e-3
    if not torch.allclose(got, want, atol=tolerance * float(want.abs().max()), rtol=0):
        return f"torch's {weight_format} kernel does not match its dequantised weights"
    return None


#: GGUF tensor names of a Llama layer's projections -> the Hugging Face module path.
_GGUF_PROJECTIONS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_Q4_1_BLOCK_BYTES = 20  # float16 d, float16 m, 16 bytes of two codes each


def read_gguf_q4_1(path: Path) -> dict[str, Q4Blocks]:
    """The Q4_1 projections of a Llama-family GGUF file, keyed by Hugging Face parameter
    name (``model.layers.0.self_attn.q_proj.weight``); other tensors are left out.

    llama.cpp's converter interleaves the rows of the query and key projections for its
    rotary layout; they are put back in Hugging Face's order, as transformers does when it
    dequantises the file, so the blocks stand for exactly the weights it loads. Needs the
    ``gguf`` package (imported here only).
    """
    import gguf  # noqa: PLC0415  (only for GGUF files; a dependency of kaito-sdk[models])

    reader = gguf.GGUFReader(path)
    arch = bytes(_gguf_value(reader, "general.architecture")).decode()
    heads = {
        "attn_q": int(_gguf_value(reader, f"{arch}.attention.head_count")[0]),
        "attn_k": int(_gguf_value(reader, f"{arch}.attention.head_count_kv")[0]),
    }
    found: dict[str, Q4Blocks] = {}
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if tensor.tensor_type.name != "Q4_1" or len(parts) != 4 or parts[0] != "blk":
            continue
        module = _GGUF_PROJECTIONS.get(parts[2])
        if module is None:
            continue
        blocks = _q4_1_blocks(torch.from_numpy(tensor.data.copy()))
        if parts[2] in heads:
            blocks = _unpermute_rows(blocks, heads[parts[2]])
        found[f"model.layers.{parts[1]}.{module}.weight"] = blocks
    return found


def _gguf_value(reader: Any, key: str) -> Any:
    """The first value of a GGUF metadata field (a numpy array of bytes or numbers)."""
    field = reader.fields[key]
    return field.parts[field.data[0]]


def _q4_1_blocks(raw: torch.Tensor) -> Q4Blocks:
    """Q4_1 bytes ``[out, blocks * 20]`` as codes, scales and minima (codes 0-15 are the
    low nibbles of a block's 16 bytes, codes 16-31 the high ones)."""
    out = raw.shape[0]
    blocks = raw.reshape(out, -1, _Q4_1_BLOCK_BYTES)
    scale = blocks[..., 0:2].contiguous().view(torch.float16).squeeze(-1).float()
    minimum = blocks[..., 2:4].contiguous().view(torch.float16).squeeze(-1).float()
    packed = blocks[..., 4:]
    codes = torch.cat((packed & 0x0F, packed >> 4), dim=-1).reshape(out, -1)
    return Q4Blocks(codes, scale, minimum)


def _unpermute_rows(blocks: Q4Blocks, heads: int) -> Q4Blocks:
    """Undo llama.cpp's per-head interleaving of rotary rows (rows are output channels, so
    whole rows of blocks move)."""
    out = blocks.codes.shape[0]
    order = torch.arange(out).reshape(heads, out // heads // 2, 2).transpose(1, 2).reshape(-1)
    return Q4Blocks(blocks.codes[order], blocks.scale[order], blocks.minimum[order])
