"""int8 weights times int8 activations (``w8a8``) through fbgemm: faster than the
weight-only formats on AVX2 CPUs, at a cost in quality.

torch's weight-only int4 and int8 kernels (:mod:`kaito_cpu_runtime.quantized`) turn each
weight back into a float and multiply with FMA. On AVX2 kernels that took 8.3 ms for one
row of SmolLM2-135M's matmuls (bfloat16 activations, 2 cores), where llama.cpp
multiplies 8-bit activations with its 4-bit codes in integer dot products. fbgemm, which
torch ships for its quantized CPU operators, multiplies uint8 activations with int8
weights the same way (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``):
6.1 ms for one row, 8.1 for 4 and 19.8 for 16, where int4 took 8.3, 9.4 and 31.4
(``bench/quant_kernels.py --distinct-layers``, ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``).
Quality is the price: on SmolLM2 perplexity rose 2.7-3.1% over float32 (int4: 0.1%),
mostly from the 7-bit weight codes below, so the server uses this format only when asked
(docs/inference.md, "Weight formats").

How a row is multiplied:

- **Smoothing** (SmoothQuant): a few input channels of a layer are far larger than the
  rest, and one 8-bit scale per row would be coarse for all others. Each input channel
  ``j`` is divided by ``c_j = sqrt(max|x_j| / max|W_:,j|)`` (the channel's largest
  activation on a calibration text, over its largest weight) and the weights' column is
  multiplied by it, which leaves ``x @ W.T`` unchanged and evens out both (simulated on
  SmolLM2: perplexity on ``bench/quant_quality.py``'s text 5.2% above float32 without
  smoothing, 1.8% with it). The division runs in the kernel, so the layer takes the same
  inputs as every other format (LoRA updates read them too).
- **Activations**: each smoothed row is divided by its largest absolute value and
  quantized with one fixed scale (1/127, zero point 128), then the integer product's
  row is multiplied back. A row's numbers therefore depend on that row alone, whatever
  else shares the call (the batcher's promise: a sequence's tokens do not depend on its
  batch).
- **Weights**: symmetric codes of at most 64 in magnitude, one scale per output channel.
  Without int8 dot-product instructions (AVX2) fbgemm sums pairs of uint8 x int8
  products in 16 bits, which saturates above 32767; 2 x 255 x 64 = 32640 never does.
"""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from kaito_cpu_runtime.compiled_step import opaque_operator
from kaito_cpu_runtime.quantized import QuantizedLinear

__all__ = ["WEIGHT_LIMIT", "input_maxima", "smoothing", "w8a8_available", "w8a8_linear"]

#: Largest magnitude of a weight code (see the module docstring).
WEIGHT_LIMIT = 64
_INPUT_SCALE = 1 / 127
_INPUT_ZERO = 128
_TINY = 1e-12
#: fbgemm's packed weights and output width of each live layer, by the number its
#: compiled calls pass to ``kaito_w8a8::multiply`` (inductor cannot trace the packed
#: weights, a TorchScript object, so compiled steps reach them through the operator).
_packed: dict[int, tuple[Any, int]] = {}
_numbers = itertools.count()


