"""The in-place KV cache reproduces transformers' own; a batch's rows merge and drop."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig

from kaito_cpu_runtime.kvcache import (
    GrowableLayer,
    append_rows,
    concat_rows,
    keep_rows,
    new_batch_cache,
)


def tiny_llama() -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def decode_logits(model: torch.nn.Module, cache: object, steps: int = 70) -> torch.Tensor:
    """Prefill 5 tokens for 3 rows, then ``steps`` greedy decode steps; stacked logits."""
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [3, 3, 3, 3, 3]])
    collected = []
    with torch.inference_mode():
        out = model(input_ids=ids, cache=cache, use_cache=True)
        for _ in range(steps):  # beyond the initial 64-token capacity: the buffer grows
            collected.append(out.logits[:, -1])
            out = model(input_ids=out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
    return torch.stack(collected)


def test_growable_cache_matches_dynamic_cache() -> None:
    model = tiny_llama()
    cache = new_batch_cache(model.config)
    assert all(isinstance(layer, GrowableLayer) for layer in cache.layers)
    ours = decode_logits(model, cache)
    reference = decode_logits(model, DynamicCache(config=model.config))
    torch.testing.assert_close(ours, reference)
    assert cache.get_seq_length() == 5 + 70


def test_later_caches_of_a_config_are_built_alike_and_stay_separate() -> None:
    model = tiny_llama()
    first, second = new_batch_cache(model.config), new_batch_cache(model.config)
    assert [type(layer) for layer in second.layers] == [type(layer) for layer in first.layers]
    assert second.layer_class_to_replicate is first.layer_class_to_replicate is None
    assert not set(map(id, first.layers)) & set(map(id, second.layers))
    torch.testing.assert_close(
        decode_logits(model, second, steps=3),
        decode_logits(model, DynamicCache(config=model.config), steps=3),
    )
    assert first.get_seq_length() == 0


def test_sliding_window_layers_keep_their_class() -> None:
    config = tiny_llama().config
    config.layer_types = ["sliding_attention", "full_attention"]
    config.sliding_window = 16
    for _ in range(2):
        kinds = [type(layer).__name__ for layer in new_batch_cache(config).layers]
        assert kinds == ["DynamicSlidingWindowLayer", "GrowableLayer"]


def test_growable_layer_accepts_assigned_tensors() -> None:
    layer = GrowableLayer()
    merged = torch.randn(2, 1, 4, 8)
    layer.keys, layer.values = merged, merged.clone()
    keys, values = layer.update(torch.ones(2, 1, 1, 8), torch.ones(2, 1, 1, 8))
    assert values.shape == keys.shape
    assert keys.shape == (2, 1, 5, 8)
    torch.testing.assert_close(keys[:, :, :4], merged)
    assert layer.get_seq_length() == 5


def cache_of(keys: torch.Tensor) -> Any:
    """A one-layer batch cache holding ``keys`` (values: their negation)."""
    cache = new_batch_cache(tiny_llama().config)
    cache.layers = cache.layers[:1]
    cache.layers[0].keys, cache.layers[0].values = keys, -keys
    return cache


def test_rows_append_left_padded_and_drop_with_their_padding_columns() -> None:
    running = cache_of(torch.arange(1.0, 7.0).view(2, 1, 3, 1))  # 2 rows of 3 tokens
    newcomer = cache_of(torch.tensor([7.0]).view(1, 1, 1, 1))  # 1 row of 1 token
    mask = append_rows(
        running, torch.ones(2, 3, dtype=torch.long), newcomer, torch.ones(1, 1, dtype=torch.long)
    )
    assert mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1]]
    layer = running.layers[0]
    assert layer.keys[:, 0, :, 0].tolist() == [[1, 2, 3], [4, 5, 6], [0, 0, 7]]
    torch.testing.assert_close(layer.values, -layer.keys)
    mask = keep_rows(running, mask, torch.tensor([2]))  # only the newcomer stays
    assert mask.tolist() == [[1]]
    assert layer.keys[:, 0, :, 0].tolist() == [[7]]
    assert layer.values[:, 0, :, 0].tolist() == [[-7]]


def test_several_caches_concatenate_as_successive_appends() -> None:
    def parts() -> list[Any]:
        return [
            cache_of(torch.arange(1.0, 5.0).view(2, 1, 2, 1)),  # 2 rows of 2 tokens
            cache_of(torch.tensor([5.0, 6.0, 7.0]).view(1, 1, 3, 1)),  # 1 row of 3
            cache_of(torch.tensor([8.0]).view(1, 1, 1, 1)),  # 1 row of 1
        ]

    def masks() -> list[torch.Tensor]:
        return [torch.ones(2, 2, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                torch.ones(1, 1, dtype=torch.long)]  # fmt: skip

    at_once, one_by_one = parts(), parts()
    mask = concat_rows(at_once, masks())
    stepwise = masks()
    expected = append_rows(one_by_one[0], stepwise[0], one_by_one[1], stepwise[1])
    expected = append_rows(one_by_one[0], expected, one_by_one[2], stepwise[2])
    assert mask.tolist() == expected.tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]]
    layer = at_once[0].layers[0]
    assert layer.keys[:, 0, :, 0].tolist() == [[0, 1, 2], [0, 3, 4], [5, 6, 7], [0, 0, 8]]
    assert torch.equal(layer.keys, one_by_one[0].layers[0].keys)
    torch.testing.assert_close(layer.values, -layer.keys)
    lone = cache_of(torch.ones(1, 1, 2, 1))
    assert concat_rows([lone], [torch.ones(1, 2)]).tolist() == [[1, 1]]
