"""A lean CPU forward pass for BERT encoders (all-MiniLM-L6-v2 and its relatives).

The same arithmetic as ``transformers``' ``BertModel`` (embeddings, then per layer:
self-attention with scaled-dot-product attention, output projection, residual and
LayerNorm, a GELU feed-forward, residual and LayerNorm), written as about ten tensor
operations per layer: query, key and value are one prepacked oneDNN linear, GELU is fused
into the feed-forward's first linear, and no Python runs per module. Measured here (one
thread, queries of 4-9 words, bfloat16): 3.4 ms instead of 5.4 ms for one query through
``BertModel`` with the same prepacked linears, 1.7 instead of 2.2 ms per query in batches
of 8. In float32 it reproduces ``BertModel`` to about 1e-7.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from kaito_cpu_runtime.linear import Activation, PackedLinear

__all__ = ["BertEncoder"]

log = logging.getLogger(__name__)


def _pack(layer: nn.Linear, dtype: torch.dtype, activation: Activation = "none") -> PackedLinear:
    return PackedLinear(layer.weight, layer.bias, dtype, float32_io=False, activation=activation)


class _Layer:
    def __init__(self, layer: Any, dtype: torch.dtype) -> None:
        attention = layer.attention.self
        self.qkv = PackedLinear(
            torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]),
            torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]),
            dtype,
            float32_io=False,
        )
        self.attention_out = _pack(layer.attention.output.dense, dtype)
        self.attention_norm = _norm(layer.attention.output.LayerNorm, dtype)
        self.up = _pack(layer.intermediate.dense, dtype, "gelu")
        self.down = _pack(layer.output.dense, dtype)
        self.output_norm = _norm(layer.output.LayerNorm, dtype)


def _norm(norm: nn.LayerNorm, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float]:
    return norm.weight.detach().to(dtype), norm.bias.detach().to(dtype), norm.eps


class BertEncoder:
    """``BertModel.forward(...).last_hidden_state`` in ``dtype`` with prepacked linears."""

    def __init__(self, model: Any, dtype: torch.dtype) -> None:
        config = model.config
        embeddings = model.embeddings
        self.dtype = dtype
        self.heads = int(config.num_attention_heads)
        self.word = embeddings.word_embeddings.weight.detach().to(dtype)
        self.position = embeddings.position_embeddings.weight.detach().to(dtype)
        self.token_type = embeddings.token_type_embeddings.weight.detach().to(dtype)
        self.embedding_norm = _norm(embeddings.LayerNorm, dtype)
        self.layers = [_Layer(layer, dtype) for layer in model.encoder.layer]

    @classmethod
    def build(cls, model: nn.Module, dtype: torch.dtype) -> BertEncoder | None:
        """The lean encoder for a plain BERT ``model``; None for anything else.

        "Plain" means what this forward implements: absolute positions, exact (erf) GELU,
        an encoder without cross-attention, and oneDNN in this torch build.
        """
        config = getattr(model, "config", None)
        if (
            config is None
            or getattr(config, "model_type", None) != "bert"
            or getattr(config, "hidden_act", None) != "gelu"
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or getattr(config, "is_decoder", False)
            or getattr(config, "add_cross_attention", False)
            or not torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]  # unannotated in torch
        ):
            return None
        try:
            with torch.inference_mode():
                return cls(model, dtype)
        except (AttributeError, RuntimeError) as exc:
            log.warning("lean BERT encoder unavailable (%s); using the transformers model", exc)
            return None

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings, shape (batch, tokens, hidden), in ``dtype``; zeros at padding.

        Only real tokens go through the linear layers and LayerNorms (a batch of short
        queries is 15-20 % padding); they are scattered into the padded layout for
        attention alone.
        """
        batch, length = input_ids.shape
        real = attention_mask.reshape(-1).nonzero().squeeze(1)
        positions = torch.arange(length).repeat(batch)[real]
        x = (
            F.embedding(input_ids.reshape(-1)[real], self.word)
            + F.embedding(token_type_ids.reshape(-1)[real], self.token_type)
            + self.position[positions]
        )
        hidden = x.shape[-1]
        head_size = hidden // self.heads
        x = F.layer_norm(x, (hidden,), *self.embedding_norm)
        keep = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            qkv = x.new_zeros(batch * length, 3 * hidden).index_copy_(0, real, layer.qkv(x))
            query, key, value = qkv.view(batch, length, 3, self.heads, head_size).permute(
                2, 0, 3, 1, 4
            )
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=keep)
            attended = attended.transpose(1, 2).reshape(batch * length, hidden)[real]
            x = F.layer_norm(layer.attention_out(attended) + x, (hidden,),
                             *layer.attention_norm)  # fmt: skip
            up = layer.up(x)
            x = F.layer_norm(layer.down(up) + x, (hidden,), *layer.output_norm)
        out = x.new_zeros(batch * length, hidden).index_copy_(0, real, x)
        return out.view(batch, length, hidden)
