"""int8 weights times int8 activations through fbgemm (``w8a8``): the layer against the
weights it stands for, smoothing, rows independent of each other, no 16-bit saturation
on AVX2 kernels and the operator compiled steps call (the fast decoder in this format:
test_quantized.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import torch

from kaito_cpu_runtime import w8a8
from kaito_cpu_runtime.w8a8 import WEIGHT_LIMIT, smoothing, w8a8_available, w8a8_linear


def activations_with_a_large_channel(rows: int = 4, width: int = 96) -> torch.Tensor:
    """Random rows whose channel 7 is 40 times the others, as real activations have."""
    torch.manual_seed(1)
    x = torch.randn(rows, width)
    x[:, 7] *= 40
    return x


def test_kernel_is_available_here() -> None:
    assert w8a8_available() is None


def test_layer_matches_the_weights_it_stands_for_and_the_float_product() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 96) * 0.05, torch.randn(48)
    x = activations_with_a_large_channel()
    layer, stands_for = w8a8_linear(weight, x.abs().amax(dim=0), bias)
    got = layer(x)
    assert got.shape == (4, 48)
    assert layer.weight_format == "w8a8"
    # Activations keep 8 bits per row: within 1% of the product with the weights it holds.
    want = x @ stands_for.T + bias
    assert float((got - want).abs().max()) <= 0.01 * float(want.abs().max())
    # Weights of 7 bits per output channel, after smoothing: within 2% of the float layer.
    exact = x @ weight.T + bias
    assert float((got - exact).abs().max()) <= 0.02 * float(exact.abs().max())


def test_smoothing_gives_activations_and_weights_the_same_channel_maxima() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    x = activations_with_a_large_channel(width=64)
    factor = smoothing(x.abs().amax(dim=0), weight)
    torch.testing.assert_close((x / factor).abs().amax(dim=0), (weight * factor).abs().amax(dim=0))
    assert float(factor[7]) > 3 * float(factor.median())  # the large channel is divided most


def test_smoothing_keeps_the_error_of_small_channels_down() -> None:
    """With one channel 40 times the rest, smoothed layers err far less than a layer
    calibrated as if every channel were alike."""
    torch.manual_seed(0)
    weight = torch.randn(48, 96) * 0.05
    x = activations_with_a_large_channel(rows=16)
    smoothed, _ = w8a8_linear(weight, x.abs().amax(dim=0))
    flat, _ = w8a8_linear(weight, torch.full((96,), float(x.abs().max())) * weight.abs().amax(0))
    exact = x @ weight.T
    smoothed_error = float((smoothed(x) - exact).abs().mean())
    flat_error = float((flat(x) - exact).abs().mean())
    assert smoothed_error < 0.5 * flat_error


def test_a_rows_numbers_do_not_depend_on_the_other_rows() -> None:
    torch.manual_seed(0)
    weight = torch.randn(40, 96) * 0.05
    x = activations_with_a_large_channel(rows=6)
    layer, _ = w8a8_linear(weight, x.abs().amax(dim=0))
    together = layer(x)
    for row in range(6):
        assert torch.equal(layer(x[row : row + 1])[0], together[row])
    louder = torch.cat((x[:2], x[2:] * 100))
    assert torch.equal(layer(louder)[:2], together[:2])


def test_no_16_bit_saturation_on_avx2_kernels() -> None:
    """The largest products fbgemm's AVX2 kernel can meet (every activation at its row's
    maximum, every weight code at the limit, same sign) come out right with fbgemm held
    to AVX2 (a fresh process: fbgemm reads ``FBGEMM_ENABLE_INSTRUCTIONS`` once)."""
    script = textwrap.dedent(
        """
        import torch
        from kaito_cpu_runtime.w8a8 import w8a8_linear
        weight = torch.ones(16, 256)
        weight[8:] = -1
        x = torch.ones(2, 256)
        x[1] = -1
        layer, stands_for = w8a8_linear(weight, x.abs().amax(dim=0))
        got, want = layer(x), x @ stands_for.T
        assert torch.allclose(got, want, rtol=1e-3), (got, want)
        print("ok")
        """
    )
    env = {**os.environ, "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    assert 2 * 255 * WEIGHT_LIMIT <= 32767


def test_the_operator_of_compiled_steps_gives_the_eager_numbers_and_is_freed() -> None:
    torch.manual_seed(0)
    weight = torch.randn(24, 32)
    x = activations_with_a_large_channel(width=32)
    before = set(w8a8._packed)
    layer, _ = w8a8_linear(weight, x.abs().amax(dim=0))
    (number,) = set(w8a8._packed) - before
    unit_rows = torch.rand(3, 32) * 2 - 1
    eager = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        unit_rows, 1 / 127, 128, w8a8._packed[number][0]
    )
    assert torch.equal(torch.ops.kaito_w8a8.multiply(unit_rows, number), eager)
    with torch.device("meta"):
        assert torch.ops.kaito_w8a8.multiply(torch.empty(5, 32), number).shape == (5, 24)
    del layer
    gc.collect()
    assert number not in w8a8._packed
