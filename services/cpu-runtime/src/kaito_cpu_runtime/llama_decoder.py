"""A lean forward pass for Llama-family decoders on CPU: the batcher's fast path.

Hugging Face's modelling code runs about forty small tensor operations and a dozen
``nn.Module`` calls per decoder layer and reads every projection's weights separately.
This module and its layers (:mod:`kaito_cpu_runtime.llama_layers`) run the same
mathematics with fewer, larger operations:

- the query/key/value projections and the gate/up projections are fused, so each layer
  makes four matrix multiplications instead of seven, all through oneDNN with weights
  prepacked once; with bfloat16 linears (the inference service's ``--dtype bfloat16``)
  the packed weights are bfloat16 (on CPUs
  with AVX512-BF16 or AMX about 1.5x faster; activations, norms, attention and
  accumulation stay float32), otherwise float32;
- RMSNorm is ``torch.nn.functional.rms_norm``; the rotary embedding is applied to
  queries and keys together; residual additions happen in place;
- the linear weights are float32 or bfloat16 (oneDNN, prepacked) or int8 or int4
  (:mod:`kaito_cpu_runtime.quantized`, torch's weight-only kernels, or our integer dot
  products with int8 activations, :mod:`kaito_cpu_runtime.int_dot`), by ``weights``;
  int4 takes a GGUF file's Q4_1 blocks as they are when given them (``q4_blocks``), and the
  LM head is int8 when the rest is int4; given calibration tokens, an int8 LM head
  multiplies int8 activations (:mod:`kaito_cpu_runtime.int8_head`);
- only the last position of each row goes through the final norm and the LM head;
- LoRA adapters (plain LoRA, as PEFT attached them) are applied per row on top of the
  fused projections, so a batch mixing adapters and the base model stays one pass and
  base rows compute exactly what they compute without adapters.

This module holds the passes: decode steps (compiled where
:mod:`kaito_cpu_runtime.compiled_step` can), packed prefills that sequences may join
(:mod:`kaito_cpu_runtime.prefill_passes`), and the attention of each. The KV cache is the
batcher's own (:mod:`kaito_cpu_runtime.kvcache`), so merging,
padding and dropping rows work the same on both paths. :meth:`FastDecoder.build` returns
``None`` (with the reason logged) for models it does not reproduce exactly; those use the
transformers forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from kaito_cpu_runtime.attention import attention, causal_mask, prefill_attention, row_starts
from kaito_cpu_runtime.compiled_step import Attend, CompiledStack, compile_stack
from kaito_cpu_runtime.decoder_weights import DecoderWeights, matching_blocks
from kaito_cpu_runtime.int8_head import largest_channels
from kaito_cpu_runtime.llama_layers import AdapterRows, LlamaLayers
from kaito_cpu_runtime.prefill_passes import (
    PASS_ROWS,
    PassLayout,
    PrefillChunk,
    agreeing_pass_rows,
    pass_rows,
)
from kaito_cpu_runtime.quantized import Q4Blocks, QuantizedLinear, WeightFormat
from kaito_cpu_runtime.w8a8 import input_maxima

__all__ = ["FastDecoder"]

log = logging.getLogger(__name__)
SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2"})


def _unsupported(model: Any) -> str | None:
    """Why ``model`` cannot take the fast path, or ``None`` when it can."""
    config = model.config
    weights = next(model.parameters())
    sliding = getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", True
    )
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]  # unannotated in torch
    checks = (
        (getattr(config, "model_type", None) in SUPPORTED_TYPES, "its model type"),
        (not hasattr(model, "peft_config"), "it is wrapped by PEFT"),
        (getattr(config, "hidden_act", "silu") == "silu", "its activation"),
        (not sliding, "sliding-window attention"),
        (weights.device.type == "cpu", "the model is not on CPU"),
        (weights.dtype == torch.float32, "the model is not float32"),
        (mkldnn, "oneDNN is unavailable"),
    )
    return next((reason for ok, reason in checks if not ok), None)


class FastDecoder(LlamaLayers):
    """Runs a Llama-family causal LM forward for the batcher (see the module docstring)."""

    def __init__(self, model: Any, linear_dtype: torch.dtype, weights: DecoderWeights) -> None:
        super().__init__(model, linear_dtype, weights)
        #: Lengths of :meth:`prefill` passes, shortest first (empty: no packed prefills).
        self.pass_rows = self._agreeing_pass_rows()
        self._compiled: CompiledStack | None = None  # see use_compiled_step

    @classmethod
    def build(
        cls,
        model: Any,
        linear_dtype: torch.dtype = torch.float32,
        *,
        weights: WeightFormat | None = None,
        activation_dtype: torch.dtype = torch.float32,
        q4_blocks: Mapping[str, Q4Blocks] | None = None,
        dense_dtype: torch.dtype = torch.float32,
        dense_from_positions: int = 0,
        int8_head_calibration: torch.Tensor | None = None,
        calibration: torch.Tensor | None = None,
        int_dot: bool = False,
    ) -> FastDecoder | None:
        """A fast decoder for the plain (not yet PEFT-wrapped) ``model``, or ``None``.

        ``weights`` is the linear layers' format (default: ``linear_dtype``'s, float32 or
        bfloat16); int8 and int4 multiply in ``activation_dtype``. int4 layers take
        ``q4_blocks`` (by parameter name, from :func:`~kaito_cpu_runtime.quantized.read_gguf_q4_1`)
        where they hold exactly the model's weights, and quantize the float weights
        otherwise; a shape the int4 kernel does not take, and the LM head, are int8.
        With ``dense_from_positions`` > 0 int8/int4 layers also keep their dequantised
        weights prepacked in ``dense_dtype`` for passes of that many positions per sequence
        or more, i.e. prefills (see
        :meth:`~kaito_cpu_runtime.quantized.QuantizedLinear.with_dense`).
        With ``int8_head_calibration`` (token ids, ``[1, n]``) an int8 LM head multiplies
        int8 activations, keeping float32 the channels of the final hidden state that are
        largest on those tokens (:mod:`kaito_cpu_runtime.int8_head`; check
        :func:`~kaito_cpu_runtime.int8_head.int8_head_available` first). ``w8a8`` layers
        (:mod:`kaito_cpu_runtime.w8a8`) need ``calibration`` (token ids, ``[1, n]``): their
        smoothing comes from the activations the model computes on it; their LM head is
        int8 like int4's. With ``int_dot`` int4 layers and an int8 LM head multiply int8
        activations on our integer kernels (:mod:`kaito_cpu_runtime.int_dot`; where they
        cannot load the build fails like any other, so check
        :func:`~kaito_cpu_runtime.int_dot.int_dot_available` first).
        """
        reason = _unsupported(model)
        if reason is not None:
            log.info("fast CPU decoder off: %s", reason)
            return None
        layers: WeightFormat = weights or (
            "bfloat16" if linear_dtype == torch.bfloat16 else "float32"
        )
        try:
            with torch.inference_mode():
                blocks = matching_blocks(model, q4_blocks or {}) if layers == "int4" else {}
                head: WeightFormat = "int8" if layers in ("int4", "w8a8") else layers
                maxima = {}
                if layers == "w8a8":
                    if calibration is None:
                        raise ValueError("w8a8 weights need a calibration text")
                    maxima = input_maxima(model, calibration)
                channels = None
                if head == "int8" and int8_head_calibration is not None:
                    hidden = model.model(input_ids=int8_head_calibration).last_hidden_state
                    channels = largest_channels(hidden)
                plan = DecoderWeights(
                    layers, head, activation_dtype, blocks, dense_dtype, dense_from_positions,
                    channels, maxima, int_dot,
                )  # fmt: skip
                return cls(model, linear_dtype, plan)
        except (RuntimeError, AttributeError) as exc:
            log.warning("fast CPU decoder unavailable (%s); using the transformers forward", exc)
            return None

    def _agreeing_pass_rows(self) -> tuple[int, ...]:
        """The pass lengths whose row results agree on this CPU (see
        :func:`~kaito_cpu_runtime.prefill_passes.agreeing_pass_rows`), probed on one layer
        of each projection shape, with one thread and with the configured threads."""
        probes: dict[tuple[int, ...], tuple[Any, int]] = {}
        for layer in self.layers:
            for linear, inputs in ((layer.qkv, self.hidden_size), (layer.out, self.hidden_size),
                                   (layer.gate_up, self.hidden_size),
                                   (layer.down, self.intermediate_size)):  # fmt: skip
                shape = (sum(linear.part_sizes), inputs)
                probes.setdefault(shape, (linear, inputs))
        threads = sorted({1, torch.get_num_threads()})
        with torch.inference_mode():
            return agreeing_pass_rows(list(probes.values()), threads, PASS_ROWS)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        adapters: list[str | None] | None = None,
        *,
        all_positions: bool = False,
    ) -> torch.Tensor:
        """Logits (float32) of the last position of every row (``[batch, vocab]``), or of
        every position with ``all_positions`` (``[batch, length, vocab]``); appends to
        ``cache``.

        ``attention_mask`` covers the cached tokens plus the new ones (1 = real token,
        left padding is 0), as in the Hugging Face forward. ``adapters`` names each row's
        LoRA adapter (``None``: the base model).
        """
        rows = self._adapter_rows(adapters)
        length = input_ids.shape[1]
        mask = causal_mask(attention_mask, length)
        starts = row_starts(attention_mask) if length == 1 and mask is not None else None

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = cache.layers[layer].update(k, v)
            return attention(q, keys, values, mask, starts, gqa=self.gqa)

        hidden = self._layers(input_ids, position_ids, attend, rows)
        return self._head(hidden if all_positions else hidden[:, -1, :])

    def prefill(
        self,
        chunks: list[PrefillChunk],
        length: int,
        *,
        joining: Callable[[int, int], list[PrefillChunk]] | None = None,
    ) -> torch.Tensor:
        """Prefill ``chunks`` (of several sequences) in one pass of ``length`` rows, one of
        :attr:`pass_rows` (:mod:`kaito_cpu_runtime.prefill_passes`): the rows after the
        chunks are zero tokens whose results are dropped. Appends each chunk to its own
        cache and returns the logits (float32, ``[chunks ending their prompt, vocab]``) of
        the last position of every chunk whose ``last`` is set, in order.

        ``joining(layer, rows)`` is asked before each layer for more chunks (at most
        ``pass_rows[-1] - rows`` rows in all): they run through the earlier layers in a
        pass of their own, then on in this one, grown to the length that holds them all.
        A row gets the same numbers in a pass of any of :attr:`pass_rows`, so a chunk that
        joins gets those of a pass of its own. Their logits follow the others'."""
        layout = PassLayout.of(chunks, length)
        hidden, cos, signed_sin = self._inputs(layout.ids, layout.positions)
        attend, rows = self._pass_attention(layout)
        if joining is None:
            hidden = self._stack(hidden, cos, signed_sin, attend, rows)
        else:
            for layer in range(len(self.layers)):
                extra = joining(layer, layout.rows)
                if extra:
                    layout, hidden, cos, signed_sin = self._take_in(layout, hidden, extra, layer)
                    attend, rows = self._pass_attention(layout)
                layers = range(layer, layer + 1)
                hidden = self._stack(hidden, cos, signed_sin, attend, rows, layers=layers)
        spans = zip(layout.chunks, layout.spans, strict=True)
        return self._head(hidden[0, [end - 1 for chunk, (_, end) in spans if chunk.last]])

    def _take_in(
        self, layout: PassLayout, hidden: torch.Tensor, extra: list[PrefillChunk], layer: int
    ) -> tuple[PassLayout, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pass of ``layout`` (its ``hidden`` state before ``layer``) with ``extra``
        chunks added, which first run through the layers before ``layer`` in a pass of
        their own: (the layout, hidden state, ``cos`` and ``signed_sin`` of the pass that
        holds both)."""
        early = PassLayout.of(extra, pass_rows(sum(len(c.ids) for c in extra), self.pass_rows))
        early_hidden, early_cos, early_sin = self._inputs(early.ids, early.positions)
        attend, rows = self._pass_attention(early)
        early_hidden = self._stack(
            early_hidden, early_cos, early_sin, attend, rows, layers=range(layer)
        )
        merged = PassLayout.of(
            layout.chunks + extra, pass_rows(layout.rows + early.rows, self.pass_rows)
        )
        merged_hidden, cos, signed_sin = self._inputs(merged.ids, merged.positions)
        merged_hidden[:, : layout.rows] = hidden[:, : layout.rows]
        merged_hidden[:, layout.rows : merged.rows] = early_hidden[:, : early.rows]
        return merged, merged_hidden, cos, signed_sin

    def _pass_attention(self, layout: PassLayout) -> tuple[Attend, AdapterRows]:
        """Attention for a prefill pass laid out as ``layout`` (each chunk against its own
        cache) and the rows of each LoRA adapter."""
        rows: AdapterRows = {}
        masks = []
        for chunk, (at, end) in zip(layout.chunks, layout.spans, strict=True):
            if chunk.adapter is not None and self._lora:
                rows.setdefault(chunk.adapter, []).append((slice(None), slice(at, end)))
            masks.append(causal_mask(torch.ones((1, chunk.start + end - at)), end - at))

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            attended = torch.zeros_like(q)
            for chunk, (at, end), mask in zip(layout.chunks, layout.spans, masks, strict=True):
                keys, values = chunk.cache.layers[layer].update(k[:, :, at:end], v[:, :, at:end])
                attended[:, :, at:end] = prefill_attention(q[:, :, at:end], keys, values, mask,
                                                           gqa=self.gqa)  # fmt: skip
            return attended

        return attend, rows

    def _layers(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attend: Attend,
        rows: AdapterRows,
    ) -> torch.Tensor:
        """The decoder layers' output (float32 ``[batch, length, hidden]``, before the final
        norm); ``attend(layer, query, key, value)`` caches the new keys and values and
        returns the attention output (``[batch, heads, length, head_dim]``). Decode steps
        without LoRA rows in inference mode take the compiled stack when there is one."""
        hidden, cos, signed_sin = self._inputs(input_ids, position_ids)
        compiled = self._compiled
        decode = input_ids.shape[1] == 1 and not rows and torch.is_inference_mode_enabled()
        if compiled is not None and decode:
            return compiled(hidden, cos, signed_sin, attend)
        return self._stack(hidden, cos, signed_sin, attend, rows)

    @property
    def compiled_decode(self) -> bool:
        """Whether decode steps without LoRA rows run compiled (:meth:`use_compiled_step`)."""
        return self._compiled is not None

    def compile_decode_step(self) -> tuple[CompiledStack | None, str | None]:
        """Compile decode steps with torch inductor (:mod:`kaito_cpu_runtime.compiled_step`)
        and check them: ``(compiled, None)`` to hand to :meth:`use_compiled_step`, or
        ``(None, why not)``. Takes long (compiling): call it before serving."""
        if any(not isinstance(linear, QuantizedLinear) for layer in self.layers
               for linear in (layer.qkv, layer.out, layer.gate_up, layer.down)):  # fmt: skip
            return None, "only quantized layers are compiled"

        def probe_inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self._inputs(torch.tensor([[11], [12], [13]])[:rows], torch.full((rows, 1), 5))

        def probe_attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
            return attention(q, k, v, None, None, gqa=self.gqa)  # each row sees itself only

        return compile_stack(
            lambda hidden, cos, sin, attend: self._stack(hidden, cos, sin, attend, {}),
            probe_inputs,
            probe_attend,
        )

    def use_compiled_step(self, compiled: CompiledStack | None) -> None:
        """Run decode steps without LoRA rows through ``compiled`` (``None``: eagerly).
        Switch while no sequence is mid-way, so each runs all its steps one way."""
        self._compiled = compiled
