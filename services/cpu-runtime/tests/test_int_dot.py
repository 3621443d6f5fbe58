"""Our integer kernels (Q4_1 and Q8_0 weights times int8 activations): what they compute,
a row's numbers its own whatever the rows and threads, GGUF's layouts, and why they are
not used where they cannot run.

The kernels need AVX2, FMA and a C++ compiler; their tests skip with the reason where one
lacks. The reasons themselves are tested everywhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from kaito_cpu_runtime import int_dot
from kaito_cpu_runtime.decoder_weights import DecoderWeights
from kaito_cpu_runtime.int_dot import (
    int_dot_available,
    pack_q4_codes,
    q4_1_matmul,
    q8_0_codes,
    q8_0_matmul,
)
from kaito_cpu_runtime.quantized import Q4Blocks, QuantizedLinear, _q4_1_blocks

MISSING = int_dot_available()
needs_kernel = pytest.mark.skipif(MISSING is not None, reason=f"no integer kernels: {MISSING}")


def blocks_and_rows(
    outputs: int, inputs: int, rows: int, seed: int = 0
) -> tuple[Q4Blocks, torch.Tensor]:
    """Random Q4_1 blocks ``[outputs, inputs]`` and activation rows ``[rows, inputs]``."""
    generator = torch.Generator().manual_seed(seed)
    blocks = Q4Blocks.quantize(torch.randn(outputs, inputs, generator=generator))
    blocks = blocks.with_half_scales()
    return blocks, torch.randn(rows, inputs, generator=generator) * 3


def run(blocks: Q4Blocks, x: torch.Tensor) -> torch.Tensor:
    """The q4_1 kernel on ``blocks`` and ``x``."""
    packed = pack_q4_codes(blocks.codes)
    with torch.inference_mode():
        return q4_1_matmul(x.contiguous(), packed, blocks.scale.half(), blocks.minimum.half())


def run_q8(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The q8_0 kernel on ``weight``'s codes and ``x``."""
    with torch.inference_mode():
        return q8_0_matmul(x.contiguous(), *q8_0_codes(weight))


