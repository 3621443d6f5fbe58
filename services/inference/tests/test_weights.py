"""``--weights``: the setting, the choice ``auto`` makes, fallbacks, and serving int4.

The kernels themselves are tested in services/cpu-runtime/tests/test_quantized.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_cpu_runtime.int_dot import int_dot_available
from kaito_cpu_runtime.kvcache import new_batch_cache
from kaito_inference.app import create_app
from kaito_inference.cli import build_parser, main, settings_from_args
from kaito_inference.engines import weights as weights_module
from kaito_inference.engines.weights import build_decoder, embedded_q4_blocks
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import serve_app, wait_healthy


def test_flag_and_env_set_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InferenceSettings().weights == "auto"
    monkeypatch.setenv("KAITO_INFERENCE_WEIGHTS", "int8")
    assert InferenceSettings().weights == "int8"
    args = build_parser().parse_args(["serve", "--weights", "int4"])
    assert settings_from_args(args).weights == "int4"  # the flag wins over the env


def test_the_decode_step_compiles_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InferenceSettings().compile_decode == "auto"
    monkeypatch.setenv("KAITO_INFERENCE_COMPILE_DECODE", "off")
    assert InferenceSettings().compile_decode == "off"
    args = build_parser().parse_args(["serve", "--compile-decode", "auto"])
    assert settings_from_args(args).compile_decode == "auto"


def test_integer_kernels_are_used_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InferenceSettings().integer_kernels == "auto"
    monkeypatch.setenv("KAITO_INFERENCE_INTEGER_KERNELS", "off")
    assert InferenceSettings().integer_kernels == "off"
    args = build_parser().parse_args(["serve", "--integer-kernels", "auto"])
    assert settings_from_args(args).integer_kernels == "auto"


def test_an_unknown_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--weights", "int3"])
    assert "--weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("setting", ["float32", "int8", "int4", "w8a8"])
def test_an_explicit_format_is_served(tiny: tuple[Any, Any], setting: Any) -> None:
    choice = build_decoder(*tiny, setting, {})
    assert choice.decoder is not None
    assert choice.weights == choice.decoder.weights == setting
    assert "asked for" in choice.reason


def test_an_unavailable_kernel_falls_back_with_a_log_line(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kaito_cpu_runtime import decoder_weights  # noqa: PLC0415

    def no_int4(weights: str, _act: torch.dtype) -> str | None:
        return "no int4 kernel in this torch" if weights == "int4" else None

    monkeypatch.setattr(decoder_weights, "format_available", no_int4)
    with caplog.at_level(logging.WARNING):
        choice = build_decoder(*tiny, "int4", {})
    assert choice.weights == "int8"
    assert "weights int4 unavailable here (no int4 kernel in this torch)" in caplog.text


def test_auto_serves_the_fastest_format_within_tolerance(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fastest format here made 5% worse than float32 is passed over for the next."""
    fastest, second = weights_module.SPEED_ORDER[weights_module.cpu_kind()[0]][:2]
    real = weights_module.perplexity

    def scored(model: Any, tokenizer: Any, decoder: Any) -> float:
        value = real(model, tokenizer, decoder)
        return value * 1.05 if decoder is not None and decoder.weights == fastest else value

    monkeypatch.setattr(weights_module, "perplexity", scored)
    choice = build_decoder(*tiny, "auto", {})
    assert choice.weights == second
    assert f"{fastest} perplexity +5" in choice.reason
    assert f"{second} perplexity" in choice.reason
    assert "tolerance 2%" in choice.reason


def test_auto_order_starts_with_the_fastest_kernels() -> None:
    for order in weights_module.SPEED_ORDER.values():
        assert order[-1] == "float32"
        assert set(order) <= {"float32", "bfloat16", "int8", "int4", "w8a8"}
    assert "bfloat16" not in weights_module.SPEED_ORDER["avx2"]  # emulated there: slower
    # w8a8 only when asked for: its quality is beyond the tolerance on SmolLM2
    assert all("w8a8" not in order for order in weights_module.SPEED_ORDER.values())


def test_w8a8_asked_for_prefills_on_its_own_kernel(tiny: tuple[Any, Any]) -> None:
    choice = build_decoder(*tiny, "w8a8", {})
    assert choice.weights == "w8a8"
    assert choice.decoder is not None
    assert choice.decoder.dense_from_positions == 0
    assert choice.reason.startswith("fbgemm int8 x int8")
    assert "prefills on" not in choice.reason


def test_the_quality_check_scores_the_decode_kernels_not_the_prefill_copy(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int4 decoder's check runs its int4 kernel although prefills have a dense copy."""
    model, tokenizer = tiny
    monkeypatch.setattr(weights_module, "cpu_kind", lambda: ("native-bf16", "test"))
    choice = build_decoder(model, tokenizer, "int4", {}, integer_kernels="off")
    decoder = choice.decoder
    assert decoder is not None
    assert decoder.dense_from_positions > 0
    dense_calls: list[int] = []
    for layer in decoder.layers:

        def spy(x: torch.Tensor, real: Any = layer.qkv.dense, **kwargs: Any) -> Any:
            dense_calls.append(len(x))
            return real(x, **kwargs)

        monkeypatch.setattr(layer.qkv, "dense", spy)
    weights_module.perplexity(model, tokenizer, decoder)
    assert dense_calls == []
    ids = torch.tensor([tokenizer("a prompt of a few words")["input_ids"]])
    with torch.inference_mode():  # the copies are back: a prefill pass runs on them
        decoder(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None],
                new_batch_cache(model.config))  # fmt: skip
    assert dense_calls == [1] * len(decoder.layers)


