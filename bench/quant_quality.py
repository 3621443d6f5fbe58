"""Quality of each weight format of the fast CPU decoder against float32, on SmolLM2-135M.

For every format: the mean token log-likelihood and perplexity of a fixed text written for
this benchmark (``bench/data/quant_quality_text.md``) and the greedy answers to fixed chat
prompts (``bench/data/quant_quality_prompts.yaml``), compared token by token with float32's
(how many tokens each answer shares with float32's before the first difference).

The reference is float32, the served model today: the embedded GGUF's Q4_1 weights
dequantised (its token embedding, the tied LM head, is Q8_0). ``int4`` takes the GGUF's
Q4_1 blocks as they are; ``int4-requantized`` quantizes the float32 weights again (what
any other model gets); ``w8a8`` multiplies int8 weights with int8 activations on every
pass, smoothed on the server's calibration text (``kaito_cpu_runtime.w8a8``, what ``auto``
serves on AVX2 CPUs). int8/int4 multiply bfloat16 activations; "kernel" rows run every
pass on torch's weight-only kernel, "dense copy" rows run prefills (the text, the
prompts) on a prepacked copy of the dequantised weights and decode steps on the kernel,
as the server does; "head int8 x int8" rows multiply int8 activations in the int8 LM head
(what the server does where the CPU has int8 dot products), so their greedy answers show
its effect (the text's score runs the head's dense copy in "dense copy" rows); the
"compiled decode step" row runs decode steps compiled (``--compile-decode auto``, the
server's default where a C++ compiler is found), which only its greedy answers see;
"integer kernels" rows multiply int4 layers and a Q8_0 LM head by int8 activations in
blocks of 32 (``kaito_cpu_runtime.int_dot``, what the server runs where the kernels
build).
Tolerance: perplexity within 2% of float32
(``kaito_inference.engines.weights.PERPLEXITY_TOLERANCE``), which ``--weights auto`` uses.

    python bench/quant_quality.py [--tokens 32] [--json quality.json] [--formats NAME ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from machine import describe_machine
from torch.nn import functional
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_cpu_runtime.decoder_weights import format_available
from kaito_cpu_runtime.int8_head import int8_head_available
from kaito_cpu_runtime.int_dot import int_dot_available
from kaito_cpu_runtime.kvcache import new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.quantized import read_gguf_q4_1
from kaito_inference.engines.weights import CALIBRATION_TEXT, CHECK_TEXT
from kaito_sdk.tools.localmodels import embedded_gguf_path, embedded_model_dir

DATA = Path(__file__).parent / "data"
TOLERANCE = 0.02
#: name -> (weights, activation dtype, use the GGUF's blocks, dense copy for prefills,
#: int8 activations in the int8 LM head)
FORMATS: dict[str, tuple[str, torch.dtype, bool, torch.dtype | None, bool]] = {
    "float32": ("float32", torch.float32, False, None, False),
    "bfloat16": ("bfloat16", torch.float32, False, None, False),
    "int8 kernel": ("int8", torch.bfloat16, False, None, False),
    "int4 kernel": ("int4", torch.bfloat16, True, None, False),
    "int4 kernel, head int8 x int8": ("int4", torch.bfloat16, True, None, True),
    "int4-requantized kernel": ("int4", torch.bfloat16, False, None, False),
    "int8 + bf16 dense copy": ("int8", torch.bfloat16, False, torch.bfloat16, False),
    "int8 + bf16 dense copy, head int8 x int8": (
        "int8",
        torch.bfloat16,
        False,
        torch.bfloat16,
        True,
    ),
    "int4 + bf16 dense copy": ("int4", torch.bfloat16, True, torch.bfloat16, False),
    "int4 + bf16 dense copy, head int8 x int8": (
        "int4",
        torch.bfloat16,
        True,
        torch.bfloat16,
        True,
    ),
    "int4 + f32 dense copy": ("int4", torch.bfloat16, True, torch.float32, False),
    "int4 + bf16 dense copy, head int8 x int8, compiled decode step": (
        "int4",
        torch.bfloat16,
        True,
        torch.bfloat16,
        True,
    ),
    "int4 + Q8_0 head, integer kernels": ("int4", torch.bfloat16, True, None, False),
    "int4 + bf16 dense copy + Q8_0 head, integer kernels": (
        "int4",
        torch.bfloat16,
        True,
        torch.bfloat16,
        False,
    ),
    "w8a8": ("w8a8", torch.bfloat16, False, None, False),
    "w8a8, head int8 x int8": ("w8a8", torch.bfloat16, False, None, True),
}
#: Formats whose decode steps run compiled (``FastDecoder.compile_decode_step``).
COMPILED = {"int4 + bf16 dense copy, head int8 x int8, compiled decode step"}
#: Formats whose int4 layers and int8 head multiply int8 activations on our integer kernels
#: (``kaito_cpu_runtime.int_dot``; the head is Q8_0 there, int8 with a scale per block).
INTEGER_KERNELS = {
    "int4 + Q8_0 head, integer kernels",
    "int4 + bf16 dense copy + Q8_0 head, integer kernels",
}
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass
class Quality:
    """One format's scores."""

    weights: str
    mean_log_likelihood: float
    perplexity: float
    perplexity_change: float
    matching_tokens: int
    reference_tokens: int
    identical_answers: int
    answers: int
    within_tolerance: bool


