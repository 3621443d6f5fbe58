"""Prepacked oneDNN linears compute what ``F.linear`` computes, in float32 and bfloat16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig

from kaito_cpu_runtime.linear import PackedLinear, has_native_bf16, pack_linear_layers

#: What oneDNN's bfloat16 matmul needs on x86 (torch refuses to reorder bf16 weights
#: without it): AVX-512 BW/VL/DQ, or AVX-NE-CONVERT.
ONEDNN_BF16 = ("avx512bw avx512vl avx512dq", "avx_ne_convert")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert has_native_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not has_native_bf16(cpuinfo)
    assert not has_native_bf16(tmp_path / "missing")


def small_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 16, bias=False)).to(dtype)


def test_float32_layers_compute_what_f_linear_computes() -> None:
    model = small_model(torch.float32)
    inputs = torch.randn(5, 48)
    with torch.inference_mode():
        expected = model(inputs)
        assert pack_linear_layers(model) == 2
        packed = model(inputs)
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.requires_cpu(*ONEDNN_BF16, why="oneDNN's bfloat16 matmul")
def test_bfloat16_layers_compute_what_f_linear_computes() -> None:
    model = small_model(torch.bfloat16)
    inputs = torch.randn(5, 48).to(torch.bfloat16)
    with torch.inference_mode():
        expected = model(inputs).float()
        assert pack_linear_layers(model, (torch.float32, torch.bfloat16)) == 2
        packed = model(inputs)
    assert packed.dtype == torch.bfloat16
    torch.testing.assert_close(packed.float(), expected, atol=3e-2, rtol=3e-2)


def test_only_the_dtypes_asked_for_are_packed() -> None:
    model = small_model(torch.bfloat16)
    assert pack_linear_layers(model) == 0  # float32 only by default
    assert all("forward" not in vars(m) for m in model.modules())


def test_prepacked_linears_give_the_same_logits() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        packed = pack_linear_layers(model)
        after = model(input_ids=ids).logits
    assert packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_float32_io_adds_the_bias_and_fused_gelu_matches_torch() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(32, 24)
    x = torch.randn(2, 3, 32)  # leading dimensions stay
    with torch.inference_mode():
        want = layer(x)
        got = PackedLinear(layer.weight, layer.bias, torch.float32, (8, 16))(x)
        gelu = PackedLinear(layer.weight, layer.bias, torch.float32, float32_io=False,
                            activation="gelu")(x)  # fmt: skip
    assert got.shape == (2, 3, 24)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gelu, nn.functional.gelu(want), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        PackedLinear(layer.weight, layer.bias, torch.float32, activation="gelu")
