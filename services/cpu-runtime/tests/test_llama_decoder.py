"""The fast CPU decoder computes what the transformers forward computes.

Tiny random Llama and Qwen2 models (Qwen2 has biases on its query/key/value projections),
left-padded batches, a prefill and then decode steps through the batcher's KV cache; LoRA
adapters applied per row against PEFT's own mixed-adapter forward; prompts packed into
prefill passes get the very numbers they get alone.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from kaito_cpu_runtime.kvcache import new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.prefill_passes import PrefillChunk, pass_rows, plan_passes, split_prompt

SHAPE = {
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}


def tiny(kind: str) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE) if kind == "llama" else Qwen2Config(**SHAPE)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if kind == "qwen2":  # non-zero biases, so a dropped bias would show
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    return model


def hf_forward(model: Any, adapters: list[str | None] | None = None) -> Any:
    def forward(ids: Any, mask: Any, positions: Any, cache: Any) -> torch.Tensor:
        extra = {} if adapters is None else {"adapter_names": [a or "__base__" for a in adapters]}
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        return out.logits[:, -1].float()

    return forward


def run(forward: Any, config: Any, steps: int = 4) -> list[torch.Tensor]:
    """A left-padded prefill of three rows, then greedy decode steps; logits of each pass."""
    torch.manual_seed(1)
    ids = torch.randint(3, config.vocab_size, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_batch_cache(config)
    with torch.inference_mode():
        logits = [forward(ids, mask, positions, cache)]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
            positions = positions[:, -1:] + 1
            logits.append(forward(logits[-1].argmax(-1, keepdim=True), mask, positions, cache))
    return logits


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_float32_matches_the_transformers_forward(kind: str) -> None:
    model = tiny(kind)
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    expected = run(hf_forward(model), model.config)
    got = run(fast, model.config)
    for want, have in zip(expected, got, strict=True):
        assert not torch.isnan(have).any()
        torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)


#: What oneDNN's bfloat16 matmul needs on x86 (torch refuses to reorder bf16 weights
#: without it): AVX-512 BW/VL/DQ, or AVX-NE-CONVERT (AVX2-only CPUs such as some EPYCs lack both).
ONEDNN_BF16 = ("avx512bw avx512vl avx512dq", "avx_ne_convert")


@pytest.mark.requires_cpu(*ONEDNN_BF16, why="oneDNN's bfloat16 matmul")
def test_bfloat16_linears_stay_close() -> None:
    model = tiny("llama")
    fast = FastDecoder.build(model, torch.bfloat16)
    assert fast is not None
    expected = run(hf_forward(model), model.config, steps=0)[0]
    got = run(fast, model.config, steps=0)[0]
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_bfloat16_builds_where_onednn_supports_it_else_falls_back(
    cpu_flags: frozenset[str],
) -> None:
    """Every CPU: a bf16 fast decoder exactly where the CPU has the feature, else ``None``
    (the engine then runs the transformers forward), never an exception."""
    supported = any(set(option.split()) <= cpu_flags for option in ONEDNN_BF16)
    assert (FastDecoder.build(tiny("llama"), torch.bfloat16) is not None) == supported


def test_cpu_flags_agree_with_torch(cpu_flags: frozenset[str]) -> None:
    """The flags the ``requires_cpu`` marker reads are the ones torch dispatches on."""
    capability = torch.backends.cpu.get_cpu_capability()  # what torch found by CPUID
    if capability in {"AVX2", "AVX512"}:
        assert {"avx2", "fma"} <= cpu_flags
    if capability == "AVX512":
        assert {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags


def test_lora_rows_match_peft_in_a_mixed_batch() -> None:
    model = tiny("llama")
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
        init_lora_weights=False,
    )
    torch.manual_seed(5)
    peft_model = get_peft_model(model, lora, adapter_name="first").eval()
    peft_model.add_adapter("second", lora)
    assert fast.use_adapters(peft_model)
    assert fast.applies_to(peft_model)
    for adapters in (["first", None, "second"], ["second"] * 3, [None] * 3):
        expected = run(hf_forward(peft_model, adapters), model.config)
        got = run(lambda *args, a=adapters: fast(*args, a), model.config)
        for want, have in zip(expected, got, strict=True):
            torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)
    base = run(fast, model.config)  # base rows do not depend on which adapters are loaded
    mixed = run(lambda *args: fast(*args, [None, "first", None]), model.config)
    torch.testing.assert_close(mixed[-1][0], base[-1][0])
    assert not torch.allclose(mixed[-1][1], base[-1][1])


def test_unsupported_adapters_fall_back() -> None:
    model = tiny("llama")
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    dora = LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)
    peft_model = get_peft_model(model, dora).eval()
    assert not fast.use_adapters(peft_model)
    assert not fast.applies_to(peft_model)
    assert fast.applies_to(peft_model.unload())


def test_models_it_does_not_cover_get_none() -> None:
    assert FastDecoder.build(tiny("llama").to(torch.bfloat16)) is None
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)
    )
    assert FastDecoder.build(gpt2) is None


def packed(
    fast: FastDecoder,
    config: Any,
    prompts: list[list[int]],
    adapters: list[str | None] | None = None,
    caches: list[Any] | None = None,
) -> tuple[torch.Tensor, list[Any]]:
    """Last logits of ``prompts`` prefilled together in packed passes, and their caches
    (``caches`` may hold each prompt's start already: then ``prompts`` are the rests)."""
    if not fast.pass_rows:
        pytest.skip("no pass length gives row-invariant matmuls on this CPU")
    caches = caches or [new_batch_cache(config) for _ in prompts]
    adapters = adapters or [None] * len(prompts)
    longest = fast.pass_rows[-1]
    chunks = [
        split_prompt(i, ids, cache.get_seq_length(), cache, adapter, longest=longest)
        for i, (ids, cache, adapter) in enumerate(zip(prompts, caches, adapters, strict=True))
    ]
    with torch.inference_mode():
        logits = [
            fast.prefill(part, pass_rows(sum(len(c.ids) for c in part), fast.pass_rows))
            for part in plan_passes(chunks, longest)
        ]
    return torch.cat(logits), caches


def joined(
    fast: FastDecoder, config: Any, first: list[list[int]], joins: dict[int, list[list[int]]]
) -> tuple[torch.Tensor, list[Any]]:
    """Last logits of ``first`` prefilled in one pass that the prompts of ``joins`` (layer:
    prompts) join before those layers, and every prompt's cache, in order."""
    if not fast.pass_rows:
        pytest.skip("no pass length gives row-invariant matmuls on this CPU")
    caches: list[Any] = []

    def chunks_of(prompts: list[list[int]]) -> list[PrefillChunk]:
        chunks = []
        for ids in prompts:
            caches.append(new_batch_cache(config))
            chunks.append(PrefillChunk(len(caches) - 1, ids, 0, caches[-1], None, last=True))
        return chunks

    asked: list[int] = []

    def joining(layer: int, rows: int) -> list[PrefillChunk]:
        asked.append(layer)
        return chunks_of(joins.get(layer, []))

    start = chunks_of(first)
    with torch.inference_mode():
        length = pass_rows(sum(len(chunk.ids) for chunk in start), fast.pass_rows)
        logits = fast.prefill(start, length, joining=joining)
    assert asked == list(range(config.num_hidden_layers))
    return logits, caches


def prompts_of(lengths: list[int]) -> list[list[int]]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(3, SHAPE["vocab_size"], (n,), generator=generator).tolist()
            for n in lengths]  # fmt: skip


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_packed_prefills_give_a_prompt_the_numbers_it_gets_alone(kind: str) -> None:
    model = tiny(kind)
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    prompts = prompts_of([9, 30, 200, 1])  # 200 tokens take several passes
    together, caches = packed(fast, model.config, prompts)
    for index, prompt in enumerate(prompts):
        alone, (cache,) = packed(fast, model.config, [prompt])
        assert torch.equal(together[index], alone[0])
        for mine, theirs in zip(caches[index].layers, cache.layers, strict=True):
            assert torch.equal(mine.keys, theirs.keys)
            assert torch.equal(mine.values, theirs.values)
        ids = torch.tensor([prompt])
        want = hf_forward(model)(ids, torch.ones_like(ids), torch.arange(len(prompt))[None],
                                 new_batch_cache(model.config))  # fmt: skip
        torch.testing.assert_close(alone[0], want[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_prompts_that_join_a_running_pass_get_the_numbers_they_get_alone(kind: str) -> None:
    """Prompts taken into a pass before its first or second layer (the later ones run
    through the first layer in a pass of their own) get the logits and caches of a pass
    of their own, and so do the prompts that started it; logits come in joining order."""
    model = tiny(kind)
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    prompts = prompts_of([9, 12, 30, 5])
    together, caches = joined(fast, model.config, prompts[:1], {0: prompts[1:2], 1: prompts[2:]})
    assert together.shape[0] == 4
    for index, prompt in enumerate(prompts):
        alone, (cache,) = packed(fast, model.config, [prompt])
        assert torch.equal(together[index], alone[0]), f"prompt {index}"
        for mine, theirs in zip(caches[index].layers, cache.layers, strict=True):
            assert torch.equal(mine.keys, theirs.keys)
            assert torch.equal(mine.values, theirs.values)


def test_a_prefix_cache_hit_gives_the_numbers_of_a_miss() -> None:
    """Only the uncached rest is computed after a hit, in another pass, yet every row's
    numbers are those of the whole prompt prefilled at once."""
    model = tiny("llama")
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    (prompt,) = prompts_of([41])
    whole, (cache,) = packed(fast, model.config, [prompt])
    start = new_batch_cache(model.config)
    for layer, full in zip(start.layers, cache.layers, strict=True):
        layer.keys, layer.values = full.keys[:, :, :32].clone(), full.values[:, :, :32].clone()
    rest, (resumed,) = packed(fast, model.config, [prompt[32:]], caches=[start])
    assert torch.equal(rest, whole)
    for mine, theirs in zip(resumed.layers, cache.layers, strict=True):
        assert torch.equal(mine.keys, theirs.keys)


def test_packed_prefills_apply_each_prompts_adapter() -> None:
    model = tiny("llama")
    fast = FastDecoder.build(model, torch.float32)
    assert fast is not None
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                      init_lora_weights=False)  # fmt: skip
    torch.manual_seed(5)
    peft_model = get_peft_model(model, lora, adapter_name="first").eval()
    peft_model.add_adapter("second", lora)
    assert fast.use_adapters(peft_model)
    prompts = prompts_of([12, 7, 20])
    adapters: list[str | None] = ["first", None, "second"]
    together, _ = packed(fast, model.config, prompts, adapters)
    for index, (prompt, adapter) in enumerate(zip(prompts, adapters, strict=True)):
        alone, _ = packed(fast, model.config, [prompt], [adapter])
        assert torch.equal(together[index], alone[0])
        ids = torch.tensor([prompt])
        want = hf_forward(peft_model, [adapter])(ids, torch.ones_like(ids),
                                                 torch.arange(len(prompt))[None],
                                                 new_batch_cache(model.config))  # fmt: skip
        torch.testing.assert_close(alone[0], want[0], atol=1e-4, rtol=1e-4)
