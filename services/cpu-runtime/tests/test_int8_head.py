"""The LM head with int8 activations: what it computes, that a row's numbers do not
depend on its batch or the thread count, where it is unavailable, and in the decoder."""

from __future__ import annotations

import pytest
import torch

from kaito_cpu_runtime.int8_head import (
    FLOAT_CHANNELS,
    int8_head_available,
    largest_channels,
    split_int8_head,
)
from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.quantized import int8_round_trip

MISSING = int8_head_available()
needs_int8_dot = pytest.mark.skipif(
    MISSING is not None, reason=f"int8 x int8 head unavailable on this CPU: {MISSING}"
)


def hidden_with_outliers(rows: int, generator: torch.Generator) -> torch.Tensor:
    """Hidden states like a final norm's output: a few channels ten times the others."""
    hidden = torch.randn(rows, 96, generator=generator)
    hidden[:, [3, 40, 77]] *= 12
    return hidden


def test_the_largest_channels_are_the_outliers_in_ascending_order() -> None:
    hidden = hidden_with_outliers(20, torch.Generator().manual_seed(0))
    assert largest_channels(hidden, 3).tolist() == [3, 40, 77]
    assert largest_channels(hidden[None], 3).tolist() == [3, 40, 77]  # any leading dims
    assert len(largest_channels(hidden, 500)) == 96


def test_a_cpu_without_int8_dot_products_is_refused_with_the_reason() -> None:
    reason = int8_head_available(frozenset({"avx2", "fma"}))
    assert reason is not None
    assert "avx512_vnni" in reason


@needs_int8_dot
def test_the_head_computes_its_weights_and_beats_whole_row_quantization() -> None:
    """Within 2% of ``x @ W.T`` for the weights it stands for (int8 activations), and
    nearer float32 than quantizing whole rows, whose scale the outliers set."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(256, 96, generator=generator) * 0.05
    hidden = hidden_with_outliers(8, generator)
    channels = largest_channels(hidden_with_outliers(30, generator), FLOAT_CHANNELS)
    layer, stands_for = split_int8_head(weight, None, channels)
    with torch.inference_mode():
        got = layer(hidden)
    assert torch.equal(stands_for[:, channels], weight[:, channels])  # kept exactly
    want = hidden @ stands_for.T
    assert float((got - want).abs().max()) <= 0.02 * float(want.abs().max())
    row_scale = hidden.abs().amax(-1, keepdim=True) / 127
    whole_rows = torch.round(hidden / row_scale) * row_scale @ int8_round_trip(weight).T
    exact = hidden @ weight.T
    assert (got - exact).abs().mean() < (whole_rows - exact).abs().mean()


@needs_int8_dot
def test_a_row_gets_the_same_logits_alone_in_any_batch_and_thread_count() -> None:
    """Integer sums and a float32 part summed in one block: bit for bit the same."""
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(4096, 96, generator=generator)
    hidden = hidden_with_outliers(40, generator)
    layer, _ = split_int8_head(weight, None, largest_channels(hidden, FLOAT_CHANNELS))
    threads = torch.get_num_threads()
    with torch.inference_mode():
        alone = torch.cat([layer(hidden[row : row + 1]) for row in range(40)])
        for rows in (2, 3, 7, 16, 17, 40):
            assert torch.equal(layer(hidden[:rows]), alone[:rows]), f"{rows} rows"
        try:
            torch.set_num_threads(1)
            assert torch.equal(layer(hidden[:16]), alone[:16])
        finally:
            torch.set_num_threads(threads)


@needs_int8_dot
def test_the_decoder_calibrates_its_head_on_the_tokens_given() -> None:
    """An int4 decoder given calibration tokens multiplies int8 activations in its head and
    stays near the float32 forward; without them (or with int8-free formats) it does not."""
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    ids = torch.arange(10, 40)[None]
    calibrated = FastDecoder.build(
        model, weights="int4", activation_dtype=torch.float32, int8_head_calibration=ids
    )
    plain = FastDecoder.build(model, weights="int4", activation_dtype=torch.float32)
    floats = FastDecoder.build(model, weights="float32", int8_head_calibration=ids)
    assert calibrated is not None
    assert plain is not None
    assert floats is not None
    assert calibrated.int8_head_activations
    assert not plain.int8_head_activations
    assert not floats.int8_head_activations
    from kaito_cpu_runtime.kvcache import new_batch_cache  # noqa: PLC0415

    with torch.inference_mode():
        want = model(input_ids=ids).logits[0, -1]
        got = calibrated(ids, torch.ones_like(ids), torch.arange(30)[None], new_batch_cache(config))
    assert float((got[0] - want).abs().max()) <= 0.1 * float(want.abs().max())


def test_onednn_held_to_avx2_is_refused() -> None:
    """Where oneDNN may only use AVX2 (no int8 dot products: u8 x s8 pairs saturate in 16
    bits), the head is refused, by the CPU's flags or by the probe."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = "from kaito_cpu_runtime.int8_head import int8_head_available as a; print(a())"
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() != "None", out.stdout
