"""Attention for the fast Llama decoder: the additive mask of a pass, attention that keeps
a left-padded row's numbers those of the row alone, and prefill attention whose rows do
not depend on how many rows the pass computes."""

from __future__ import annotations

import torch
from torch.nn import functional

__all__ = ["QUERY_ROWS_MULTIPLE", "attention", "causal_mask", "prefill_attention", "row_starts"]

#: Prefill attention computes its queries in a multiple of this many rows (see
#: :func:`prefill_attention`).
QUERY_ROWS_MULTIPLE = 4


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


def prefill_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    gqa: bool,
) -> torch.Tensor:
    """:func:`attention` of a prefill chunk's ``query`` rows (the last of ``key``'s
    positions) with zero query rows added up to a multiple of :data:`QUERY_ROWS_MULTIPLE`,
    and dropped after. torch's CPU flash attention takes its queries in blocks of 32 (64,
    256 for longer ones), and a last block of 1-3 rows rounds otherwise: the last token of
    a prompt computed alone (after a prefix-cache hit) differed from the same token in
    the whole prompt's pass by 3e-7, and 0.125 in the logits 30 layers on. With the added
    rows every block has 4 or more, and the rows at the end of a prompt got the bits of
    the whole prompt's pass for every length measured (1-40, 63-65, 191-194, 255-257 and
    767-770 rows after 5-1100 positions, one and two threads); the added rows see every
    key, so none is empty."""
    rows = query.shape[-2]
    extra = -rows % QUERY_ROWS_MULTIPLE
    if not extra:
        return attention(query, key, value, mask, None, gqa=gqa)
    total = key.shape[-2]
    if mask is None:
        mask = query.new_zeros((1, 1, rows, total))
    query = torch.cat((query, query.new_zeros((*query.shape[:-2], extra, query.shape[-1]))), -2)
    mask = torch.cat((mask, mask.new_zeros((*mask.shape[:-2], extra, total))), -2)
    return attention(query, key, value, mask, None, gqa=gqa)[..., :rows, :]


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
