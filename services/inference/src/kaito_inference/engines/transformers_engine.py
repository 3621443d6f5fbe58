"""The transformers runtime: a Hugging Face model behind the continuous batcher."""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaito_cpu_runtime.memory import release_free_memory
from kaito_cpu_runtime.threads import ThreadGovernor, configure_cpu_threads
from kaito_inference.engines.adapters import (
    AdapterError,
    attach_adapter,
    detach_adapter,
    discover_adapters,
)
from kaito_inference.engines.base import AdapterInfo, GenerationParams, TextDelta
from kaito_inference.engines.sequences import SamplingParams, Sequence
from kaito_inference.engines.text import IncrementalText
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.modelsource import ResolvedModel, resolve_model
from kaito_inference.settings import InferenceSettings

if TYPE_CHECKING:
    from kaito_cpu_runtime.llama_decoder import FastDecoder
    from kaito_inference.engines.batching import ContinuousBatcher

__all__ = ["TransformersEngine"]

log = logging.getLogger(__name__)
DEFAULT_MAX_MODEL_LEN = 4096
#: Texts at least this long are followed by a trim of the C heap (tokenizing a 15 MB prompt
#: allocates about a gigabyte; shorter texts leave little behind).
LARGE_TEXT_CHARS = 1 << 20


class TransformersEngine:
    """Loads the model in a background thread and serves it through :class:`ContinuousBatcher`.

    ``resolve`` turns ``settings.model`` into weights; tests pass a resolver for a tiny
    model. ``load_delay`` (seconds) keeps the engine in the loading state longer, so a
    test can observe ``/health`` answering 503. ``on_load_failure`` is called (from the
    loader thread) with the exception when the model cannot be loaded; ``kaito-inference
    serve`` uses it to end the process.
    """

    def __init__(
        self,
        settings: InferenceSettings,
        metrics: InferenceMetrics,
        *,
        resolve: Callable[[str | None], ResolvedModel] = resolve_model,
        load_delay: float = 0.0,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._resolve = resolve
        self._load_delay = load_delay
        self._on_load_failure = on_load_failure
        self._ready = threading.Event()
        self._adapters: dict[str, AdapterInfo] = {}
        self._batcher: ContinuousBatcher | None = None
        self._tokenizer: Any = None
        self._base_model = settings.served_model_name or "loading"
        self._max_model_len = settings.max_model_len or DEFAULT_MAX_MODEL_LEN
        self.load_error: BaseException | None = None
        self._linears_packed = False
        #: The fast decoder's linear weight format once loaded (``--weights``).
        self.weights: str | None = None
        self._loader = threading.Thread(target=self._load, name="kaito-loader", daemon=True)

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the batcher runs."""
        return self._ready.is_set()

    @property
    def base_model(self) -> str:
        """The served name of the base model."""
        return self._base_model

    @property
    def max_model_len(self) -> int:
        """Prompt plus completion tokens one request may use."""
        return self._max_model_len

    @property
    def batcher(self) -> ContinuousBatcher:
        """The running batcher (its ``stats`` tell what batch sizes ran)."""
        if self._batcher is None:
            raise RuntimeError("the model is not loaded yet")
        return self._batcher

    def start(self) -> None:
        """Start loading in the background."""
        self._loader.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loaded (for CLIs and tests); False on timeout."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop the batcher."""
        if self._batcher is not None:
            self._batcher.stop()

    def _load(self) -> None:
        try:
            self._load_model()
        except BaseException as exc:  # reported by /health, the logs and the callback
            self.load_error = exc
            log.exception("loading the model failed")
            if self._on_load_failure is not None:
                self._on_load_failure(exc)

    def _load_model(self) -> None:
        configure_cpu_threads()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from kaito_cpu_runtime.prefix_cache import PrefixCache
        from kaito_inference.engines.batching import ContinuousBatcher

        started = time.monotonic()
        resolved = self._resolve(self.settings.model)
        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype: Any = self.settings.dtype
        if dtype == "auto":  # float32 on CPU: faster than bfloat16 without native support
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, dtype)
        # On CPU, bfloat16 means bfloat16 weights in the fast decoder's linear layers with
        # float32 everywhere else, so the model itself loads as float32.
        fast_linear_dtype = dtype if dtype in (torch.float32, torch.bfloat16) else None
        load_dtype = torch.float32 if device == "cpu" and fast_linear_dtype else dtype
        log.info("loading %s on %s (%s)", resolved.location, device, dtype)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # tokenizer beside the weights
            pending = pool.submit(AutoTokenizer.from_pretrained, resolved.location)
            model: Any = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=load_dtype)
            tokenizer = pending.result()
        if resolved.chat_template:
            tokenizer.chat_template = resolved.chat_template
        model.to(device).eval()
        fast_decoder = (
            self._fast_decoder(model, tokenizer, resolved, fast_linear_dtype)
            if device == "cpu" and fast_linear_dtype is not None
            else None
        )
        if fast_decoder is None and model.dtype != dtype:
            model.to(dtype)
        adapters = discover_adapters(self.settings.adapters_dir)
        if device == "cpu" and fast_decoder is None:
            self._pack_linears(model)
        for adapter in adapters:
            model = attach_adapter(model, adapter)
            self._adapters[adapter.name] = adapter
            log.info(
                "adapter %s from %s (strength %s)", adapter.name, adapter.path, adapter.strength
            )
        if fast_decoder is not None and adapters and not fast_decoder.use_adapters(model):
            self._pack_linears(model)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        config_len = getattr(model.config, "max_position_embeddings", None)
        self._max_model_len = self.settings.max_model_len or config_len or DEFAULT_MAX_MODEL_LEN
        self._tokenizer = tokenizer
        self._base_model = self.settings.served_model_name or resolved.name
        self._batcher = ContinuousBatcher(
            model,
            eos_token_ids=eos_ids,
            max_running=self.settings.max_running,
            max_waiting=self.settings.max_waiting,
            max_prefill_tokens=self.settings.max_prefill_tokens,
            join_prefills=self.settings.prefill_join == "on",
            on_batch=self.metrics.observe_batch,
            fast_decoder=fast_decoder,
            thread_governor=self._thread_governor() if device == "cpu" else None,
            prefix_cache=(
                PrefixCache(self.settings.prefix_cache_tokens)
                if self.settings.prefix_cache_tokens
                else None
            ),
        )
        self._batcher.start()
        time.sleep(self._load_delay)
        self._ready.set()
        log.info("serving %s after %.1f s", self._base_model, time.monotonic() - started)

    def _thread_governor(self) -> ThreadGovernor:
        """Adapts the batcher thread's CPU threads to contention; reported as a gauge."""
        import torch

        def set_threads(threads: int) -> None:
            torch.set_num_threads(threads)
            self.metrics.cpu_threads.set(threads)

        threads = torch.get_num_threads()
        self.metrics.cpu_threads.set(threads)
        return ThreadGovernor(max_threads=threads, set_threads=set_threads)

    def _fast_decoder(
        self, model: Any, tokenizer: Any, resolved: ResolvedModel, linear_dtype: Any
    ) -> FastDecoder | None:
        """The lean CPU forward in the weight format ``--weights`` picks (``None`` for
        models it does not cover); ``--dtype bfloat16`` with ``--weights auto`` keeps
        meaning bfloat16 linear weights."""
        import torch

        from kaito_inference.engines.weights import build_decoder, embedded_q4_blocks

        setting = self.settings.weights
        if setting == "auto" and linear_dtype == torch.bfloat16:
            setting = "bfloat16"
        blocks = embedded_q4_blocks(resolved.location) if setting in ("auto", "int4") else {}
        choice = build_decoder(model, tokenizer, setting, blocks, self.settings.integer_kernels)
        if choice.decoder is not None:
            log.info("fast CPU decoder on: linear weights %s (%s)", choice.weights, choice.reason)
            if self.settings.compile_decode == "auto":
                self._compile_decode_step(choice.decoder)
        self.weights = choice.weights
        return choice.decoder

    @staticmethod
    def _compile_decode_step(decoder: FastDecoder) -> None:
        """Compile the decoder's decode step before serving (``--compile-decode auto``),
        saying how it went; a step that cannot be compiled stays eager. (Compiling beside
        a serving engine slowed its first answer tenfold: dynamo's tracing and the C++
        compiler took the cores and the GIL, so it is done before the engine is ready.)"""
        log.info(
            "compiling the decode step with torch inductor (about a minute on 2 cores the "
            "first time; seconds once its cache holds it)"
        )
        started = time.monotonic()
        compiled, problem = decoder.compile_decode_step()
        decoder.use_compiled_step(compiled)
        if compiled is None:
            log.info("decode step: eager (%s)", problem)
        else:
            log.info("decode step: compiled (%.1f s)", time.monotonic() - started)

    def _pack_linears(self, model: Any) -> None:
        """Prepack the model's own linear layers (the transformers forward, used with
        LoRA adapters); once per model."""
        from kaito_cpu_runtime.linear import pack_linear_layers

        if not self._linears_packed:
            self._linears_packed = True
            log.info("prepacked %d linear layers for oneDNN", pack_linear_layers(model))

    def _refresh_fast_path(self, batcher: ContinuousBatcher) -> None:
        """Tell the fast decoder which adapters are attached now (under the model lock);
        prepack the model's own linears when it has to fall back to them."""
        fast = batcher.fast_decoder
        if fast is not None and not fast.use_adapters(batcher.model):
            self._pack_linears(batcher.model)

    def adapters(self) -> list[AdapterInfo]:
        """Adapters currently served."""
        return list(self._adapters.values())

    def queue_depth(self) -> tuple[int, int]:
        """Sequences (running, waiting) right now; (0, 0) while loading."""
        batcher = self._batcher
        return (batcher.num_running, batcher.num_waiting) if batcher is not None else (0, 0)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the chat-templated conversation, ready for the assistant's turn."""
        encoded = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        ids = list(encoded["input_ids"] if isinstance(encoded, dict) else encoded)
        del encoded
        if sum(len(m["content"]) for m in messages) >= LARGE_TEXT_CHARS:
            release_free_memory()
        return ids

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a completion prompt."""
        ids = list(self._tokenizer(prompt)["input_ids"])
        if len(prompt) >= LARGE_TEXT_CHARS:
            release_free_memory()
        return ids

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, *, adapter: str | None
    ) -> AsyncGenerator[TextDelta, None]:
        """Stream text deltas; leaving the loop early (disconnect, stop string) cancels."""
        seq = Sequence(
            prompt_ids=prompt_ids,
            params=SamplingParams(params.max_tokens, params.temperature, params.top_p, params.seed),
            adapter=adapter,
            loop=asyncio.get_running_loop(),
        )
        self.batcher.submit(seq)  # raises QueueFullError
        text = IncrementalText(self._tokenizer, params.stop)
        count = 0
        try:
            while True:
                event = await seq.events.get()
                if event.token_id is None:
                    reason = "length" if event.finish_reason == "length" else "stop"
                    if event.finish_reason == "error":
                        raise RuntimeError("generation failed; see the server log")
                    yield TextDelta(text.flush(), reason, count)
                    return
                count += 1
                delta = text.push(event.token_id)
                if text.stopped:
                    yield TextDelta(delta, "stop", count)
                    return
                if delta:
                    yield TextDelta(delta, None, count)
        finally:
            seq.cancel()

    def load_adapter(self, name: str, path: Path) -> AdapterInfo:
        """Attach a validated adapter between two batch steps."""
        adapter = AdapterInfo(name, path, 1.0)
        batcher = self.batcher
        with batcher.model_lock:
            batcher.model = attach_adapter(batcher.model, adapter)
            self._refresh_fast_path(batcher)
            if batcher.prefix_cache is not None:  # nothing cached under a reused name
                batcher.prefix_cache.clear(name)
        self._adapters[name] = adapter
        return adapter

    def unload_adapter(self, name: str) -> None:
        """Detach adapter ``name`` between two batch steps."""
        batcher = self.batcher
        with batcher.model_lock:
            if batcher.uses_adapter(name):
                raise AdapterError(f"adapter {name!r} has requests in flight; retry when done")
            self._adapters.pop(name)
            batcher.model = detach_adapter(batcher.model, name)
            self._refresh_fast_path(batcher)
            if batcher.prefix_cache is not None:
                batcher.prefix_cache.clear(name)
