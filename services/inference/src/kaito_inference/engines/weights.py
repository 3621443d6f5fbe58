"""Which weight format the fast CPU decoder serves (``--weights``), and why.

``float32``, ``bfloat16`` (oneDNN, prepacked), ``int8`` or ``int4`` (torch's weight-only
kernels, :mod:`kaito_cpu_runtime.quantized`; int4 layers and int8 LM heads on our integer
kernels instead where they build, ``--integer-kernels``, :mod:`kaito_cpu_runtime.int_dot`)
or ``w8a8`` (int8 weights and activations through fbgemm, smoothed on
:data:`CALIBRATION_TEXT`, :mod:`kaito_cpu_runtime.w8a8`; only when asked for). ``auto``
tries the weight-only formats this CPU runs fastest first (:data:`SPEED_ORDER`, measured)
and serves the first whose quality is within :data:`PERPLEXITY_TOLERANCE` of float32 on
:data:`CHECK_TEXT`, a paragraph scored at startup with the model's own float32 forward as
the reference. A format whose kernel is missing or wrong on this CPU and torch falls back
to the next one, with a log line.
"""

# ruff: noqa: PLC0415  (torch and the runtime are imported by the engine's loader thread)

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kaito_sdk.tools.localmodels import EMBEDDED_MODEL_NAME, embedded_gguf_path

if TYPE_CHECKING:
    import torch

    from kaito_cpu_runtime.llama_decoder import FastDecoder
    from kaito_cpu_runtime.quantized import Q4Blocks, WeightFormat

__all__ = [
    "CALIBRATION_TEXT",
    "CHECK_TEXT",
    "DENSE_COPY",
    "FALLBACK",
    "PERPLEXITY_TOLERANCE",
    "SPEED_ORDER",
    "IntegerKernelsSetting",
    "WeightChoice",
    "WeightsSetting",
    "activation_dtype",
    "build_decoder",
    "cpu_kind",
    "embedded_q4_blocks",
    "perplexity",
]

log = logging.getLogger(__name__)

