"""Our int4 x int8 kernel: what the blocks and int8 activations compute, a row's numbers its
own whatever the rows and threads, GGUF's byte layout, and why it is not used where it
cannot run.

The kernel needs AVX2, FMA and a C++ compiler; its tests skip with the reason where one
lacks. The reasons themselves are tested everywhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from kaito_cpu_runtime import int4_dot
from kaito_cpu_runtime.int4_dot import int4_dot_available, int4_dot_matmul, pack_q4_codes
from kaito_cpu_runtime.quantized import Q4Blocks, QuantizedLinear, _q4_1_blocks

MISSING = int4_dot_available()
needs_kernel = pytest.mark.skipif(MISSING is not None, reason=f"no int4 kernel: {MISSING}")


def blocks_and_rows(outputs: int, inputs: int, rows: int, seed: int = 0) -> tuple[Q4Blocks, torch.Tensor]:
    """Random Q4_1 blocks ``[outputs, inputs]`` and activation rows ``[rows, inputs]``."""
    generator = torch.Generator().manual_seed(seed)
    blocks = Q4Blocks.quantize(torch.randn(outputs, inputs, generator=generator))
    return blocks, torch.randn(rows, inputs, generator=generator) * 3


def run(blocks: Q4Blocks, x: torch.Tensor) -> torch.Tensor:
    """The kernel on ``blocks`` and ``x``."""
    packed = pack_q4_codes(blocks.codes)
    with torch.inference_mode():
        return int4_dot_matmul(x.contiguous(), packed, blocks.scale.float(), blocks.minimum.float())


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
def test_a_rows_numbers_are_its_own_whatever_the_rows_and_threads() -> None:
    blocks, x = blocks_and_rows(72, 320, 17)
    together = run(blocks, x)
    for count in (1, 2, 3, 4, 5, 9):
        assert torch.equal(run(blocks, x[:count]), together[:count])
    assert torch.equal(run(blocks, x[7:8]), together[7:8])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run(blocks, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, together)


@needs_kernel
def test_a_value_that_is_not_finite_gives_non_finite_outputs() -> None:
    blocks, x = blocks_and_rows(16, 64, 2)
    x[1, 40] = float("nan")
    got = run(blocks, x)
    assert bool(torch.isfinite(got[0]).all())
    assert bool(torch.isnan(got[1]).all())


@needs_kernel
def test_bad_inputs_get_the_kernels_own_error() -> None:
    blocks, x = blocks_and_rows(16, 64, 2)
    packed = pack_q4_codes(blocks.codes)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        int4_dot_matmul(torch.zeros(2, 48), packed, blocks.scale, blocks.minimum)
    with pytest.raises(RuntimeError, match="codes must be"):
        int4_dot_matmul(x, packed.to(torch.int32), blocks.scale, blocks.minimum)
    with pytest.raises(RuntimeError, match="scale and minimum"):
        int4_dot_matmul(x, packed, blocks.scale.double(), blocks.minimum)


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


def test_a_cpu_without_avx2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int4_dot, "cpu_flags", lambda: frozenset({"sse4_2", "fma"}))
    assert int4_dot._load() == "the CPU lacks avx2"


def test_no_compiler_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int4_dot, "cpu_flags", lambda: frozenset({"avx2", "fma"}))

    def none() -> str:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(int4_dot, "_compiler", none)
    assert int4_dot._load() == "no C++ compiler (no C++ compiler found)"


def test_a_compile_error_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compiler's first error line, not a traceback (a fake compiler, so it runs
    without one)."""
    monkeypatch.setattr(int4_dot, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setenv("KAITO_KERNEL_CACHE_DIR", str(tmp_path))
    compiler = tmp_path / "c++"
    compiler.write_text("#!/bin/sh\necho 'int4_dot.cpp:3: error: expected ;' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setattr(int4_dot, "_compiler", lambda: str(compiler))
    assert int4_dot._load() == "compiling int4_dot.cpp failed: int4_dot.cpp:3: error: expected ;"
    assert list(tmp_path.glob("*.so")) == []


@needs_kernel
def test_a_built_kernel_is_kept_by_its_sources_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAITO_KERNEL_CACHE_DIR", str(tmp_path))
    compiler = int4_dot._compiler()
    first = int4_dot._build(compiler)
    assert first.parent == tmp_path and first.is_file()
    calls: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    assert int4_dot._build(compiler) == first
    assert calls == []  # found, not compiled again
