"""Faster linear layers on CPU: weights prepacked once for oneDNN, in float32 or bfloat16.

oneDNN's prepacked linear (``torch.ops.mkldnn._linear_pointwise``, the kernel torch's own
inductor uses for frozen CPU linears) against ``F.linear``, measured here:

- SmolLM2's projections (2 AVX2 cores, batch 16, float32): 1.6-1.9x faster;
- all-MiniLM-L6-v2 (AMD EPYC with ``avx512_bf16``, one thread, queries of 4-9 words):
  12.4 ms for one query and 3.9 ms per query in batches of 8 with ``F.linear`` in
  float32; 7.1 and 3.4 ms prepacked; the whole encoder in bfloat16 with prepacked weights
  5.1 and 2.3 ms, with embeddings within cosine 0.9999 of float32.

:class:`PackedLinear` is the one packed layer of the runtime (the Llama decoder's fused
projections, the BERT encoder's layers, and a model's own ``nn.Linear`` layers through
:func:`pack_linear_layers`). :func:`has_native_bf16` tells whether bfloat16 is worth it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = ["Activation", "PackedLinear", "cpu_flags", "has_native_bf16", "pack_linear_layers"]

log = logging.getLogger(__name__)

_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
Activation = Literal["none", "gelu"]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty when ``cpuinfo`` cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX).

    Without it oneDNN emulates bf16 and float32 is faster, so ``auto`` precision keeps
    float32 there.
    """
    return bool(_BF16_FLAGS & cpu_flags(cpuinfo))


class PackedLinear:
    """``y = act(x @ W.T + b)`` through oneDNN with ``W`` prepacked once in ``dtype``.

    Two ways to run, chosen by ``float32_io``:

    - ``True`` (the Llama decoder's): float32 in and out whatever ``dtype`` is. Inputs are
      cast to ``dtype`` for the product, the result back to float32, and the bias is added
      in float32 afterwards, so only the weights and the product's inputs are bfloat16.
    - ``False`` (the BERT encoder's, and a model's own layers): everything in ``dtype``;
      inputs must already be in it. The bias (cast to ``dtype``) and ``activation``
      (``"gelu"``: exact, erf GELU) are fused into the oneDNN call.

    ``part_sizes`` are the output widths of the projections fused into ``W`` (one part,
    the whole width, by default).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        dtype: torch.dtype,
        part_sizes: tuple[int, ...] = (),
        *,
        float32_io: bool = True,
        activation: Activation = "none",
    ) -> None:
        if float32_io and activation != "none":
            raise ValueError("activation: only fused with float32_io=False")
        self.dtype = dtype
        self.float32_io = float32_io
        self.activation = activation
        self.part_sizes = part_sizes or (int(weight.shape[0]),)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().to(dtype).contiguous(), None
        )
        bias_dtype = torch.float32 if float32_io else dtype
        self.bias = None if bias is None else bias.detach().to(bias_dtype)
        # oneDNN's algorithm argument: exact GELU is "none" ("tanh" would approximate).
        self._algorithm = "none" if activation == "gelu" else ""

    def __call__(self, x: torch.Tensor, *, widen: bool = True) -> torch.Tensor:
        """Apply the layer to ``x`` (any leading dimensions); see the class docstring.

        With ``float32_io``, ``widen=False`` and no bias, the result stays in ``dtype`` (for
        a caller that only adds it to float32, which widens it exactly).
        """
        if not self.float32_io:
            fused: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
                x.contiguous(), self.weight, self.bias, self.activation, [], self._algorithm
            )
            return fused
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self.weight, None, "none", [], ""
        )
        if out.dtype != torch.float32 and (widen or self.bias is not None):
            out = out.float()
        if self.bias is not None:
            out += self.bias
        return out


def pack_linear_layers(model: nn.Module, dtypes: Collection[torch.dtype] = (torch.float32,)) -> int:
    """Give every CPU ``nn.Linear`` of ``model`` whose weights are in ``dtypes`` a oneDNN
    forward with prepacked weights (a :class:`PackedLinear` in the layer's own dtype).

    The layers stay ``nn.Linear`` (only their ``forward`` changes), so PEFT still wraps
    them for LoRA; the original weights stay in place for it. Convert the model to its
    dtype first. Returns the number of layers packed: 0 when oneDNN is unavailable or a
    packed layer does not reproduce ``F.linear`` on a probe input, in which case the model
    is left untouched.
    """
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]  # unannotated in torch
        return 0
    linears = [
        m
        for m in model.modules()
        if type(m) is nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype in dtypes
    ]
    try:
        with torch.inference_mode():
            packed = [
                PackedLinear(m.weight, m.bias, m.weight.dtype, float32_io=False) for m in linears
            ]
            checked: set[tuple[int, int, bool, torch.dtype]] = set()
            for layer, forward in zip(linears, packed, strict=True):
                key = (layer.in_features, layer.out_features, layer.bias is not None,
                       layer.weight.dtype)  # fmt: skip
                if key in checked:  # one probe per distinct layer shape is enough
                    continue
                checked.add(key)
                probe = torch.randn(3, layer.in_features).to(layer.weight.dtype)
                got = forward(probe).float()
                want = nn.functional.linear(probe, layer.weight, layer.bias).float()
                tolerance = 2e-2 if layer.weight.dtype == torch.bfloat16 else 1e-3
                if not torch.allclose(got, want, atol=tolerance, rtol=tolerance):
                    log.warning("oneDNN linear does not match F.linear; not packing")
                    return 0
    except (RuntimeError, AttributeError) as exc:
        log.warning("oneDNN prepacking unavailable (%s); using F.linear", exc)
        return 0
    for layer, forward in zip(linears, packed, strict=True):
        # Per instance, on purpose: only the layers checked above get the packed forward.
        layer.forward = forward  # type: ignore[method-assign,assignment]  # the packed kernel replaces the module's forward
    return len(linears)
