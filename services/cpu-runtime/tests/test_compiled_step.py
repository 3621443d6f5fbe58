"""The compiled decode step: what the eager step computes, a row's numbers independent of
the other rows and of the thread count, eager where it cannot or must not compile.

Compiling needs a C++ compiler (torch inductor generates C++); the tests that compile
skip with that reason where none is found, and the eager-path tests run everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from kaito_cpu_runtime import compiled_step
from kaito_cpu_runtime.compiled_step import CompiledStack, check_compiled
from kaito_cpu_runtime.int_dot import int_dot_available
from kaito_cpu_runtime.kvcache import concat_rows, new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder

NO_COMPILER = compiled_step._missing_compiler()
needs_compiler = pytest.mark.skipif(NO_COMPILER is not None, reason=str(NO_COMPILER))
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]


def tiny_llama() -> Any:
    """A random two-layer Llama whose projections fit the int4 kernel."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def quantized_decoder(model: Any, weights: Any = "int4") -> FastDecoder:
    """The decoder in int4 or another quantized format (``w8a8``: calibrated on a few
    token ids; ``int4 int8-dot``: int4 on :mod:`kaito_cpu_runtime.int_dot`)."""
    decoder = FastDecoder.build(
        model, weights=weights.split()[0], activation_dtype=torch.float32,
        calibration=torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]]),
        int_dot=weights.endswith("int8-dot"),
    )  # fmt: skip
    assert decoder is not None
    return decoder


def compile_and_use(decoder: FastDecoder) -> str | None:
    """Compile the decoder's step and use it; why not, where it cannot."""
    compiled, problem = decoder.compile_decode_step()
    decoder.use_compiled_step(compiled)
    assert decoder.compiled_decode == (problem is None)
    return problem


@pytest.fixture
def compiled_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every call of a compiled stack, in order."""
    calls: list[int] = []
    original = CompiledStack.__call__

    def spy(self: CompiledStack, hidden: torch.Tensor, *args: Any) -> torch.Tensor:
        calls.append(hidden.shape[0])
        return original(self, hidden, *args)

    monkeypatch.setattr(CompiledStack, "__call__", spy)
    return calls


def greedy_steps(
    decoder: FastDecoder, config: Any, prompts: list[list[int]], adapters: Any = None
) -> torch.Tensor:
    """Five greedy decode steps of ``prompts``, each prefilled alone and merged as the
    batcher merges them (left-padded); the logits ``[steps, rows, vocab]``."""
    caches, masks, first = [], [], []
    with torch.inference_mode():
        for prompt in prompts:
            cache = new_batch_cache(config)
            mask = torch.ones(1, len(prompt), dtype=torch.long)
            first.append(decoder(torch.tensor([prompt]), mask, torch.arange(len(prompt))[None],
                                 cache))  # fmt: skip
            caches.append(cache)
            masks.append(mask)
        mask = concat_rows(caches, masks)
        lengths = torch.tensor([[len(p)] for p in prompts])
        logits, collected = torch.cat(first), []
        for step in range(5):
            mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=torch.long)], 1)
            ids = logits.argmax(-1, keepdim=True)
            logits = decoder(ids, mask, lengths + step, caches[0], adapters)
            collected.append(logits)
    return torch.stack(collected)


@needs_compiler
@pytest.mark.parametrize("weights", ["int4", "int4 int8-dot", "w8a8"])
def test_compiled_steps_match_eager_and_keep_each_row_its_own_numbers(
    compiled_calls: list[int], weights: str
) -> None:
    if weights.endswith("int8-dot") and (missing := int_dot_available()) is not None:
        pytest.skip(f"our int4 kernel cannot run here: {missing}")
    model = tiny_llama()
    eager, compiled = quantized_decoder(model, weights), quantized_decoder(model, weights)
    assert compile_and_use(compiled) is None
    capability = torch.backends.cpu.get_cpu_capability().lower()
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).name == f"cpu-{capability}"
    compiled_calls.clear()  # the startup check's own calls
    together = greedy_steps(compiled, model.config, PROMPTS)
    assert compiled_calls == [3] * 5  # every decode step, no prefill
    torch.testing.assert_close(together, greedy_steps(eager, model.config, PROMPTS),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    for row, prompt in enumerate(PROMPTS):  # alone, and left-padded beside the others
        assert torch.equal(greedy_steps(compiled, model.config, [prompt])[:, 0], together[:, row])


@needs_compiler
def test_rows_with_a_lora_adapter_take_the_eager_step(compiled_calls: list[int]) -> None:
    model = tiny_llama()
    decoder = quantized_decoder(model)
    assert compile_and_use(decoder) is None
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                      init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, lora, adapter_name="first").eval()
    assert decoder.use_adapters(peft_model)
    compiled_calls.clear()
    greedy_steps(decoder, peft_model.config, PROMPTS, ["first", None, None])
    assert compiled_calls == []
    greedy_steps(decoder, peft_model.config, PROMPTS, [None, None, None])
    assert compiled_calls == [3] * 5


def test_inductors_cache_gets_a_folder_per_cpu_capability(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Code compiled under one capability and loaded under another gave NaN or aborted the
    process (compiled_step's module docstring), so each gets a folder of its own."""
    capability = torch.backends.cpu.get_cpu_capability().lower()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    chosen = compiled_step.use_cache_of_this_cpu_kind()
    assert chosen == tmp_path / f"cpu-{capability}"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(chosen)
    assert compiled_step.use_cache_of_this_cpu_kind() == chosen  # not nested again
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert compiled_step.use_cache_of_this_cpu_kind() == tmp_path / "cpu-avx2"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # noqa: PLC0415

    assert compiled_step.use_cache_of_this_cpu_kind() == Path(default_cache_dir()) / "cpu-avx2"


