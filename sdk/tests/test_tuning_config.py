"""Every rule of ``kaito_sdk.tuning_config``, with the message checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_sdk.tuning_config import (
    SECTION_NAMES,
    TrainingConfig,
    TuningConfigError,
    parse_training_config,
    resolve_output_dir,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "presets" / "tuning"


def _config(sections: str) -> str:
    body = "\n".join("  " + line for line in sections.strip("\n").splitlines())
    return f"training_config:\n{body}\n"


def _single_issue(text: str, method: str | None = None) -> tuple[str, str]:
    with pytest.raises(TuningConfigError) as caught:
        parse_training_config(text, method=method)
    assert len(caught.value.issues) == 1, caught.value.issues
    return caught.value.issues[0]


@pytest.mark.parametrize(("name", "method"), [("lora", "lora"), ("qlora", "qlora")])
def test_default_templates_parse_for_their_method(name: str, method: str) -> None:
    text = (TEMPLATES / f"{name}-params.yaml").read_text()
    config = parse_training_config(text, method=method)
    assert config.lora.r == 8
    assert config.lora.lora_alpha == 8
    assert config.training.output_dir == "/mnt/results"
    assert config.training.save_strategy == "epoch"
    assert config.dataset.train_test_split == 1
    assert config.quantization.load_in_4bit is (method == "qlora")


def test_templates_are_refused_for_the_other_method() -> None:
    lora = (TEMPLATES / "lora-params.yaml").read_text()
    qlora = (TEMPLATES / "qlora-params.yaml").read_text()
    assert _single_issue(lora, "qlora")[1].startswith("method 'qlora' needs load_in_4bit")
    assert _single_issue(qlora, "LoRA")[1].startswith("method 'lora' forbids load_in_4bit")


def test_empty_sections_and_defaults() -> None:
    config = parse_training_config("training_config:\n  LoraConfig:\n", method="lora")
    assert config.training.resolved_output_dir == "/mnt/results"
    assert config.dataset.response_column == "text"
    assert config.dataset.shuffle_seed == 42
    assert config.dataset.train_test_split == 0.8
    assert config.model_args.local_files_only is True
    assert config == TrainingConfig()


def test_unknown_hf_arguments_pass_through() -> None:
    config = parse_training_config(
        _config("""
LoraConfig:
  r: 4
  use_rslora: true
  target_modules: [q_proj, v_proj]
TrainingArguments:
  learning_rate: 0.001
  gradient_accumulation_steps: 2
QuantizationConfig:
  llm_int8_threshold: 5.0
ModelConfig:
  attn_implementation: eager
DataCollator:
  pad_to_multiple_of: 8