def int8_blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``'s int8 codes and per-block scales as the kernel makes them (``max |x| / 127``
    per 32, round half to even)."""
    grouped = x.reshape(x.shape[0], -1, 32)
    scale = grouped.abs().amax(-1) / 127
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    return torch.round(grouped * inverse[..., None]), scale


@needs_kernel
@pytest.mark.parametrize("inputs", [32, 64, 96, 256, 288, 320, 576])
def test_the_kernel_computes_the_blocks_times_int8_activations(inputs: int) -> None:
    """Against the same sums in float64: integer products per block, scaled by both
    scales, plus each block's minimum times its activations (every block-count path:
    groups of 8 blocks, a pair, a lone block)."""
    blocks, x = blocks_and_rows(40, inputs, 5)
    codes, scale = int8_blocks(x)
    weights = blocks.codes.reshape(40, -1, 32).double()
    sums = torch.einsum("rbi,obi->rob", codes.double(), weights)
    code_sums = codes.double().sum(-1)  # [rows, blocks]
    want = (sums * (blocks.scale.double()[None] * scale.double()[:, None])).sum(-1) + (
        blocks.minimum.double()[None] * (scale.double() * code_sums)[:, None]
    ).sum(-1)
    got = run(blocks, x)
    torch.testing.assert_close(got.double(), want, atol=1e-4 * float(want.abs().max()), rtol=0)
    # and close to the float product: the activations' rounding only
    exact = x.double() @ blocks.dequantize().double().T
    assert float((got - exact).abs().max()) < 0.03 * float(exact.abs().max())


@needs_kernel
@pytest.mark.parametrize("inputs", [32, 96, 256, 288, 576])
def test_the_q8_kernel_computes_the_codes_times_int8_activations(inputs: int) -> None:
    generator = torch.Generator().manual_seed(1)
    weight, x = torch.randn(24, inputs, generator=generator), torch.randn(5, inputs) * 3
    codes, scale = q8_0_codes(weight)
    x_codes, x_scale = int8_blocks(x)
    sums = torch.einsum("rbi,obi->rob", x_codes.double(), codes.reshape(24, -1, 32).double())
    want = (sums * (scale.double()[None] * x_scale.double()[:, None])).sum(-1)
    assert scale.dtype == torch.float16
    got = run_q8(weight, x)
    torch.testing.assert_close(got.double(), want, atol=1e-4 * float(want.abs().max()), rtol=0)
    exact = x.double() @ weight.double().T
    assert float((got - exact).abs().max()) < 0.03 * float(exact.abs().max())


def test_q8_codes_of_dequantised_q8_weights_are_the_same_codes() -> None:
    """The embedded GGUF's tied head is Q8_0: its dequantised weights give back its codes
    (so the head multiplies the file's own weights) and a code of -128 never occurs."""
    generator = torch.Generator().manual_seed(2)
    codes = torch.randint(-127, 128, (8, 64), generator=generator, dtype=torch.int8)
    codes[:, ::32] = 127  # every block has its largest code, as Q8_0's quantizer makes it
    scale = torch.rand(8, 2, generator=generator).half()
    weight = (codes.float().reshape(8, 2, 32) * scale.float()[..., None]).reshape(8, 64)
    again, again_scale = q8_0_codes(weight)
    assert torch.equal(again, codes)
    assert torch.equal(again_scale, scale)
    assert int(q8_0_codes(torch.randn(4, 32) * 100)[0].min()) >= -127


@needs_kernel
@pytest.mark.parametrize("kernel", ["q4_1", "q8_0"])
def test_a_rows_numbers_are_its_own_whatever_the_rows_and_threads(kernel: str) -> None:
    blocks, x = blocks_and_rows(72, 320, 17)

    def compute(rows: torch.Tensor) -> torch.Tensor:
        return run(blocks, rows) if kernel == "q4_1" else run_q8(blocks.dequantize(), rows)

    together = compute(x)
    for count in (1, 2, 3, 4, 5, 9):
        assert torch.equal(compute(x[:count]), together[:count])
    assert torch.equal(compute(x[7:8]), together[7:8])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = compute(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, together)


@needs_kernel
def test_a_value_that_is_not_finite_gives_non_finite_outputs() -> None:
    blocks, x = blocks_and_rows(16, 64, 2)
    x[1, 40] = float("nan")
    for got in (run(blocks, x), run_q8(blocks.dequantize(), x)):
        assert bool(torch.isfinite(got[0]).all())
        assert bool(torch.isnan(got[1]).all())


@needs_kernel
def test_bad_inputs_get_the_kernels_own_error() -> None:
    blocks, x = blocks_and_rows(16, 64, 2)
    packed = pack_q4_codes(blocks.codes)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        q4_1_matmul(torch.zeros(2, 48), packed, blocks.scale.half(), blocks.minimum.half())
    with pytest.raises(RuntimeError, match="codes must be"):
        q4_1_matmul(x, packed.to(torch.int32), blocks.scale.half(), blocks.minimum.half())
    with pytest.raises(RuntimeError, match="scales must be contiguous float16"):
        q4_1_matmul(x, packed, blocks.scale.float(), blocks.minimum.half())
    codes, scale = q8_0_codes(blocks.dequantize())
    with pytest.raises(RuntimeError, match="q8_0: codes must be contiguous int8"):
        q8_0_matmul(x, codes.T, scale)
    with pytest.raises(RuntimeError, match="q8_0: scales must be"):
        q8_0_matmul(x, codes, scale[:, :1].contiguous())


def test_packed_codes_are_ggufs_q4_1_bytes() -> None:
    generator = torch.Generator().manual_seed(3)
    raw = torch.randint(0, 256, (6, 3 * 20), dtype=torch.uint8, generator=generator)
    raw.view(6, 3, 20)[..., :4] = torch.tensor([0, 60, 0, 188], dtype=torch.uint8)  # d, m
    blocks = _q4_1_blocks(raw)
    assert torch.equal(pack_q4_codes(blocks.codes), raw.view(6, 3, 20)[..., 4:].reshape(6, 48))


@needs_kernel
def test_an_int4_dot_layer_adds_its_bias_and_keeps_its_parts() -> None:
    blocks, x = blocks_and_rows(48, 64, 3)
    bias = torch.arange(48, dtype=torch.float32)
    layer = QuantizedLinear.int4_dot(blocks, bias, (32, 16))
    assert layer.part_sizes == (32, 16)
    assert layer.weight_format == "int4"
    with torch.inference_mode():
        got = layer(x[None])
    assert got.shape == (1, 3, 48)
    torch.testing.assert_close(got[0], run(blocks, x) + bias)


@needs_kernel
def test_an_int8_dot_layer_stands_for_its_q8_weights() -> None:
    generator = torch.Generator().manual_seed(4)
    weight, x = torch.randn(40, 96, generator=generator), torch.randn(3, 96, generator=generator)
    layer, stands_for = QuantizedLinear.int8_dot(weight)
    assert layer.weight_format == "int8"
    torch.testing.assert_close(stands_for, weight, atol=float(weight.abs().max()) / 254, rtol=0)
    with torch.inference_mode():
        got = layer(x)
    assert torch.equal(got, run_q8(weight, x))
    want = x @ stands_for.T
    assert float((got - want).abs().max()) < 0.03 * float(want.abs().max())


def test_a_cpu_without_avx2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int_dot, "cpu_flags", lambda: frozenset({"sse4_2", "fma"}))
    assert int_dot._load() == "the CPU lacks avx2 and f16c"


