"""The fast decoder's linear layers per weight format: one SmolLM2-135M forward's matmuls.

Times the four fused projections of each of SmolLM2-135M's 30 layers plus the LM head
(the matrix multiplications of one decode step) at several batch sizes, for packed
float32 and bfloat16 (oneDNN), torch's int8 and int4 weight-only kernels with float32
or bfloat16 activations, and int8 weights times int8 activations through fbgemm
(``w8a8``). Random weights: only the shapes matter for speed.

    flock /tmp/kaito-bench.lock python bench/quant_kernels.py --batch 1 4 16 64
    # AVX2 kernels (fbgemm reads its own variable):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \
        python bench/quant_kernels.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from machine import describe_machine

from kaito_cpu_runtime.linear import PackedLinear
from kaito_cpu_runtime.quantized import QuantizedLinear
from kaito_cpu_runtime.w8a8 import w8a8_linear

#: (in, out) of the fused projections of one SmolLM2-135M layer, then the LM head.
LAYER_SHAPES = ((576, 960), (576, 576), (576, 3072), (1536, 576))
LM_HEAD = (576, 49152)
LAYERS = 30

Layer = Callable[[torch.Tensor], torch.Tensor]


def build(kind: str, weight: torch.Tensor) -> Layer:
    """One layer of ``kind`` (format/activation) holding ``weight``."""
    if kind == "float32":
        return PackedLinear(weight, None, torch.float32)
    if kind == "bfloat16":
        return PackedLinear(weight, None, torch.bfloat16)
    if kind == "w8a8":  # smoothing from unit activations: the speed is the same
        return w8a8_linear(weight, torch.ones(weight.shape[1]))[0]
    fmt, act = kind.split("/")
    activation = torch.bfloat16 if act == "bf16" else torch.float32
    if fmt == "int8":
        return QuantizedLinear.int8(weight, activation_dtype=activation)
    return QuantizedLinear.int4(weight, activation_dtype=activation)


def time_step(layers: list[tuple[Layer, int]], batch: int, repeats: int) -> float:
    """Median milliseconds for one pass over ``layers`` at ``batch`` rows."""
    inputs = {width: torch.randn(batch, width) for _, width in layers}
    samples = []
    with torch.inference_mode():
        for _ in range(2):
            for layer, width in layers:
                layer(inputs[width])
        for _ in range(repeats):
            started = time.perf_counter()
            for layer, width in layers:
                layer(inputs[width])
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    """Print a markdown table: milliseconds per step's matmuls, per format and batch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--distinct-layers",
        action="store_true",
        help="each of the 30 layers its own weights, as in a model (default: one layer's "
        "weights 30 times, which stay in the CPU's cache)",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["float32", "bfloat16", "int8/bf16", "int4/bf16", "w8a8"],
    )
    args = parser.parse_args()
    print(describe_machine())
    print(
        f"torch {torch.__version__}, ATen capability {torch.backends.cpu.get_cpu_capability()}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}, "
        f"FBGEMM_ENABLE_INSTRUCTIONS={os.environ.get('FBGEMM_ENABLE_INSTRUCTIONS', 'unset')}, "
        f"threads {torch.get_num_threads()}"
    )
    torch.manual_seed(0)
    copies = LAYERS if args.distinct_layers else 1
    weights = [torch.randn(out, width) * 0.05 for _ in range(copies) for width, out in LAYER_SHAPES]
    head = torch.randn(LM_HEAD[1], LM_HEAD[0]) * 0.05
    print("| weights | " + " | ".join(f"batch {b} ms" for b in args.batch) + " |")
    print("|---|" + "---|" * len(args.batch))
    for kind in args.kinds:
        try:
            per_layer = [(build(kind, w), int(w.shape[1])) for w in weights]
            layers = per_layer * (LAYERS // copies) + [(build(kind, head), LM_HEAD[0])]
            times = [time_step(layers, batch, args.repeats) for batch in args.batch]
        except RuntimeError as exc:
            print(f"| {kind} | unavailable: {str(exc).splitlines()[0][:80]} |")
            continue
        print(f"| {kind} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
