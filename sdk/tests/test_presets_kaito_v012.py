"""The presets KAITO v0.12 serves that the catalog lacked (issue #12): names, figures,
parsers, latent-attention KV size, and the estimator's plans for them (sizes in GiB).

Hand-worked figures: usable per GPU is 0.84 x memory (H100 NVL 94 -> 78.96, H100 80 ->
67.2, H200 141 -> 118.44); model size is weights x 1.02; room per GPU is
(usable - reserve) / 1.05 with reserve 2.3 + 2048 x bytes_per_token / 2**30 / GPUs.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kaito_sdk.estimator import estimate_nodes
from kaito_sdk.presets import Preset, Runtime, resolve_preset

KAITO_V012_NAMES = [
    "gpt-oss-20b",
    "gpt-oss-120b",
    "deepseek-r1-0528",
    "deepseek-v3-0324",
    "ministral-3-3b-instruct",
    "ministral-3-8b-instruct",
    "ministral-3-14b-instruct",
    "mistral-large-3-675b-instruct",
    "phi-2",
]


@pytest.mark.parametrize("name", KAITO_V012_NAMES)
def test_every_kaito_v012_preset_resolves_from_the_catalog(name: str) -> None:
    preset = resolve_preset(name)
    assert preset.name == name
    assert not preset.best_effort
    assert preset.weight_size_gib is not None
    assert preset.bytes_per_token is not None
    assert resolve_preset(preset.hf_id) == preset  # the HF id answers too


def test_gpt_oss_parsers_quantization_and_moe_figures() -> None:
    for name in ("gpt-oss-20b", "gpt-oss-120b"):
        preset = resolve_preset(name)
        assert preset.runtime_defaults.tool_call_parser == "openai"
        assert preset.runtime_defaults.reasoning_parser == "openai_gptoss"
        assert preset.quantization is not None
        assert preset.quantization.method == "mxfp4"
        assert set(preset.runtimes) == {Runtime.VLLM, Runtime.TRANSFORMERS}
        assert preset.active_parameters is not None
        assert preset.parameters is not None
        assert preset.active_parameters < preset.parameters / 5
        # 2 x layers x 8 KV heads x 64 x 2 bytes
        assert preset.bytes_per_token == 2 * preset.num_layers * 8 * 64 * 2  # type: ignore[operator]  # set on this preset


def test_latent_attention_caches_only_the_latent_and_the_rotary_key() -> None:
    for name in ("deepseek-r1-0528", "deepseek-v3-0324", "mistral-large-3-675b-instruct"):
        preset = resolve_preset(name)
        # (512 + 64) x 61 layers x 2 bytes, not 2 x 61 x 128 heads x 192 x 2 = 5,996,544
        assert preset.bytes_per_token == 70272
    assert resolve_preset("deepseek-r1-0528").runtime_defaults.reasoning_parser == "deepseek_r1"
    assert resolve_preset("deepseek-v3-0324").runtime_defaults.tool_call_parser == "deepseek_v3"
    large = resolve_preset("mistral-large-3-675b-instruct").runtime_defaults
    assert (large.tool_call_parser, large.load_format) == ("mistral", "mistral")


def test_phi_2_is_legacy_single_node_and_tunable() -> None:
    phi2 = resolve_preset("phi-2")
    assert phi2.deprecated
    assert phi2.tunable
    assert not phi2.multi_node
    assert phi2.context_length == 2048
    assert phi2.dtype == "float16"


def test_gpt_oss_120b_on_two_h100_nvl_is_one_node_tensor_parallel_two() -> None:
    # 60.77 x 1.02 = 61.99; reserve 2.3 + 2048 x 73728 / 2**30 / 2 = 2.3703; room
    # (78.96 - 2.3703) / 1.05 = 72.94; min floor(0.85) + 1 = 1 GPU; nodes 1; the weights
    # exceed half of one 94 GiB GPU, so TP 2 over the node's two GPUs.
    plan = estimate_nodes("gpt-oss-120b", "Standard_NC80adis_H100_v5")
    assert (plan.node_count, plan.min_gpus) == (1, 1)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (2, 1)
    assert plan.room_per_gpu_gib == pytest.approx(72.94, abs=0.01)
    assert plan.explanation[0].startswith("mixture of experts: sized by all 116.8B")
    assert plan.warnings == ()


def test_deepseek_r1_0528_is_sized_by_its_641_gib_of_fp8_weights() -> None:
    # H100 x 8: size 641.3 x 1.02 = 654.126; reserve 2.3 + 2048 x 70272 / 2**30 / 8
    # = 2.3168; room (67.2 - 2.3168) / 1.05 = 61.79; min floor(10.59) + 1 = 11 GPUs;
    # nodes ceil(11 / 8) = 2: TP 8, PP 2 over Ray.
    h100 = estimate_nodes("deepseek-r1-0528", "Standard_ND96isr_H100_v5")
    assert (h100.node_count, h100.min_gpus, h100.tensor_parallel_size) == (2, 11, 8)
    assert h100.pipeline_parallel_size == 2
    # H200 x 8: room (118.44 - 2.3168) / 1.05 = 110.59; min floor(5.91) + 1 = 6; 1 node.
    h200 = estimate_nodes("deepseek-r1-0528", "Standard_ND96isr_H200_v5")
    assert (h200.node_count, h200.min_gpus, h200.tensor_parallel_size) == (1, 6, 8)


def test_a_single_node_preset_that_needs_two_nodes_is_flagged() -> None:
    # phi-2 fits one A100 easily; the same preset made 200 GiB heavy needs several nodes,
    # which KAITO does not allow for it (supportDistributedInference false).
    phi2 = resolve_preset("phi-2")
    many = phi2.model_copy(update={"weight_size_gib": 200.0})
    plan = estimate_nodes(many, "Standard_NC24ads_A100_v4")
    assert plan.node_count > 1
    assert any("one node only" in warning for warning in plan.warnings)
    assert estimate_nodes(phi2, "Standard_NC24ads_A100_v4").warnings == ()


def test_schema_guards_the_new_fields() -> None:
    base = {"name": "x", "hf_id": "org/x"}
    with pytest.raises(ValidationError, match="active_parameters"):
        Preset.model_validate({**base, "parameters": 10, "active_parameters": 11})
    with pytest.raises(ValidationError, match="kv_lora_rank"):
        Preset.model_validate({**base, "kv_lora_rank": 512})
