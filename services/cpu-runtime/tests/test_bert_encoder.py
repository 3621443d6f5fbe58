"""The lean BERT encoder computes what ``BertModel`` computes, padding included."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel

from kaito_cpu_runtime.bert_encoder import BertEncoder


def tiny_bert(**overrides: Any) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, **overrides)  # fmt: skip
    return BertModel(config).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three rows, right-padded as a tokenizer pads them; the second has token type 1."""
    torch.manual_seed(1)
    ids = torch.randint(1, 120, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[1, 3:] = 1
    return ids, mask, types


def test_float32_reproduces_bert_model_at_real_tokens() -> None:
    model = tiny_bert()
    encoder = BertEncoder.build(model, torch.float32)
    assert encoder is not None
    ids, mask, types = batch()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = encoder(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert not got[~real].any()  # zeros at padding


def test_bert_variants_it_does_not_implement_get_none() -> None:
    assert BertEncoder.build(tiny_bert(hidden_act="gelu_new"), torch.float32) is None
    relative = tiny_bert(position_embedding_type="relative_key")
    assert BertEncoder.build(relative, torch.float32) is None
    assert BertEncoder.build(torch.nn.Linear(2, 2), torch.float32) is None


@pytest.mark.requires_cpu("avx512bw avx512vl avx512dq", "avx_ne_convert",
                          why="oneDNN's bfloat16 matmul")  # fmt: skip
def test_bfloat16_stays_close_to_float32() -> None:
    model = tiny_bert()
    encoder = BertEncoder.build(model, torch.bfloat16)
    assert encoder is not None
    ids, mask, types = batch()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = encoder(ids, mask, types)
    assert got.dtype == torch.bfloat16
    real = mask.bool()
    cosine = torch.nn.functional.cosine_similarity(got[real].float(), want[real], dim=-1)
    assert cosine.min() > 0.99