def test_without_a_compiler_the_step_stays_eager(compiled_calls: list[int]) -> None:
    from torch._inductor import config  # noqa: PLC0415 (heavy)

    model = tiny_llama()
    decoder = quantized_decoder(model)
    with config.patch({"cpp.cxx": ("kaito-no-such-compiler",)}):
        problem = compile_and_use(decoder)
    assert problem is not None
    assert problem.startswith("no C++ compiler")
    got = greedy_steps(decoder, model.config, PROMPTS)
    assert compiled_calls == []
    assert torch.equal(got, greedy_steps(quantized_decoder(model), model.config, PROMPTS))


def test_float_layers_are_not_compiled() -> None:
    decoder = FastDecoder.build(tiny_llama(), torch.float32)
    assert decoder is not None
    assert decoder.compile_decode_step() == (None, "only quantized layers are compiled")


def checked(step: Any) -> str | None:
    """:func:`check_compiled` on a fake ``step(rows, compiled, threads)``."""

    def run_step(rows: int, use_compiled: bool) -> torch.Tensor:
        return step(rows, use_compiled, torch.get_num_threads())

    return check_compiled(run_step)


def base(rows: int) -> torch.Tensor:
    return torch.arange(1.0, 1.0 + rows)[:, None] * torch.linspace(1, 2, 8)


def test_the_startup_check_names_what_is_wrong() -> None:
    assert checked(lambda rows, compiled, threads: base(rows)) is None
    assert "differs from the eager" in str(
        checked(lambda rows, compiled, threads: base(rows) * (2 if compiled else 1))
    )
    assert "non-finite" in str(
        checked(lambda rows, compiled, threads: base(rows) / 0 if compiled else base(rows))
    )
    assert "other rows" in str(  # a row scaled by the batch size: rounding that mixes rows
        checked(lambda rows, compiled, threads: base(rows) * (1 + 1e-6 * rows))
    )
    if torch.get_num_threads() > 1:
        assert "thread count" in str(
            checked(lambda rows, compiled, threads: base(rows) * (1 + 1e-6 * threads))
        )
