"""KAITO's inference_config.yaml: parsing, validation errors naming the key, vLLM flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_sdk.inference_config import (
    InferenceConfig,
    InferenceConfigError,
    load_inference_config,
    parse_inference_config,
    vllm_args,
)

KAITO_DEFAULT = """\
max_probe_steps: 6
kv_cache_cpu_memory_utilization: 0.5
vllm:
  cpu-offload-gb: 0
  gpu-memory-utilization: 0.95
  swap-space: 4
  max-model-len: 4096
"""


def test_kaito_default_template_parses() -> None:
    config = parse_inference_config(KAITO_DEFAULT)
    assert config.max_probe_steps == 6
    assert config.kv_cache_cpu_memory_utilization == 0.5
    assert config.max_model_len() == 4096
    assert vllm_args(config) == [
        "--cpu-offload-gb", "0", "--gpu-memory-utilization", "0.95",
        "--swap-space", "4", "--max-model-len", "4096",
    ]  # fmt: skip


def test_empty_file_gives_defaults() -> None:
    config = parse_inference_config("")
    assert config == InferenceConfig()
    assert config.kv_cache_cpu_memory_utilization == 0.5
    assert vllm_args(config) == []
    assert config.max_model_len() is None


def test_value_kinds_become_flags() -> None:
    config = parse_inference_config(
        "vllm:\n  enable-prefix-caching: true\n  enable-chunked-prefill: false\n"
        "  compilation-config: {level: 0}\n  lora-modules: [a=/x, b=/y]\n  seed: null\n"
    )
    assert vllm_args(config) == [
        "--enable-prefix-caching", "--no-enable-chunked-prefill",
        "--compilation-config", '{"level":0}', "--lora-modules", "a=/x", "b=/y",
    ]  # fmt: skip


def test_transformers_section_accepts_kebab_and_snake() -> None:
    config = parse_inference_config(
        "transformers:\n  max-model-len: 2048\n  max_running: 8\n  dtype: float32\n"
    )
    assert config.transformers.max_model_len == 2048
    assert config.transformers.max_running == 8
    assert config.max_model_len() == 2048


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("kv_cache_cpu_memory_utilization: 1.5", "kv_cache_cpu_memory_utilization", "less than"),
        ("max_probe_steps: -1", "max_probe_steps", "greater than"),
        ("unknown_key: 1", "unknown_key", "unknown key"),
        ("vllm:\n  Max Model Len: 5", "vllm", "not a vLLM argument name"),
        ("vllm:\n  port: 8000", "vllm", "set by the operator"),
        ("vllm:\n  served_model_name: x", "vllm", "set by the operator"),
        ("transformers:\n  max-running: 0", "transformers.max-running", "greater than"),
        ("transformers:\n  batch: 3", "transformers.batch", "unknown key"),
        ("- a\n- b", "inference_config.yaml", "mapping"),
        ("vllm: [", "inference_config.yaml", "not valid YAML"),
    ],
)
def test_errors_name_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(InferenceConfigError) as err:
        parse_inference_config(text)
    keys = [k for k, _ in err.value.errors]
    assert key in keys, err.value.errors
    assert fragment in str(err.value)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "inference_config.yaml"
    path.write_text(KAITO_DEFAULT)
    assert load_inference_config(path).max_model_len() == 4096
    with pytest.raises(InferenceConfigError, match="cannot be read"):
        load_inference_config(tmp_path / "missing.yaml")
