"""The node estimator on model x SKU cases worked out by hand (sizes in GiB).

Shared figures: 2**30 B = 1 GiB; bytes per token (2 x layers x kv_heads x head_dim x 2):
Llama-3.1-8B and Phi-4-mini 131072 (32 layers, 8 KV heads); Llama-3.3-70B 327680
(80 layers, 8 KV heads); DeepSeek-R1-Distill-Qwen-14B 196608 (48 layers, 8 KV heads).
Usable per GPU is 0.84 x memory: A10/A10G 24 -> 20.16; A100 80 -> 67.2; A100 40 -> 33.6.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kaito_sdk.estimator import EstimateError, NodeEstimate, estimate_nodes
from kaito_sdk.presets import Preset, UnknownPresetError, list_presets, resolve_preset
from kaito_sdk.skus import GpuSku, find_sku, list_skus

CASES = [
    # Llama-3.1-8B (14.96) on NV36ads_A10_v5 (1 x 24), context 2048:
    # size 14.96 x 1.02 = 15.2592; reserve 2.3 + 2048 x 131072 / 2**30 / 1 = 2.3 + 0.25
    # = 2.55; room (20.16 - 2.55) / 1.05 = 16.7714; min floor(0.91) + 1 = 1; nodes 1.
    ("llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5", None, 1, 1, 1, 1, 1),
    # Same with max-model-len 32768: KV 32768 x 131072 / 2**30 = 4; reserve 6.3;
    # room (20.16 - 6.3) / 1.05 = 13.2; min floor(15.2592 / 13.2 = 1.156) + 1 = 2;
    # nodes ceil(2 / 1) = 2: TP 1, PP 2.
    ("llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5", 32768, 2, 2, 2, 1, 2),
    # Llama-3.1-8B on NC24ads_A100_v4 (1 x 80), max-model-len 131072: KV 16;
    # reserve 18.3; room (67.2 - 18.3) / 1.05 = 46.571; min floor(0.33) + 1 = 1; nodes 1.
    ("llama-3.1-8b-instruct", "Standard_NC24ads_A100_v4", 131072, 1, 1, 1, 1, 1),
    # Llama-3.3-70B (131.42) on ND96asr_v4 (8 x A100 40): size 134.0484; reserve
    # 2.3 + 2048 x 327680 / 2**30 / 8 = 2.3 + 0.078125 = 2.378125; room (33.6 - 2.378125)
    # / 1.05 = 29.7351; min floor(4.508) + 1 = 5; nodes ceil(5 / 8) = 1: TP 8, PP 1.
    ("llama-3.3-70b-instruct", "Standard_ND96asr_v4", None, 1, 5, 8, 8, 1),
    # Llama-3.3-70B on NC24ads_A100_v4 (1 x 80): reserve 2.3 + 0.625 = 2.925; room
    # (67.2 - 2.925) / 1.05 = 61.2143; min floor(134.0484 / 61.2143 = 2.19) + 1 = 3;
    # nodes 3: multi-node, TP 1, PP 3.
    ("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", None, 3, 3, 3, 1, 3),
    # Phi-4-mini (7.15) on NV36ads_A10_v5: size 7.293; room 16.7714 (as case 1); min 1.
    ("phi-4-mini-instruct", "Standard_NV36ads_A10_v5", None, 1, 1, 1, 1, 1),
    # DeepSeek-R1-Distill-Qwen-14B (27.51) on g5.12xlarge (4 x A10G 24): size 28.0602;
    # reserve 2.3 + 2048 x 196608 / 2**30 / 4 = 2.3 + 0.09375 = 2.39375; room
    # (20.16 - 2.39375) / 1.05 = 16.9202; min floor(1.658) + 1 = 2; nodes ceil(2 / 4) = 1;
    # 27.51 >= 12 (half a GPU): TP 4.
    ("deepseek-r1-distill-qwen-14b", "g5.12xlarge", None, 1, 2, 4, 4, 1),
    # Same with max-model-len 131072: KV 131072 x 196608 / 2**30 = 24, / 4 GPUs = 6;
    # reserve 8.3; room (20.16 - 8.3) / 1.05 = 11.2952; min floor(2.484) + 1 = 3; nodes 1.
    ("deepseek-r1-distill-qwen-14b", "g5.12xlarge", 131072, 1, 3, 4, 4, 1),
    # Llama-3.1-70B on ND96isr_H200_v5 (8 x 141): usable 118.44; reserve 2.378125; room
    # (118.44 - 2.378125) / 1.05 = 110.5351; min floor(1.213) + 1 = 2; nodes 1; TP 8.
    ("llama-3.1-70b-instruct", "Standard_ND96isr_H200_v5", None, 1, 2, 8, 8, 1),
]


@pytest.mark.parametrize(
    ("preset", "sku", "max_model_len", "nodes", "min_gpus", "total_gpus", "tp", "pp"), CASES
)
def test_hand_worked_cases(
    preset: str,
    sku: str,
    max_model_len: int | None,
    nodes: int,
    min_gpus: int,
    total_gpus: int,
    tp: int,
    pp: int,
) -> None:
    result = estimate_nodes(preset, sku, max_model_len=max_model_len)
    assert (result.node_count, result.min_gpus, result.total_gpus) == (nodes, min_gpus, total_gpus)
    assert (result.tensor_parallel_size, result.pipeline_parallel_size) == (tp, pp)
    assert result.data_parallel_size == 1
    assert result.context_length == (max_model_len or 2048)
    assert len(result.explanation) == 7
    assert f"nodes = ceil({min_gpus} / " in result.explanation[5]


def test_intermediate_figures_of_llama_8b_on_a10() -> None:
    result = estimate_nodes("llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5")
    assert result.model_size_gib == pytest.approx(15.2592)
    assert result.usable_per_gpu_gib == pytest.approx(20.16)
    assert result.reserve_per_gpu_gib == pytest.approx(2.55)
    assert result.room_per_gpu_gib == pytest.approx(17.61 / 1.05)
    assert result.explanation[0] == "model size = 14.96 GiB weights x 1.02 = 15.26 GiB"
    assert "2048 tokens x 131072 B/token / 1 GPU(s) = 2.55 GiB" in result.explanation[2]


def test_a_small_model_on_a_multi_gpu_node_runs_data_parallel() -> None:
    # Phi-4-mini 7.15 GiB < 12 (half of a 24 GiB A10G) on g5.12xlarge (4 GPUs): one copy
    # per GPU. Reserve 2.3 + 0.25 / 4 = 2.3625; room 16.95; min 1; nodes 1.
    result = estimate_nodes("phi-4-mini-instruct", "g5.12xlarge")
    assert (result.node_count, result.total_gpus) == (1, 4)
    assert (result.tensor_parallel_size, result.data_parallel_size) == (1, 4)
    assert result.pipeline_parallel_size == 1
    assert "data parallel 4" in result.explanation[-1]


def test_accepts_typed_preset_and_sku() -> None:
    preset = resolve_preset("qwen2.5-7b-instruct")
    sku = find_sku("Standard_NC24ads_A100_v4")
    assert sku is not None
    result = estimate_nodes(preset, sku)
    assert isinstance(result, NodeEstimate)
    assert result.preset == "qwen2.5-7b-instruct"
    assert result.instance_type == "Standard_NC24ads_A100_v4"


def test_more_context_never_needs_fewer_gpus() -> None:
    previous = 0
    for context in (1024, 8192, 32768, 65536, 131072):
        gpus = estimate_nodes("llama-3.1-8b-instruct", "g5.xlarge", max_model_len=context).min_gpus
        assert gpus >= previous
        previous = gpus


def test_context_beyond_the_model_limit_is_refused() -> None:
    with pytest.raises(EstimateError, match=r"max-model-len 8192 exceeds .* \(4096 tokens\)"):
        estimate_nodes("phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5", max_model_len=8192)
    with pytest.raises(EstimateError, match="positive"):
        estimate_nodes("phi-4", "Standard_NV36ads_A10_v5", max_model_len=0)


def test_kv_reserve_filling_a_gpu_is_refused() -> None:
    # Llama-3.3-70B at 131072 tokens: KV 131072 x 327680 / 2**30 = 40 GiB on a 24 GiB A10:
    # reserve 42.3 > usable 20.16, so no room at all.
    with pytest.raises(EstimateError, match=r"KV cache for 131072 tokens \(40.00 GiB"):
        estimate_nodes("llama-3.3-70b-instruct", "Standard_NV36ads_A10_v5", max_model_len=131072)


def test_presets_without_metadata_or_gpus_are_refused() -> None:
    with pytest.raises(EstimateError, match="not in the preset catalog"):
        estimate_nodes("someorg/new-model", "Standard_NC24ads_A100_v4")
    with pytest.raises(EstimateError, match="CPU preset"):
        estimate_nodes("smollm2-135m-instruct", "Standard_NC24ads_A100_v4")
    with pytest.raises(EstimateError, match="not in the GPU SKU catalog"):
        estimate_nodes("phi-4", "Standard_D4s_v5")
    with pytest.raises(UnknownPresetError):
        estimate_nodes("no-such-model", "Standard_NC24ads_A100_v4")


def test_indivisible_heads_are_flagged() -> None:
    # Falcon-7B has 71 attention heads: tensor parallel 8 cannot split them.
    result = estimate_nodes("falcon-7b", "Standard_ND96asr_v4")
    assert result.data_parallel_size == 8  # 13.44 < 20: small enough for data parallel
    assert result.warnings == ()
    big = Preset.model_validate(
        resolve_preset("falcon-7b").model_dump() | {"name": "falcon-big", "weight_size_gib": 30}
    )
    flagged = estimate_nodes(big, "Standard_ND96asr_v4")
    assert flagged.tensor_parallel_size == 8
    assert "71 attention heads" in flagged.warnings[0]


def test_every_gpu_preset_fits_some_sku_at_default_context() -> None:
    for preset in list_presets():
        if preset.is_cpu:
            continue
        result = estimate_nodes(preset, "Standard_ND96isr_H200_v5")
        assert result.node_count >= 1
        assert math.isclose(result.model_size_gib, (preset.weight_size_gib or 0) * 1.02)


GPU_PRESETS = [p for p in list_presets() if not p.is_cpu]


@settings(max_examples=200, deadline=None)
@given(
    preset=st.sampled_from(GPU_PRESETS),
    sku=st.sampled_from(list_skus()),
    context=st.integers(min_value=1, max_value=1_048_576),
)
def test_estimates_hold_the_model_and_use_every_gpu(
    preset: Preset, sku: GpuSku, context: int
) -> None:
    assume(preset.context_length is not None and context <= preset.context_length)
    assert preset.bytes_per_token is not None
    reserve = 2.3 + context * preset.bytes_per_token / 2**30 / sku.gpu_count
    if reserve >= 0.84 * sku.gpu_memory_gib:
        with pytest.raises(EstimateError, match="KV cache"):
            estimate_nodes(preset, sku, max_model_len=context)
        return
    result = estimate_nodes(preset, sku, max_model_len=context)
    # min_gpus is the smallest count whose room holds the weights: floor(x) + 1 > x >= floor(x).
    assert result.min_gpus * result.room_per_gpu_gib > result.model_size_gib
    assert (result.min_gpus - 1) * result.room_per_gpu_gib <= result.model_size_gib
    assert result.total_gpus == result.node_count * sku.gpu_count >= result.min_gpus
    layout = result.tensor_parallel_size * result.pipeline_parallel_size
    assert layout * result.data_parallel_size == result.total_gpus
    assert result.pipeline_parallel_size == result.node_count