WeightsSetting = Literal["auto", "float32", "bfloat16", "int8", "int4", "w8a8"]
#: ``auto``: int4 layers and int8 LM heads multiply int8 activations on our integer kernels
#: (:mod:`kaito_cpu_runtime.int_dot`) where they run here; ``off``: torch's kernels.
IntegerKernelsSetting = Literal["auto", "off"]
#: A format serves under ``auto`` when its perplexity on :data:`CHECK_TEXT` is at most
#: this much above float32's (2%).
PERPLEXITY_TOLERANCE = 0.02
#: Fastest first, per CPU kind, as served (``bench/inference_compare.py``, SmolLM2, 2
#: cores; docs/inference.md, "Weight formats"): int4 led int8 at 1 and 4 streams on both
#: kinds (AVX2 dispatch: 56.5 and 126.8 tokens/s against 46.3 and 118.8), although int8's
#: kernel alone is a little faster for one row there. ``w8a8`` is not in the order: on AVX2
#: it serves 16 streams 1.4 times as fast as int4 and one stream as fast, but its
#: perplexity on ``bench/quant_quality.py``'s text is 2.7-3.1% above float32's, beyond
#: the tolerance (the startup paragraph is too short to tell; docs/inference.md).
SPEED_ORDER: dict[str, tuple[WeightFormat, ...]] = {
    "native-bf16": ("int4", "int8", "bfloat16", "float32"),
    "avx2": ("int4", "int8", "float32"),
}
#: Per CPU kind: the dtype of the dense copy int8/int4 layers keep for prefills, and from
#: how many positions per sequence a pass counts as one (torch's weight-only kernels are
#: fast for a few rows and slow for many; measured with ``bench/quant_kernels.py``).
#: ``w8a8`` keeps none: on AVX2 kernels its integer products took 153.6 ms for 256 rows of
#: SmolLM2's matmuls where oneDNN's float32 took 215.3 (bfloat16 with native bf16: 61.1
#: against its 74.2), and no copy saves the memory. Nor does int4 on our integer kernels
#: on AVX2 (:mod:`kaito_cpu_runtime.int_dot`): a SmolLM2 prefill of 8, 41 and 256
#: positions took 13.1, 46.9 and 288 ms on them against 26.4, 58.2 and 307 ms on the
#: float32 copy (which also holds 0.5 GB); with native bf16 the bfloat16 copy stays,
#: faster from 16 positions (16.8 ms against 22.1; 128.0 against 308.0 at 256).
DENSE_COPY: dict[str, tuple[str, int]] = {
    "native-bf16": ("bfloat16", 2),
    "avx2": ("float32", 2),
}
#: Scored at startup by ``auto``: plain prose about this service, written for it.
CHECK_TEXT = (
    "A small language model can answer questions on an ordinary computer. Each new word "
    "it writes depends on every word before it, so the server keeps a cache of what it has "
    "already computed. When many people send requests at the same time, the server puts "
    "their sentences into one batch and reads the weights of the model only once for all "
    "of them. Reading the weights is the slow part: a processor can multiply numbers much "
    "faster than it can fetch them from memory. Storing each weight in four bits instead "
    "of thirty-two means eight times fewer bytes to fetch for every word."
)
#: What ``w8a8`` layers take their activation ranges from (another text than
#: :data:`CHECK_TEXT`, so the startup check scores text the smoothing has not seen):
#: prose, a list, numbers and a line of code, written for this service.
CALIBRATION_TEXT = (
    "Dear team, the quarterly report is attached. Sales rose 12.5% to $4,380,000, while "
    "costs fell from 2.1 to 1.9 million. Three things to do next week:\n"
    "1. Book the meeting room for Tuesday at 10:30.\n"
    "2. Send the draft to Maria and Chen before Friday.\n"
    "3. Check why the build fails with `KeyError: 'config'` in setup.py.\n"
    "def average(values):\n    return sum(values) / len(values)\n"
    "Q: Why is the sky blue? A: Sunlight scatters off air molecules, and blue light "
    "scatters the most. Thanks, and have a good weekend!"
)


def cpu_kind() -> tuple[str, str]:
    """``native-bf16`` or ``avx2`` (the :data:`SPEED_ORDER` key), and the flags found.

    ``native-bf16`` needs the CPU's AVX-512 BF16 or AMX and torch dispatching its AVX-512
    kernels (``ATEN_CPU_CAPABILITY=avx2`` makes such a CPU run, and count as, AVX2-only).
    """
    import torch

    from kaito_cpu_runtime.linear import cpu_flags, has_native_bf16

    capability = torch.backends.cpu.get_cpu_capability()
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in cpu_flags()]
    native = has_native_bf16() and capability.startswith("AVX512")
    found = f"torch CPU capability {capability}, " + (
        f"bf16 flags {' '.join(flags)}" if flags else "no avx512_bf16/amx_bf16"
    )
    return ("native-bf16" if native else "avx2"), found


def activation_dtype(weights: WeightFormat) -> torch.dtype:
    """What the int8/int4 kernels multiply in: bfloat16 on every CPU kind (measured with
    ``bench/quant_kernels.py``: with float32 activations int8 took 49.6 ms for one row of
    SmolLM2's matmuls against 9.9 with bfloat16, and 49.9 against 10.5 on AVX2 kernels).
    ``w8a8`` layers quantize their own activations; the dtype is their int8 LM head's."""
    import torch

    return torch.bfloat16 if weights in ("int8", "int4", "w8a8") else torch.float32


