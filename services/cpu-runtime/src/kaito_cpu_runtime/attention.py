"""Attention for the fast Llama decoder: the additive mask of a pass, and attention that
keeps a left-padded row's numbers those of the row alone."""

from __future__ import annotations

import torch
from torch.nn import functional

__all__ = ["attention", "causal_mask", "row_starts"]


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    starts: list[int] | None,
    *,
    gqa: bool,
) -> torch.Tensor:
    """Attention of every row (``[batch, heads, length, head_dim]``; ``gqa``: fewer key
    and value heads than query heads); with ``starts`` (a decode step with left-padded
    rows) each row attends alone to its keys from its first real one, so its numbers are
    those of the same row decoded without the others (over padded keys the sums run in
    another order, and rounding to bfloat16 activations can turn that into another
    token)."""
    if starts is None:
        return functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, enable_gqa=gqa
        )
    rows = [
        functional.scaled_dot_product_attention(
            query[row : row + 1],
            key[row : row + 1, :, start:],
            value[row : row + 1, :, start:],
            enable_gqa=gqa,
        )
        for row, start in enumerate(starts)
    ]
    return torch.cat(rows)


def row_starts(attention_mask: torch.Tensor) -> list[int] | None:
    """Each row's first real position when every row is only left-padded, else ``None``
    (a row with a gap attends through the mask)."""
    padding = attention_mask.logical_not().long().cumprod(dim=1).sum(dim=1)
    real = int(attention_mask.bool().sum())
    if real != attention_mask.shape[1] * attention_mask.shape[0] - int(padding.sum()):
        return None
    return [int(start) for start in padding.tolist()]


def causal_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor | None:
    """Additive float ``[batch, 1, length, total]`` (0 or -inf) for ``length`` new
    positions after the cached ones of ``attention_mask`` (``[batch, total]``, 1 = real
    token): causal, no padding keys; a padding query sees itself so no row is empty (an
    empty row would put NaN into the cache). ``None`` for one new position per row and no
    padding: every key counts.

    Built once per forward in the form attention uses (a boolean mask would be converted
    by every layer); adding 0 leaves scores as they are, so ``None`` and a mask of zeros
    give the same numbers.
    """
    keys = attention_mask.bool()[:, None, None, :]
    if length == 1:
        if bool(keys.all()):
            return None
        allowed = keys
    else:
        total = attention_mask.shape[1]
        query_pos = torch.arange(total - length, total, device=attention_mask.device)[:, None]
        key_pos = torch.arange(total, device=attention_mask.device)[None, :]
        allowed = ((key_pos <= query_pos) & keys) | (key_pos == query_pos)
    additive = torch.zeros(allowed.shape, dtype=torch.float32)
    return additive.masked_fill_(allowed.logical_not(), float("-inf"))