def smoothing(input_max: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per input channel, the factor ``c`` that divides activations and multiplies
    weights (``sqrt(max|x| / max|W|)``, the module docstring's smoothing)."""
    activations = input_max.detach().float().clamp(min=1e-5)
    weights = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
    return (activations / weights).sqrt()


def w8a8_linear(
    weight: torch.Tensor,
    input_max: torch.Tensor,
    bias: torch.Tensor | None = None,
    part_sizes: tuple[int, ...] = (),
) -> tuple[QuantizedLinear, torch.Tensor]:
    """The layer ``x @ weight.T + bias`` in ``w8a8`` with ``input_max`` (per input
    channel, the largest absolute activation on a calibration text), and the float32
    weights it stands for (for a dense prefill copy)."""
    weight = weight.detach().float()
    factor = smoothing(input_max, weight)
    smoothed = weight * factor
    scale = smoothed.abs().amax(dim=1).clamp(min=_TINY) / WEIGHT_LIMIT
    codes = torch.round(smoothed / scale[:, None]).clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT)
    with _fbgemm_engine(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensors are deprecated
        quantized = torch._make_per_channel_quantized_tensor(
            codes.to(torch.int8), scale.double(), torch.zeros_like(scale, dtype=torch.long), 0
        )
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    inverse = (1 / factor).contiguous()
    multiply = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    operator = _multiply_operator()
    number = next(_numbers)
    _packed[number] = (packed, int(weight.shape[0]))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        smoothed_x = x * inverse
        row_max = torch.linalg.vector_norm(smoothed_x, float("inf"), dim=-1, keepdim=True)
        row_max.clamp_(min=_TINY)
        unit_rows = smoothed_x.div_(row_max)
        if torch.compiler.is_compiling():
            result: torch.Tensor = operator(unit_rows, number)
        else:  # eagerly the operator's dispatch would only add time
            result = multiply(unit_rows, _INPUT_SCALE, _INPUT_ZERO, packed)
        return result.mul_(row_max)

    weakref.finalize(kernel, _packed.pop, number, None)

    stands_for = codes * scale[:, None] / factor
    layer = QuantizedLinear(
        kernel, "w8a8", bias, part_sizes or (int(weight.shape[0]),), torch.float32
    )
    return layer, stands_for


def input_maxima(model: Any, calibration: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per ``nn.Linear`` of ``model``'s decoder layers (by ``id()``), the largest absolute
    value of each input channel while ``model`` reads ``calibration`` (token ids,
    ``[1, n]``)."""
    found: dict[int, torch.Tensor] = {}

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().float()
        largest = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
        earlier = found.get(id(module))
        found[id(module)] = largest if earlier is None else torch.maximum(earlier, largest)

    inner = model.model
    hooks = [
        module.register_forward_pre_hook(record)
        for module in inner.layers.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        with torch.inference_mode():
            inner(input_ids=calibration)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def w8a8_available() -> str | None:
    """``None`` when fbgemm's int8 operator runs correctly here, else why not (its engine
    missing from this torch, the operator failing, or a probe's result off the weights it
    stands for)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return "this torch has no fbgemm engine"
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator)
    probe = torch.randn(3, 64, generator=generator)
    probe[:, 5] *= 20  # a large channel, as real activations have
    try:
        with torch.inference_mode():
            layer, stands_for = w8a8_linear(weight, probe.abs().amax(dim=0))
            got = layer(probe)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        return f"fbgemm's int8 operator failed: {exc}"
    want = probe @ stands_for.T
    if not torch.allclose(got, want, atol=3e-2 * float(want.abs().max()), rtol=0):
        return "fbgemm's int8 operator does not match its weights"
    return None


def _multiply_now(x: torch.Tensor, number: int) -> torch.Tensor:
    """``kaito_w8a8::multiply``: layer ``number``'s fbgemm product of unit rows ``x``."""
    result: torch.Tensor = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        x, _INPUT_SCALE, _INPUT_ZERO, _packed[number][0]
    )
    return result


def _multiply_shape(x: torch.Tensor, number: int) -> torch.Tensor:
    """``kaito_w8a8::multiply``'s result for tracing: ``[rows, layer's outputs]``."""
    return x.new_empty((x.shape[0], _packed[number][1]))


def _multiply_operator() -> Any:
    """``torch.ops.kaito_w8a8.multiply``."""
    schema = "multiply(Tensor x, int layer) -> Tensor"
    return opaque_operator("kaito_w8a8", schema, _multiply_now, _multiply_shape)


@contextmanager
def _fbgemm_engine() -> Iterator[None]:
    """torch's quantized engine set to fbgemm while weights are packed (the packed
    weights keep it), then put back."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        yield
    finally:
        torch.backends.quantized.engine = before