def score_text(decoder: FastDecoder, model: Any, ids: torch.Tensor) -> float:
    """Mean log-likelihood (nats per token) of ``ids`` (one row) under ``decoder``."""
    cache = new_batch_cache(model.config)
    positions = torch.arange(ids.shape[1])[None, :]
    logits = decoder(ids, torch.ones_like(ids), positions, cache, all_positions=True)
    return -float(functional.cross_entropy(logits[0, :-1], ids[0, 1:]))


def greedy(decoder: FastDecoder, model: Any, prompt: list[int], tokens: int, eos: int) -> list[int]:
    """Greedy completion of ``prompt`` through the decoder and the batcher's KV cache."""
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1])[None, :]
    cache = new_batch_cache(model.config)
    out: list[int] = []
    logits = decoder(ids, mask, positions, cache)
    for _ in range(tokens):
        token = int(logits[0].argmax())
        if token == eos:
            break
        out.append(token)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        logits = decoder(torch.tensor([[token]]), mask, positions, cache)
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two answers share."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def main() -> None:
    """Score every format and print a markdown table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS),
        help="the formats to score (float32, the reference of the answers, always runs)",
    )  # fmt: skip
    args = parser.parse_args()
    print(describe_machine())
    location = embedded_model_dir(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    blocks = read_gguf_q4_1(embedded_gguf_path())
    text = torch.tensor([tokenizer((DATA / "quant_quality_text.md").read_text())["input_ids"]])
    prompts = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                           add_generation_prompt=True, return_dict=False))
        for q in yaml.safe_load((DATA / "quant_quality_prompts.yaml").read_text())
    ]  # fmt: skip
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # What the server calibrates an int8 LM head's activations on (not the scored text).
    calibration = torch.tensor([tokenizer(CHECK_TEXT)["input_ids"]])
    # What the server smooths w8a8 layers on (not the scored text either).
    w8a8_calibration = torch.tensor([tokenizer(CALIBRATION_TEXT)["input_ids"]])
    with torch.inference_mode():
        hf_logits = model(input_ids=text).logits.float()
        hf_score = -float(functional.cross_entropy(hf_logits[0, :-1], text[0, 1:]))
    print(f"text: {text.shape[1]} tokens; transformers float32 forward: {hf_score:.4f} nats/token")
    results: list[Quality] = []
    reference: list[list[int]] = []
    for name, (weights, act, from_blocks, dense, int8_head) in FORMATS.items():
        if name != "float32" and name not in args.formats:
            continue
        missing = format_available(weights, act)  # type: ignore[arg-type]  # a WeightFormat
        missing = missing or (int8_head_available() if int8_head else None)
        missing = missing or (int_dot_available() if name in INTEGER_KERNELS else None)
        decoder = None if missing else FastDecoder.build(
            model, weights=weights, activation_dtype=act,  # type: ignore[arg-type]  # a WeightFormat
            q4_blocks=blocks if from_blocks else None,
            dense_dtype=dense or torch.float32, dense_from_positions=2 if dense else 0,
            int8_head_calibration=calibration if int8_head else None,
            calibration=w8a8_calibration, int_dot=name in INTEGER_KERNELS,
        )  # fmt: skip
        if decoder is not None and name in COMPILED:
            compiled, missing = decoder.compile_decode_step()
            decoder.use_compiled_step(compiled)
            decoder = None if missing else decoder
        if decoder is None:
            print(f"{name}: unavailable on this CPU ({missing or 'the decoder did not build'})")
            continue
        started = time.monotonic()
        with torch.inference_mode():
            score = score_text(decoder, model, text)
            answers = [greedy(decoder, model, p, args.tokens, eos) for p in prompts]
        if not reference:
            reference = answers
        change = math.exp(hf_score - score) - 1
        results.append(
            Quality(
                weights=name,
                mean_log_likelihood=round(score, 4),
                perplexity=round(math.exp(-score), 3),
                perplexity_change=round(change, 4),
                matching_tokens=sum(map(common_prefix, answers, reference)),
                reference_tokens=sum(len(r) for r in reference),
                identical_answers=sum(a == r for a, r in zip(answers, reference, strict=True)),
                answers=len(answers),
                within_tolerance=change <= TOLERANCE,
            )
        )
        print(f"  {name}: scored in {time.monotonic() - started:.1f} s")
    print(f"\nhf float32 perplexity {math.exp(-hf_score):.3f}; tolerance: +{TOLERANCE:.0%}\n")
    print("| weights | mean log-lik | perplexity | vs float32 | greedy tokens as float32 | "
          "identical answers | within 2% |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.weights} | {r.mean_log_likelihood:.4f} | {r.perplexity:.3f} | "
            f"{r.perplexity_change:+.2%} | {r.matching_tokens}/{r.reference_tokens} | "
            f"{r.identical_answers}/{r.answers} | {'yes' if r.within_tolerance else 'no'} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
