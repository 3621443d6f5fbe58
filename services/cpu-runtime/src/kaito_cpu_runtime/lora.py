"""Plain LoRA adapters of a PEFT-wrapped Llama-family model, read for the fast decoder.

:func:`read_lora` collects each adapter's low-rank matrices by where they land in
:class:`~kaito_cpu_runtime.llama_decoder.FastDecoder`'s fused projections (query, key and
value fused; gate and up fused), so the decoder can add every row's update on top of the
shared base projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

__all__ = ["LoraTable", "LoraUpdate", "read_lora"]

#: (layer index, fused projection, part index) -> adapter name -> its update.
LoraTable = dict[tuple[int, str, int], dict[str, "LoraUpdate"]]


@dataclass(frozen=True)
class LoraUpdate:
    """One adapter's low-rank update of one projection: ``(x @ A.T) @ B.T (+ b)``, scaled."""

    down: torch.Tensor
    up: torch.Tensor
    up_bias: torch.Tensor | None
    scale: float

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update for float32 ``x``."""
        hidden = functional.linear(x, self.down)
        return functional.linear(hidden, self.up, self.up_bias) * self.scale


# Where each PEFT target lands in the fused layers: (fused layer, part index).
_TARGETS = {
    "q_proj": ("qkv", 0),
    "k_proj": ("qkv", 1),
    "v_proj": ("qkv", 2),
    "o_proj": ("out", 0),
    "gate_proj": ("gate_up", 0),
    "up_proj": ("gate_up", 1),
    "down_proj": ("down", 0),
}


def read_lora(model: Any) -> LoraTable | None:
    """Plain LoRA weights of a PEFT model, keyed by (layer, fused layer, part), then adapter.

    ``None`` when an adapter uses anything else (DoRA and other variants, merged weights,
    targets outside the decoder layers' projections).
    """
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415  (only with adapters)

    table: LoraTable = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        parts = name.split(".")
        target = _TARGETS.get(parts[-1])
        if target is None or "layers" not in parts or module.merged or module.lora_variant:
            return None
        layer = int(parts[parts.index("layers") + 1])
        entries = table.setdefault((layer, *target), {})
        down: Any
        for adapter, down in module.lora_A.items():
            up: Any = module.lora_B[adapter]
            scale = float(module.scaling[adapter])
            entries[adapter] = LoraUpdate(down.weight, up.weight, up.bias, scale)
    return table