def test_no_compiler_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int_dot, "cpu_flags", lambda: frozenset({"avx2", "fma", "f16c"}))

    def none() -> str:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(int_dot, "_compiler", none)
    assert int_dot._load() == "no C++ compiler (no C++ compiler found)"


def test_a_compile_error_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compiler's first error line, not a traceback (a fake compiler, so it runs
    without one)."""
    monkeypatch.setattr(int_dot, "cpu_flags", lambda: frozenset({"avx2", "fma", "f16c"}))
    monkeypatch.setenv("KAITO_KERNEL_CACHE_DIR", str(tmp_path))
    compiler = tmp_path / "c++"
    compiler.write_text("#!/bin/sh\necho 'int_dot.cpp:3: error: expected ;' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setattr(int_dot, "_compiler", lambda: str(compiler))
    assert int_dot._load() == "compiling int_dot.cpp failed: int_dot.cpp:3: error: expected ;"
    assert list(tmp_path.glob("*.so")) == []


@needs_kernel
def test_a_built_kernel_is_kept_by_its_sources_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAITO_KERNEL_CACHE_DIR", str(tmp_path))
    compiler = int_dot._compiler()
    first = int_dot._build(compiler)
    assert first.parent == tmp_path
    assert first.is_file()
    calls: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    assert int_dot._build(compiler) == first
    assert calls == []  # found, not compiled again


def test_a_cache_folder_others_may_write_to_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A library found there would be loaded: a folder writable by others is not used."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("KAITO_KERNEL_CACHE_DIR", str(shared))
    monkeypatch.setattr(int_dot, "cpu_flags", lambda: frozenset({"avx2", "fma", "f16c"}))
    monkeypatch.setattr(int_dot, "_compiler", lambda: "/nonexistent/c++")
    problem = int_dot._load()
    assert problem is not None
    assert "is not this user's own folder" in problem
    own = tmp_path / "own"
    int_dot._own_folder(own)
    assert own.stat().st_mode & 0o777 == 0o700


@needs_kernel
def test_an_lm_head_whose_inputs_are_not_blocks_of_32_keeps_torchs_kernel() -> None:
    """Q8_0 on our kernel (float32 in, it quantizes itself) for 64 inputs; torch's
    weight-only int8 (the plan's bfloat16 activations) for 48."""
    plan = DecoderWeights("int4", "int8", torch.bfloat16, {}, int_dot=True)
    for inputs, dot in ((64, True), (48, False)):
        head = plan.head(torch.nn.Linear(inputs, 10, bias=False))
        assert isinstance(head, QuantizedLinear)
        assert head.activation_dtype == (torch.float32 if dot else torch.bfloat16)
        with torch.inference_mode():
            got = head(torch.randn(2, inputs))
        assert got.shape == (2, 10)
