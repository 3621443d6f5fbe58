"""Tuning throughput on SmolLM2-135M: our job vs a plain TRL ``SFTTrainer`` script.

Every variant trains the same LoRA (r=8, q/v) on the same synthetic chat data with the
same user-facing settings (batch, steps, learning rate, max length), each in its own
process, one after the other, in one run of this script:

* ``trl-defaults``: a plain TRL script, ``SFTConfig`` defaults (bf16 autocast and
  gradient checkpointing on, as TRL ships them);
* ``trl-tuned``: the plain script with the two CPU defaults our job applies
  (``bf16=False``, ``gradient_checkpointing=False``), to separate their effect;
* ``kaito``: ``kaito_tuning.trainer.run_training`` (what ``kaito-tuning run`` does);
* ``kaito-packing``: the same with ``packing: true`` in ``TrainingArguments`` (TRL's
  default ``bfd`` strategy: one padding-free sequence per batch);
* ``kaito-packing-wrapped``: packing with ``packing_strategy: wrapped`` (dense rows of
  ``max_length`` tokens).

Rates are steady-state: from the end of the first ``--warmup`` steps to the last step.
The variants run interleaved for ``--rounds`` rounds; the table shows medians.
Tokens are TRL's ``num_tokens`` (non-padding tokens trained on). Besides wall-clock
rates, tokens per CPU-second (``time.process_time``, all threads of the training
process) are reported: on a shared machine they move much less with other work.

    HF_HUB_OFFLINE=1 python bench/tuning_throughput.py --rounds 2 --steps 12 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine

VARIANTS = ("trl-defaults", "trl-tuned", "kaito", "kaito-packing", "kaito-packing-wrapped")
WORDS = [
    *("model", "cluster", "node", "adapter", "tuning", "batch", "token", "request"),
    *("answer", "question", "kubernetes", "operator", "workspace", "inference"),
    *("retrieval", "index", "vector", "fast", "small", "large", "red", "blue", "green"),
]


def write_dataset(path: Path, rows: int, seed: int = 0) -> None:
    """Chat rows of varied length (about 20 to 160 tokens), deterministic."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(rows):
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 100)))
            row = {
                "messages": [
                    {"role": "user", "content": f"Q{i}: {question}?"},
                    {"role": "assistant", "content": f"{answer}."},
                ]
            }
            handle.write(json.dumps(row) + "\n")


def _rates(history: list[dict[str, float]], warmup: int) -> dict[str, float]:
    start = next(entry for entry in history if entry["step"] >= warmup)
    end = history[-1]
    seconds = end["time"] - start["time"]
    cpu_seconds = end["cpu_time"] - start["cpu_time"]
    return {
        "tokens_per_cpu_s": (end["tokens"] - start["tokens"]) / cpu_seconds,
        "steps": end["step"] - start["step"],
        "seconds": seconds,
        "steps_per_s": (end["step"] - start["step"]) / seconds,
        "tokens_per_s": (end["tokens"] - start["tokens"]) / seconds,
        "tokens_per_step": (end["tokens"] - start["tokens"]) / (end["step"] - start["step"]),
        "final_loss": end["loss"],
    }


def run_plain_trl(args: argparse.Namespace, data: Path, out: Path) -> list[dict[str, float]]:
    """The baseline: the short SFTTrainer script a user would write."""
    import torch  # noqa: PLC0415
    from datasets import load_dataset  # noqa: PLC0415
    from peft import LoraConfig  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: PLC0415
    from trl import SFTConfig, SFTTrainer  # noqa: PLC0415

    from kaito_sdk.tools.localmodels import embedded_model_dir  # noqa: PLC0415

    history: list[dict[str, float]] = []

    class Record(TrainerCallback):  # type: ignore[misc]  # transformers' base is untyped
        def on_log(self, a: Any, state: Any, c: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                history.append(
                    {
                        "time": time.monotonic(),
                        "cpu_time": time.process_time(),
                        "step": state.global_step,
                        "tokens": float(logs.get("num_tokens", 0)),
                        "loss": float(logs["loss"]),
                    }
                )

    model_dir = embedded_model_dir(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = load_dataset("json", data_files=str(data / "train.jsonl"), split="train")
    dataset = dataset.shuffle(seed=42)
    extra = {"bf16": False, "gradient_checkpointing": False} if args.variant == "trl-tuned" else {}
    config = SFTConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=2e-4,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **extra,
    )
    lora = LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Record()],
    )
    trainer.train()
    return history


