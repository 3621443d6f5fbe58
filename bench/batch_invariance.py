"""Does a sequence's greedy answer depend on the batch it decodes in? Per weight format.

For several prompts of random token ids, the fast decoder (SmolLM2-135M, the embedded
model's weights) decodes the prompt alone, then again with a longer prompt merged into
its decode batch (so its row is left-padded, as the batcher pads newcomers), and compares
the greedy tokens and the largest logit difference of the shared steps. Prefills run one
row at a time in both, so only decode steps differ. The decoder is built as the server
builds it: an int8 LM head multiplies int8 activations where the CPU has int8 dot
products (``kaito_cpu_runtime.int8_head``), calibrated on the server's check text.

    HF_HUB_OFFLINE=1 python bench/batch_invariance.py --weights int4 float32
"""

from __future__ import annotations

import argparse

import torch
from machine import describe_machine
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_cpu_runtime.int8_head import int8_head_available
from kaito_cpu_runtime.kvcache import append_rows, new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.quantized import WeightFormat, read_gguf_q4_1
from kaito_inference.engines.weights import CHECK_TEXT
from kaito_sdk.tools.localmodels import embedded_gguf_path, embedded_model_dir

Step = tuple[torch.Tensor, torch.Tensor]


def prefill(
    decoder: FastDecoder, config: object, prompt: list[int]
) -> tuple[torch.Tensor, object, torch.Tensor]:
    """The prompt's last logits, its cache and its attention mask (one row, no padding)."""
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    cache = new_batch_cache(config)
    return decoder(ids, mask, torch.arange(len(prompt))[None], cache), cache, mask


def decode(
    decoder: FastDecoder, logits: torch.Tensor, cache: object, mask: torch.Tensor,
    lengths: list[int], steps: int,
) -> list[Step]:  # fmt: skip
    """Greedy decode steps of every row: (tokens, logits) per step."""
    out: list[Step] = []
    for step in range(steps):
        tokens = logits.argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], 1)
        positions = torch.tensor([[length + step] for length in lengths])
        logits = decoder(tokens, mask, positions, cache)
        out.append((tokens, logits))
    return out


def main() -> None:
    """Print, per weight format, how many prompts diverged and the largest logit change."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", nargs="+", default=["int4", "float32"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    print(describe_machine())
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32)
    blocks = read_gguf_q4_1(embedded_gguf_path())
    missing = int8_head_available()
    print(f"int8 LM heads: {'weight-only, ' + missing if missing else 'int8 activations'}")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    calibration = None if missing else torch.tensor([tokenizer(CHECK_TEXT)["input_ids"]])
    for weights in args.weights:
        fmt: WeightFormat = weights
        decoder = FastDecoder.build(
            model.eval(),
            weights=fmt,
            activation_dtype=torch.bfloat16 if fmt in ("int8", "int4") else torch.float32,
            q4_blocks=blocks,
            dense_dtype=torch.bfloat16,
            dense_from_positions=2,
            int8_head_calibration=calibration,
        )
        assert decoder is not None
        diverged, largest = 0, 0.0
        with torch.inference_mode():
            for seed in range(args.prompts):
                generator = torch.Generator().manual_seed(seed)
                short = torch.randint(100, 20000, (12 + seed,), generator=generator).tolist()
                long = torch.randint(100, 20000, (25,), generator=generator).tolist()
                logits, cache, mask = prefill(decoder, model.config, short)
                alone = decode(decoder, logits, cache, mask, [len(short)], args.steps)
                logits, cache, mask = prefill(decoder, model.config, short)
                other_logits, other_cache, other_mask = prefill(decoder, model.config, long)
                mask = append_rows(cache, mask, other_cache, other_mask)
                merged = decode(
                    decoder, torch.cat([logits, other_logits]), cache, mask,
                    [len(short), len(long)], args.steps,
                )  # fmt: skip
                tokens_alone = torch.cat([t[0] for t, _ in alone])
                tokens_merged = torch.cat([t[0] for t, _ in merged])
                diverged += not torch.equal(tokens_alone, tokens_merged)
                largest = max(
                    largest,
                    *(
                        float((a[0] - m[0]).abs().max())
                        for (_, a), (_, m) in zip(alone, merged, strict=True)
                    ),
                )
        print(
            f"{weights}: {diverged} of {args.prompts} prompts decoded differently beside a "
            f"longer one within {args.steps} tokens; largest logit difference {largest:.3g}"
        )


if __name__ == "__main__":
    main()