def test_int4_layers_and_head_take_our_kernels_unless_turned_off(tiny: tuple[Any, Any]) -> None:
    missing = int_dot_available()
    if missing is not None:
        pytest.skip(f"our integer kernels cannot run here: {missing}")
    model, tokenizer = tiny
    ours = build_decoder(model, tokenizer, "int4", {})
    torchs = build_decoder(model, tokenizer, "int4", {}, integer_kernels="off")
    assert ours.decoder is not None
    assert torchs.decoder is not None
    assert ours.decoder.int_dot
    assert ours.decoder.int8_head_activations
    assert ours.reason.startswith(
        "kaito_int_dot.q4_1 (AVX2 integer dot products), int8 activations in blocks of 32"
    )
    assert "LM head Q8_0 with int8 activations (kaito_int_dot.q8_0)" in ours.reason
    assert not torchs.decoder.int_dot
    assert torchs.reason.startswith("aten._weight_int4pack_mm_for_cpu, bfloat16 activations")
    assert "Q8_0" not in torchs.reason


def test_on_avx2_our_int4_kernel_serves_prefills_too(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No float32 copy where our integer kernel is the faster one for prefills too."""
    missing = int_dot_available()
    if missing is not None:
        pytest.skip(f"our integer kernels cannot run here: {missing}")
    model, tokenizer = tiny
    monkeypatch.setattr(weights_module, "cpu_kind", lambda: ("avx2", "test"))
    ours = build_decoder(model, tokenizer, "int4", {})
    torchs = build_decoder(model, tokenizer, "int4", {}, integer_kernels="off")
    assert ours.decoder is not None
    assert torchs.decoder is not None
    assert ours.decoder.dense_from_positions == 0
    assert "prefills on" not in ours.reason
    assert torchs.decoder.dense_from_positions == 2
    assert "prefills on a float32 copy" in torchs.reason


def test_only_the_embedded_model_brings_q4_blocks(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert embedded_q4_blocks(str(tiny_model_dir)) == {}
    fake = tmp_path / "smollm2-135m-instruct"
    fake.mkdir()
    assert embedded_q4_blocks(str(fake)) == {}  # no conversion marker


@pytest.fixture(scope="module")
def int4_server(tiny_model_dir: Path) -> Iterator[tuple[str, Any]]:
    settings = InferenceSettings(
        model=str(tiny_model_dir), served_model_name="tiny", weights="int4"
    )
    app = create_app(settings)
    with serve_app(app) as url:
        wait_healthy(url, timeout=300)
        yield url, app


def test_a_chat_completion_on_int4_weights(int4_server: tuple[str, Any]) -> None:
    url, app = int4_server
    engine = app.state.engine
    assert engine.weights == "int4"
    assert engine.batcher.fast_decoder.weights == "int4"
    # --compile-decode auto: compiled before serving where a C++ compiler is found, as
    # here and in CI
    assert engine.batcher.fast_decoder.compiled_decode
    # --integer-kernels auto: our integer kernels where they build, as here and in CI
    assert engine.batcher.fast_decoder.int_dot == (int_dot_available() is None)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None
    assert reply.usage.completion_tokens >= 1


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any, Any]:
    """The embedded model, its tokenizer and its GGUF's Q4_1 blocks."""
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_dir), embedded_q4_blocks(str(smollm2_dir))


@pytest.mark.slow
def test_smollm2_int4_layers_are_its_gguf_blocks(smollm2: tuple[Any, Any, Any]) -> None:
    model, tokenizer, blocks = smollm2
    assert len(blocks) == 210
    choice = build_decoder(model, tokenizer, "int4", blocks)
    assert choice.decoder is not None
    assert choice.weights == "int4"
    assert choice.decoder.exact_q4_blocks == 210
    assert "210 projections from the GGUF's Q4_1 blocks" in choice.reason


@pytest.mark.slow
def test_smollm2_auto_serves_the_fastest_format_of_this_cpu(
    smollm2: tuple[Any, Any, Any],
) -> None:
    """On SmolLM2 the fastest format of this CPU kind (int4 from the GGUF's own blocks
    with native bfloat16, w8a8 on AVX2) passes the quality check."""
    model, tokenizer, blocks = smollm2
    choice = build_decoder(model, tokenizer, "auto", blocks)
    fastest = weights_module.SPEED_ORDER[weights_module.cpu_kind()[0]][0]
    assert choice.weights == fastest
    assert f"{fastest} perplexity" in choice.reason
    assert "tolerance 2%" in choice.reason
