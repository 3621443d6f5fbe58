"""LoRA/QLoRA training: base model + PEFT adapter, trained with TRL's ``SFTTrainer``.

The job is restartable: checkpoints go to the output directory (per ``save_strategy``),
a restarted job resumes from the last one, and a finished job (completion marker present)
does nothing. Only the adapter is kept at the end (``adapter_config.json`` and
``adapter_model.safetensors``), then the completion marker is written last.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import datasets
import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
)
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from kaito_sdk.contracts.tuning import ADAPTER_FILES, COMPLETION_MARKER
from kaito_sdk.tuning_config import TrainingConfig, TuningMethod
from kaito_tuning.callbacks import ProgressCallback
from kaito_tuning.data import SplitData, load_split
from kaito_tuning.metrics import TrainingMetrics

__all__ = [
    "TrainJob",
    "TrainResult",
    "TuningError",
    "check_hardware",
    "last_complete_checkpoint",
    "run_training",
]

logger = logging.getLogger(__name__)

_HALF_DTYPES: Final = frozenset({"bfloat16", "float16", "half"})
_UNEXPECTED_ARGUMENT: Final = re.compile(r"unexpected keyword argument '([^']+)'")
_COLLATOR_TO_SFT: Final = frozenset({"pad_to_multiple_of"})
_Config = TypeVar("_Config")  # the Hugging Face config class _hf_call builds


class TuningError(RuntimeError):
    """A tuning job that cannot run as configured (bad argument, no GPU for qlora, ...)."""


@dataclass(frozen=True)
class TrainJob:
    """What to train: the parsed config, the base model and the directories."""

    config: TrainingConfig
    method: TuningMethod
    model: str
    """Base model directory (or a hub id already in the local cache)."""
    input_dir: Path
    output_dir: Path


@dataclass
class TrainResult:
    """What a run produced."""

    adapter_dir: Path
    steps: int = 0
    resumed_from: str | None = None
    already_complete: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def check_hardware(method: TuningMethod) -> None:
    """Stop at once when ``qlora`` is asked for without a CUDA GPU."""
    if method == "qlora" and not torch.cuda.is_available():
        raise TuningError(
            "method 'qlora' loads the base model in 4/8-bit with bitsandbytes, which needs "
            "a CUDA GPU, and none is visible; use method 'lora' on CPU"
        )


def _hf_call(section: str, target: type[_Config], kwargs: dict[str, Any]) -> _Config:
    """Call a Hugging Face config class; turn its complaints into :class:`TuningError`."""
    try:
        return target(**kwargs)
    except TypeError as exc:
        match = _UNEXPECTED_ARGUMENT.search(str(exc))
        if match is None:
            raise TuningError(f"{section}: {exc}") from None
        raise TuningError(
            f"{section}.{match.group(1)}: not an argument of {target.__module__}.{target.__name__}"
        ) from None
    except ValueError as exc:
        raise TuningError(f"{section}: {exc}") from None


def _load_model(job: TrainJob) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs = job.config.model_args.hf_kwargs()
    path = kwargs.pop("pretrained_model_name_or_path", None) or job.model
    chat_template = kwargs.pop("chat_template", None)
    dtype = kwargs.pop("torch_dtype", None)
    if not torch.cuda.is_available():
        kwargs.pop("device_map", None)
        if dtype in _HALF_DTYPES:
            logger.info("model: no CUDA GPU, training in float32 instead of %s", dtype)
            dtype = "float32"
    if dtype is not None:
        kwargs["dtype"] = dtype
    quant = job.config.quantization
    if quant.quantized:
        kwargs["quantization_config"] = _hf_call(
            "QuantizationConfig", BitsAndBytesConfig, quant.hf_kwargs()
        )
    tokenizer_kwargs = {
        key: kwargs[key]
        for key in ("local_files_only", "trust_remote_code", "revision")
        if key in kwargs
    }
    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **tokenizer_kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise TuningError(f"ModelConfig: cannot load the base model from {path!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    logger.info(
        "model: loaded %s (%.1fM parameters) in %.1f s",
        path,
        model.num_parameters() / 1e6,
        time.monotonic() - started,
    )
    return model, tokenizer


def _sft_config(job: TrainJob, data: SplitData) -> SFTConfig:
    kwargs = job.config.training.hf_kwargs()
    kwargs["output_dir"] = str(job.output_dir)
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("logging_steps", 1)
    kwargs.setdefault("disable_tqdm", True)
    if data.layout == "text":
        kwargs.setdefault("dataset_text_field", "text")
    collator = job.config.collator.hf_kwargs()
    collator.pop("mlm", None)  # a causal LM is never trained masked (KAITO flips it off)
    collator.pop("mlm_probability", None)
    unsupported = sorted(set(collator) - _COLLATOR_TO_SFT)
    if unsupported:
        raise TuningError(
            f"DataCollator.{unsupported[0]}: not supported (supported: mlm, "
            f"mlm_probability, {', '.join(sorted(_COLLATOR_TO_SFT))})"
        )
    kwargs.update(collator)
    if not torch.cuda.is_available():
        # CPU: no bf16 autocast (these CPUs have no bf16 units: slower, not faster) and no
        # gradient checkpointing (it trades ~20% speed for memory a CPU node has)
        kwargs.setdefault("use_cpu", True)
        kwargs.setdefault("bf16", False)
        kwargs.setdefault("gradient_checkpointing", False)
    return _hf_call("TrainingArguments", SFTConfig, kwargs)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state (written last) is complete.

    A job killed while writing a checkpoint leaves a partial directory behind: it is
    removed, and the one before it is used.
    """
    numbered = [
        path
        for path in output_dir.glob("checkpoint-*")
        if path.is_dir() and path.name.removeprefix("checkpoint-").isdigit()
    ]
    for path in sorted(
        numbered, key=lambda p: int(p.name.removeprefix("checkpoint-")), reverse=True
    ):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("training: removing incomplete checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)
            continue
        return path
    return None


def _finish(output_dir: Path) -> None:
    for checkpoint in output_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    marker = output_dir / COMPLETION_MARKER
    marker.write_text(
        f"fine-tuning completed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
    )


def run_training(job: TrainJob, *, metrics: TrainingMetrics | None = None) -> TrainResult:
    """Train (or resume, or skip when already complete) and save the adapter only."""
    output_dir = job.output_dir
    if (output_dir / COMPLETION_MARKER).is_file():
        logger.info("training: %s already has %s; nothing to do", output_dir, COMPLETION_MARKER)
        return TrainResult(adapter_dir=output_dir, already_complete=True)
    check_hardware(job.method)
    datasets.disable_progress_bars()  # the job logs its own progress lines
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated upstream
    data = load_split(job.input_dir, job.config.dataset)
    logger.info(
        "data: %d training rows, %d evaluation rows (%s layout)",
        len(data.train),
        len(data.eval) if data.eval is not None else 0,
        data.layout,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    args = _sft_config(job, data)
    model, tokenizer = _load_model(job)
    if job.config.quantization.quantized:
        model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]  # unannotated in peft
    lora = _hf_call("LoraConfig", LoraConfig, job.config.lora.hf_kwargs())
    peft_model = get_peft_model(model, lora)
    progress = ProgressCallback(metrics)
    trainer = SFTTrainer(
        model=peft_model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=[progress],
    )
    trainer.remove_callback(PrinterCallback)  # raw log dicts; ProgressCallback logs instead
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        logger.info("training: resuming from %s", last)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    elapsed = time.monotonic() - started
    peft_model.save_pretrained(str(output_dir))
    missing = [name for name in ADAPTER_FILES if not (output_dir / name).is_file()]
    if missing:
        raise TuningError(f"the adapter was not saved: missing {', '.join(missing)}")
    _finish(output_dir)
    if metrics is not None:
        metrics.completed.set(1)
    logger.info(
        "training: done, %d steps in %.1f s; adapter in %s",
        trainer.state.global_step,
        elapsed,
        output_dir,
    )
    return TrainResult(
        adapter_dir=output_dir,
        steps=trainer.state.global_step,
        resumed_from=str(last) if last is not None else None,
        history=progress.history,
        train_seconds=elapsed,
    )
