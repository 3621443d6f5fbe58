"""An int8 LM head that multiplies int8 activations too, with a few channels kept float32.

The LM head is the largest matrix a small model reads per decode step (SmolLM2: 49152 x
576, 28 MB in int8), and it comes right after the decoder layers, whose weights have
pushed it out of the cache. torch's weight-only kernel (``aten._weight_int8pack_mm``) then
took 2.5-2.7 ms per decode step of one sequence here (1.05 ms in cache); oneDNN's int8
matrix multiplication (``torch.ops.onednn.qlinear_pointwise``) on the same codes,
prepacked, streams them in about 1.5 ms (0.94 in cache; 2 cores with AMX).

It needs int8 activations. The final hidden state has a few channels far larger than the
rest (SmolLM2: 45 against a median channel maximum of 3.5), so one int8 scale per row
would be coarse for every other channel: quantizing whole rows made the logits' KL
divergence from float32 six times the weight-only head's. The head therefore splits its
inputs (:func:`split_int8_head`; 2.1 ms per step in all for SmolLM2, 0.4 of it the
float32 part):

- the :data:`FLOAT_CHANNELS` channels largest on a calibration text
  (:func:`largest_channels`) multiply float32 weights through oneDNN's prepacked float32
  linear;
- the other channels are quantized per row (``max |x| / 127``, symmetric) and multiply
  int8 weights quantized per output channel over those channels only, summed in int32.

Measured on SmolLM2's final hidden states for a text it was not calibrated on: the KL
divergence of its logits from float32's is a third of the weight-only int8 head's (the
large channels no longer set the weights' scales either); ``bench/quant_quality.py``
scores the served formats with it (docs/benchmarks.md). Both parts give a row the same
numbers whatever other rows share the call (integer sums; the float32 part sums its 32
channels in one block): a sequence's tokens do not depend on its batch.

oneDNN's int8 products need the CPU's int8 dot-product instructions (without them u8 x s8
pairs can saturate in 16 bits); :func:`int8_head_available` checks them and the kernel.
"""

from __future__ import annotations

import torch

from kaito_cpu_runtime.linear import PackedLinear, cpu_flags
from kaito_cpu_runtime.quantized import QuantizedLinear, int8_codes

__all__ = ["FLOAT_CHANNELS", "int8_head_available", "largest_channels", "split_int8_head"]

#: Input channels the head keeps in float32.
FLOAT_CHANNELS = 32
_SHIFT = 128  # oneDNN takes unsigned activations: int8 codes shifted by 128
_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def largest_channels(hidden: torch.Tensor, count: int = FLOAT_CHANNELS) -> torch.Tensor:
    """The ``count`` channels (last dimension) of ``hidden`` with the largest absolute
    values anywhere, in ascending order."""
    flat = hidden.detach().reshape(-1, hidden.shape[-1]).abs().amax(dim=0)
    return flat.topk(min(count, flat.numel())).indices.sort().values


def split_int8_head(
    weight: torch.Tensor, bias: torch.Tensor | None, float_channels: torch.Tensor
) -> tuple[QuantizedLinear, torch.Tensor]:
    """The head ``x @ weight.T + bias`` as described in the module docstring, and the
    float32 weights it stands for (for a dense prefill copy)."""
    weight = weight.detach().float()
    exact = torch.zeros(weight.shape[1], dtype=torch.bool)
    exact[float_channels] = True
    quantized_channels = exact.logical_not().nonzero().squeeze(-1)
    float_channels = exact.nonzero().squeeze(-1)
    codes, scale = int8_codes(weight[:, quantized_channels])
    packed = torch.ops.onednn.qlinear_prepack(codes, [1, codes.shape[1]])
    weight_zero_points = torch.zeros(codes.shape[0], dtype=torch.int64)
    unit_scale, shift = torch.tensor(1.0), torch.tensor(_SHIFT)
    float_part = PackedLinear(weight[:, float_channels], None, torch.float32)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        rest = x.index_select(-1, quantized_channels)
        row_scale = rest.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127
        shifted = (torch.round(rest / row_scale) + _SHIFT).to(torch.uint8)
        result: torch.Tensor = torch.ops.onednn.qlinear_pointwise.tensor(
            shifted, unit_scale, shift, packed, scale, weight_zero_points,
            None, 1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip
        return result.mul_(row_scale).add_(float_part(x.index_select(-1, float_channels)))

    stands_for = weight.clone()
    stands_for[:, quantized_channels] = codes.float() * scale[:, None]
    layer = QuantizedLinear(kernel, "int8", bias, (int(weight.shape[0]),), torch.float32)
    return layer, stands_for


def int8_head_available(flags: frozenset[str] | None = None) -> str | None:
    """``None`` when :func:`split_int8_head` runs correctly here, else why not: the CPU
    needs int8 dot-product instructions (``flags``: the CPU's own by default) and the
    kernel must match the weights it stands for on a probe."""
    found = cpu_flags() if flags is None else flags
    if not _INT8_DOT_FLAGS & found:
        return "no int8 dot-product instructions (avx512_vnni, avx_vnni or amx_int8)"
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator)
    probe = torch.randn(3, 64, generator=generator)
    try:
        with torch.inference_mode():
            layer, stands_for = split_int8_head(weight, None, torch.tensor([1, 5]))
            got = layer(probe)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        return f"oneDNN's int8 kernel failed: {exc}"
    want = probe @ stands_for.T
    if not torch.allclose(got, want, atol=3e-2 * float(want.abs().max()), rtol=0):
        return "oneDNN's int8 kernel does not match its weights"
    return None
