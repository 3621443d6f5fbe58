"""The local embedder: same embeddings as sentence-transformers, bf16 within cosine 0.999.

The kernels under it (the lean BERT encoder, prepacked linears) are tested in
services/cpu-runtime/tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kaito_cpu_runtime.linear import has_native_bf16
from kaito_ragengine.embeddings.local import LocalEmbedder, Precision, resolve_model_path

from .test_real_embeddings import DOCS

QUERIES = [
    "How do green leaves make food from light?",
    "Which famous landmark stands in the French capital?",
    "interest rate hike hits equities",
    "bread yeast",
]


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("bf16_rejected", [False, True])
async def test_float32_embeddings_match_sentence_transformers(bf16_rejected: bool) -> None:
    """Asked for float32, or bf16 rejected by the probe check: the reference embeddings."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    texts = [d["text"] for d in DOCS] + QUERIES
    precision = "bfloat16" if bf16_rejected else "float32"
    embedder = LocalEmbedder("all-MiniLM-L6-v2", precision=precision, batch_size=3)
    embedder.MIN_BF16_COSINE = 1.01  # no bf16 result can pass: the float32 weights come back
    try:
        ours = await embedder.embed(texts)  # three slices, sorted by length, put back in order
    finally:
        await embedder.aclose()
    assert embedder.precision == "float32"
    reference = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    np.testing.assert_allclose(ours, reference, atol=2e-5)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_bfloat16_stays_within_cosine_and_ranks_the_test_corpus_the_same() -> None:
    if not has_native_bf16():
        pytest.skip("this CPU has no native bf16 (auto precision stays float32 here)")
    texts = [d["text"] for d in DOCS]
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    precisions: tuple[Precision, ...] = ("float32", "auto")
    for precision in precisions:
        embedder = LocalEmbedder("all-MiniLM-L6-v2", precision=precision)
        try:
            results[precision] = (await embedder.embed(texts), await embedder.embed(QUERIES))
        finally:
            await embedder.aclose()
        assert embedder.precision == ("float32" if precision == "float32" else "bfloat16")
    (docs32, queries32), (docs16, queries16) = results["float32"], results["auto"]
    assert np.sum(docs32 * docs16, axis=1).min() >= LocalEmbedder.MIN_BF16_COSINE
    assert np.sum(queries32 * queries16, axis=1).min() >= LocalEmbedder.MIN_BF16_COSINE
    ranking32 = np.argsort(-(queries32 @ docs32.T), axis=1)
    ranking16 = np.argsort(-(queries16 @ docs16.T), axis=1)
    np.testing.assert_array_equal(ranking16, ranking32)


@pytest.mark.asyncio
async def test_other_architectures_run_through_transformers(tmp_path: Path) -> None:
    """A BERT variant the lean encoder does not implement (tanh GELU) takes the generic path."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.modules import (  # noqa: PLC0415
        Pooling,
        Transformer,
    )
    from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: PLC0415

    hf_dir = tmp_path / "hf"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_act="gelu_new",
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    reference_model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    reference_model.save(str(tmp_path / "st"))
    embedder = LocalEmbedder(str(tmp_path / "st"), precision="auto")
    try:
        ours = await embedder.embed(QUERIES)
    finally:
        await embedder.aclose()
    assert embedder.precision == "float32"
    reference = reference_model.encode(QUERIES, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