def run_kaito(args: argparse.Namespace, data: Path, out: Path) -> list[dict[str, float]]:
    """Our job, exactly as ``kaito-tuning run --preset smollm2-135m-instruct`` runs it."""
    from kaito_sdk.tuning_config import parse_training_config  # noqa: PLC0415
    from kaito_tuning.__main__ import _model_for_preset  # noqa: PLC0415
    from kaito_tuning.trainer import TrainJob, run_training  # noqa: PLC0415

    packing = "false" if args.variant == "kaito" else "true"
    strategy = "\n    packing_strategy: wrapped" if args.variant.endswith("wrapped") else ""
    text = f"""
training_config:
  ModelConfig: {{torch_dtype: bfloat16}}
  LoraConfig: {{r: 8, lora_alpha: 8, lora_dropout: 0.0, target_modules: [q_proj, v_proj]}}
  TrainingArguments:
    max_steps: {args.steps}
    per_device_train_batch_size: {args.batch}
    learning_rate: 0.0002
    max_length: {args.max_length}
    packing: {packing}{strategy}
  DatasetConfig: {{shuffle_seed: 42, train_test_split: 1}}
"""
    config = parse_training_config(text, method="lora")
    model = _model_for_preset("smollm2-135m-instruct")
    job = TrainJob(config=config, method="lora", model=model, input_dir=data, output_dir=out)
    return run_training(job).history


def child(args: argparse.Namespace) -> None:
    """Run one variant and print its rates as JSON on the last line."""
    data, out = Path(args.data), Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    runner = run_plain_trl if args.variant.startswith("trl") else run_kaito
    history = runner(args, data, out)
    print(json.dumps({"variant": args.variant, **_rates(history, args.warmup)}))


def main() -> None:
    """Parse arguments; run every variant in a child process and print a table."""
    print(describe_machine(), file=sys.stderr, flush=True)  # stdout: JSON results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    variants = args.variants.split(",")
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-tuning-data-") as tmp:
        write_dataset(Path(tmp) / "train.jsonl", args.rows)
        for round_number in range(1, args.rounds + 1):
            for variant in variants:  # interleaved, so load changes hit every variant alike
                command = [sys.executable, __file__, "--variant", variant, "--data", tmp]
                command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
                command += ["--batch", str(args.batch), "--max-length", str(args.max_length)]
                env = {**os.environ, "HF_HUB_OFFLINE": "1"}
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode != 0:
                    sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[variant].append(result)
                print(
                    f"round {round_number} {variant}: {result['tokens_per_s']:.0f} tokens/s, "
                    f"{result['steps_per_s']:.3f} steps/s, "
                    f"{result['tokens_per_cpu_s']:.0f} tokens per CPU-s",
                    file=sys.stderr,
                )
    summary = {variant: _median(results) for variant, results in runs.items()}
    base = summary.get("trl-defaults") or summary[variants[0]]
    print(
        f"load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} (2 cores); "
        f"rounds {args.rounds}, steps {args.steps}, warmup {args.warmup}, batch {args.batch}, "
        f"max_length {args.max_length}; medians"
    )
    print(
        "| variant | steps/s | tokens/s | tokens/step | tokens per CPU-s | "
        "tokens/s vs trl-defaults | tokens per CPU-s vs trl-defaults | final loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant, row in summary.items():
        ratio = row["tokens_per_s"] / base["tokens_per_s"]
        cpu_ratio = row["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
        print(
            f"| {variant} | {row['steps_per_s']:.3f} | {row['tokens_per_s']:.0f} | "
            f"{row['tokens_per_step']:.0f} | {row['tokens_per_cpu_s']:.0f} | {ratio:.2f}x | "
            f"{cpu_ratio:.2f}x | {row['final_loss']:.3f} |"
        )


def _median(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("steps_per_s", "tokens_per_s", "tokens_per_step", "tokens_per_cpu_s", "final_loss")
    return {key: statistics.median(float(r[key]) for r in results) for key in keys}


if __name__ == "__main__":
    main()