def embedded_q4_blocks(location: str) -> Mapping[str, Q4Blocks]:
    """The shipped GGUF's Q4_1 blocks when ``location`` is the converted embedded model
    (empty otherwise, or when the file cannot be read)."""
    path = Path(location)
    if path.name != EMBEDDED_MODEL_NAME or not (path / ".kaito-complete").is_file():
        return {}
    from kaito_cpu_runtime.quantized import read_gguf_q4_1

    try:
        return read_gguf_q4_1(embedded_gguf_path())
    except (OSError, ImportError, RuntimeError, ValueError, KeyError) as exc:
        log.warning("cannot read the embedded GGUF's Q4_1 blocks (%s); quantizing floats", exc)
        return {}


def perplexity(model: Any, tokenizer: Any, decoder: FastDecoder | None) -> float:
    """Perplexity of :data:`CHECK_TEXT` under ``decoder`` (``None``: the model's own
    float32 forward), every position multiplied on the kernels of its decode steps, not
    on a prefill copy: the score is that of the numbers decoded tokens come from."""
    import torch
    from torch.nn import functional

    from kaito_cpu_runtime.kvcache import new_batch_cache

    ids = torch.tensor([tokenizer(CHECK_TEXT)["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        if decoder is None:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        else:
            positions = torch.arange(ids.shape[1])[None, :]
            cache = new_batch_cache(model.config)
            with decoder.quantized_kernels_only():
                logits = decoder(ids, mask, positions, cache, all_positions=True)
        loss = functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return math.exp(float(loss))


@dataclass(frozen=True)
class WeightChoice:
    """The decoder the engine serves and the startup line that says why."""

    decoder: FastDecoder | None
    weights: str
    reason: str


#: What an explicit format falls back to when its kernel is unavailable here.
FALLBACK: dict[str, tuple[WeightFormat, ...]] = {
    "w8a8": ("int4", "int8", "float32"),
    "int4": ("int8", "float32"),
    "int8": ("float32",),
    "bfloat16": ("float32",),
    "float32": (),
}


def build_decoder(
    model: Any,
    tokenizer: Any,
    setting: WeightsSetting,
    q4_blocks: Mapping[str, Q4Blocks],
    integer_kernels: IntegerKernelsSetting = "auto",
) -> WeightChoice:
    """The fast decoder in the format ``setting`` asks for (see the module docstring);
    ``decoder`` is ``None`` when the fast decoder does not cover the model. int4 layers
    and int8 LM heads multiply int8 activations on our integer kernels where they build
    and pass their probe here (``integer_kernels`` ``auto``), else on torch's."""
    import torch

    from kaito_cpu_runtime.decoder_weights import format_available
    from kaito_cpu_runtime.int8_head import int8_head_available
    from kaito_cpu_runtime.llama_decoder import FastDecoder

    kind, flags = cpu_kind()
    candidates = SPEED_ORDER[kind] if setting == "auto" else (setting, *FALLBACK[setting])
    # Only formats with int4 layers or an int8 LM head need the integer kernels built.
    int_dot = _int_dot(integer_kernels) if {"int4", "w8a8"} & set(candidates) else False
    head_missing = None if int_dot else int8_head_available()
    if head_missing is not None:
        log.info("int8 LM heads keep bfloat16 activations: %s", head_missing)
    check_ids = torch.tensor([tokenizer(CHECK_TEXT)["input_ids"]])
    calibration_ids = torch.tensor([tokenizer(CALIBRATION_TEXT)["input_ids"]])
    # The oneDNN head's channels are calibrated on the check text; our Q8_0 head needs none.
    head_calibration = None if int_dot or head_missing else check_ids
    reference = perplexity(model, tokenizer, None) if setting == "auto" else None
    notes: list[str] = []
    for weights in candidates:
        act = activation_dtype(weights)
        missing = format_available(weights, act)
        if missing is not None:
            log.warning("weights %s unavailable here (%s); trying the next", weights, missing)
            notes.append(f"{weights} unavailable")
            continue
        dense_dtype, dense_rows = DENSE_COPY[kind]
        if weights == "w8a8" or (weights == "int4" and int_dot and kind == "avx2"):
            dense_rows = 0  # their kernels are the faster ones for prefills too (DENSE_COPY)
        decoder = FastDecoder.build(
            model,
            weights=weights,
            activation_dtype=act,
            q4_blocks=q4_blocks,
            dense_dtype=getattr(torch, dense_dtype),
            dense_from_positions=dense_rows,
            int8_head_calibration=head_calibration,
            calibration=calibration_ids,
            int_dot=int_dot,
        )
        if decoder is None and weights == "float32":
            break
        if decoder is None:  # e.g. bfloat16 where oneDNN has no bf16 matmul
            log.warning("weights %s: the fast decoder could not build them; next", weights)
            notes.append(f"{weights} unavailable")
            continue
        if reference is not None and weights != "float32":
            change = perplexity(model, tokenizer, decoder) / reference - 1
            quality = f"{weights} perplexity {change:+.2%} vs float32"
            if change > PERPLEXITY_TOLERANCE:
                log.info("weights %s not chosen: %s", weights, quality)
                notes.append(quality)
                continue
            notes.append(f"{quality} (tolerance {PERPLEXITY_TOLERANCE:.0%})")
        return WeightChoice(decoder, weights, _why(decoder, setting, kind, flags, notes))
    return WeightChoice(None, "float32", "the fast decoder does not cover this model")


def _int_dot(setting: IntegerKernelsSetting) -> bool:
    """Whether int4 layers and int8 LM heads use our integer kernels
    (:mod:`kaito_cpu_runtime.int_dot`): ``setting`` ``auto`` and they run correctly here
    (else torch's, with a log line saying why)."""
    if setting == "off":
        return False
    from kaito_cpu_runtime.int_dot import int_dot_available

    missing = int_dot_available()
    if missing is not None:
        log.info("int4 layers and int8 LM heads keep torch's kernels: %s", missing)
    return missing is None


def _why(decoder: FastDecoder, setting: str, kind: str, flags: str, notes: list[str]) -> str:
    """The startup line's explanation: kernel, activations, exact blocks, CPU, checks."""
    kernels = {
        "float32": "oneDNN prepacked float32",
        "bfloat16": "oneDNN prepacked bfloat16",
        "int8": "aten._weight_int8pack_mm",
        "int4": "aten._weight_int4pack_mm_for_cpu",
        "w8a8": "fbgemm int8 x int8 (quantized::linear_with_input_q_dq_qweight_dq_output_fp32)",
    }
    if decoder.weights == "int4" and decoder.int_dot:
        parts = ["kaito_int_dot.q4_1 (AVX2 integer dot products)"]
        parts.append("int8 activations in blocks of 32")
    else:
        parts = [kernels[decoder.weights]]
        if decoder.weights in ("int8", "int4"):
            parts.append(f"{str(decoder.activation_dtype).removeprefix('torch.')} activations")
    if decoder.weights == "int4":
        parts.append(
            f"{decoder.exact_q4_blocks} projections from the GGUF's Q4_1 blocks as they are"
        )
    if decoder.head_weights == "int8" and decoder.int_dot:
        parts.append("LM head Q8_0 with int8 activations (kaito_int_dot.q8_0)")
    elif decoder.head_weights == "int8":
        parts.append(
            "LM head int8 with int8 activations (onednn.qlinear_pointwise, 32 channels float32)"
            if decoder.int8_head_activations
            else "LM head int8"
        )
    if decoder.weights in ("int8", "int4") and decoder.dense_from_positions:
        dense = str(decoder.dense_dtype).removeprefix("torch.")
        parts.append(f"prefills on a {dense} copy")
    lengths = decoder.pass_rows
    parts.append(
        f"prefill passes of {', '.join(map(str, lengths))} rows"
        if lengths
        else "one prompt per prefill pass (no pass lengths agree on this CPU)"
    )
    chosen = "auto" if setting == "auto" else "asked for"
    return f"{', '.join(parts)}; {chosen} for CPU kind {kind} ({flags}); " + "; ".join(notes)