""")
    )
    assert config.lora.hf_kwargs()["use_rslora"] is True
    assert config.lora.hf_kwargs()["target_modules"] == ["q_proj", "v_proj"]
    training = config.training.hf_kwargs()
    assert training["learning_rate"] == 0.001
    assert training["gradient_accumulation_steps"] == 2
    assert config.quantization.hf_kwargs()["llm_int8_threshold"] == 5.0
    assert config.model_args.hf_kwargs()["attn_implementation"] == "eager"
    assert "pretrained_model_name_or_path" not in config.model_args.hf_kwargs()
    assert config.collator.hf_kwargs() == {
        "mlm": True,
        "mlm_probability": 0.15,
        "pad_to_multiple_of": 8,
    }


def test_unknown_section_is_refused_with_the_allowed_list() -> None:
    key, rule = _single_issue(_config("TokenizerParams:\n  padding: true\nLoraConfig: {}"))
    assert key == "training_config"
    assert rule == (
        "unknown section(s) TokenizerParams; allowed sections: " + ", ".join(SECTION_NAMES)
    )


def test_unknown_dataset_key_is_refused_with_the_allowed_keys() -> None:
    key, rule = _single_issue(_config("DatasetConfig:\n  shuffle: true"))
    assert key == "training_config.DatasetConfig.shuffle"
    assert rule.startswith("unknown key; allowed keys: dataset_path, dataset_extension")


@pytest.mark.parametrize(
    "text",
    ["", "just a string", "other: 1", "[1, 2]"],
)
def test_missing_top_key(text: str) -> None:
    assert _single_issue(text) == (
        "training_config",
        "required top-level key (a mapping of sections)",
    )


def test_extra_top_level_key() -> None:
    text = "training_config: {}\nextra: 1\n"
    assert _single_issue(text) == (
        "extra",
        "unknown top-level key; only training_config is allowed",
    )


def test_training_config_not_a_mapping() -> None:
    assert _single_issue("training_config: [1]") == (
        "training_config",
        "must be a mapping of sections",
    )


def test_invalid_yaml() -> None:
    key, rule = _single_issue("training_config:\n  LoraConfig: {r: [}\n")
    assert key == "training_config.yaml"
    assert rule.startswith("is not valid YAML:")


def test_both_bit_widths_are_invalid_for_any_method() -> None:
    text = _config("QuantizationConfig:\n  load_in_4bit: true\n  load_in_8bit: true")
    for method in (None, "lora", "qlora"):
        assert _single_issue(text, method) == (
            "training_config.QuantizationConfig",
            "load_in_4bit and load_in_8bit cannot both be true",
        )


@pytest.mark.parametrize("bits", ["load_in_4bit", "load_in_8bit"])
def test_lora_forbids_quantisation(bits: str) -> None:
    text = _config(f"QuantizationConfig:\n  {bits}: true")
    assert parse_training_config(text, method="qlora").quantization.quantized
    assert _single_issue(text, "lora") == (
        "training_config.QuantizationConfig",
        "method 'lora' forbids load_in_4bit and load_in_8bit "
        "(use method 'qlora' for a quantised base model)",
    )


def test_qlora_needs_quantisation_even_without_the_section() -> None:
    assert _single_issue("training_config: {}", "qlora") == (
        "training_config.QuantizationConfig",
        "method 'qlora' needs load_in_4bit or load_in_8bit set to true",
    )


def test_unknown_method() -> None:
    assert _single_issue("training_config: {}", "dora") == (
        "method",
        "must be lora or qlora (got 'dora')",
    )


def test_non_boolean_bits_is_refused() -> None:
    key, rule = _single_issue(_config("QuantizationConfig:\n  load_in_4bit: maybe"))
    assert key == "training_config.QuantizationConfig.load_in_4bit"
    assert "valid boolean" in rule


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        ("/mnt/results", "/mnt/results"),
        ("results/run1", "/mnt/results/run1"),
        ("/mnt/a/../b", "/mnt/b"),
    ],
)
def test_output_dir_accepted(value: str, resolved: str) -> None:
    config = parse_training_config(_config(f"TrainingArguments:\n  output_dir: {value!r}"))
    assert config.training.resolved_output_dir == resolved
    assert resolve_output_dir(value) == resolved


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        ("/mnt", "/mnt"),
        (".", "/mnt"),
        ("/tmp/out", "/tmp/out"),
        ("/mnt/../etc", "/etc"),
        ("../etc", "/etc"),
        ("/mntx/results", "/mntx/results"),
    ],
)
def test_output_dir_must_stay_under_mnt(value: str, resolved: str) -> None:
    text = _config(f"TrainingArguments:\n  output_dir: {value!r}")
    assert _single_issue(text) == (
        "training_config.TrainingArguments.output_dir",
        f"must be a directory under /mnt/ (got {value!r}, which resolves to {resolved!r})",
    )


@pytest.mark.parametrize("value", ["/etc/passwd", "../secrets", "a/../../b"])
def test_dataset_path_must_stay_inside_the_input(value: str) -> None:
    text = _config(f"DatasetConfig:\n  dataset_path: {value!r}")
    assert _single_issue(text) == (
        "training_config.DatasetConfig.dataset_path",
        f"must be a relative path inside the input directory (got {value!r})",
    )


@pytest.mark.parametrize(
    ("section", "body", "key", "fragment"),
    [
        ("LoraConfig", "r: 0", "LoraConfig.r", "greater than 0"),
        ("LoraConfig", "lora_dropout: 1.5", "LoraConfig.lora_dropout", "less than 1"),
        ("LoraConfig", "bias: some", "LoraConfig.bias", "'none', 'all' or 'lora_only'"),
        ("ModelConfig", "torch_dtype: int3", "ModelConfig.torch_dtype", "must be one of auto"),
        (
            "TrainingArguments",
            "per_device_train_batch_size: 0",
            "TrainingArguments.per_device_train_batch_size",
            "greater than or equal to 1",
        ),
        ("TrainingArguments", "save_strategy: always", "TrainingArguments.save_strategy", "'no'"),
        (
            "DatasetConfig",
            "train_test_split: 0",
            "DatasetConfig.train_test_split",
            "greater than 0",
        ),
        (
            "DatasetConfig",
            "dataset_extension: xlsx",
            "DatasetConfig.dataset_extension",
            "'csv', 'json', 'jsonl', 'parquet' or 'arrow'",
        ),
        ("DataCollator", "mlm_probability: 2", "DataCollator.mlm_probability", "less than 1"),
        (
            "QuantizationConfig",
            "bnb_4bit_quant_type: int2",
            "QuantizationConfig.bnb_4bit_quant_type",
            "'fp4' or 'nf4'",
        ),
    ],
)
def test_field_rules_name_the_key(section: str, body: str, key: str, fragment: str) -> None:
    issue_key, rule = _single_issue(_config(f"{section}:\n  {body}"))
    assert issue_key == f"training_config.{key}"
    assert fragment in rule


def test_several_issues_are_reported_together() -> None:
    text = _config("LoraConfig:\n  r: -1\nTrainingArguments:\n  output_dir: /tmp")
    with pytest.raises(TuningConfigError) as caught:
        parse_training_config(text)
    keys = [key for key, _ in caught.value.issues]
    assert keys == [
        "training_config.LoraConfig.r",
        "training_config.TrainingArguments.output_dir",
    ]
    assert "training_config.LoraConfig.r: Input should be greater than 0" in str(caught.value)
