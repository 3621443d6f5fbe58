"""The in-place KV cache and the prepacked linears reproduce transformers' own results."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from kaito_inference.engines.cpu_kernels import pack_linear_layers
from kaito_inference.engines.kvcache import GrowableLayer, new_batch_cache


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


def test_growable_cache_matches_dynamic_cache(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cache = new_batch_cache(model.config)
    assert all(isinstance(layer, GrowableLayer) for layer in cache.layers)
    ours = decode_logits(model, cache)
    reference = decode_logits(model, DynamicCache(config=model.config))
    torch.testing.assert_close(ours, reference)
    assert cache.get_seq_length() == 5 + 70


def test_growable_layer_accepts_assigned_tensors() -> None:
    layer = GrowableLayer()
    merged = torch.randn(2, 1, 4, 8)
    layer.keys, layer.values = merged, merged.clone()
    keys, values = layer.update(torch.ones(2, 1, 1, 8), torch.ones(2, 1, 1, 8))
    assert values.shape == keys.shape
    assert keys.shape == (2, 1, 5, 8)
    torch.testing.assert_close(keys[:, :, :4], merged)
    assert layer.get_seq_length() == 5


def test_prepacked_linears_give_the_same_logits(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        packed = pack_linear_layers(model)
        after = model(input_ids=ids).logits
    assert packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
