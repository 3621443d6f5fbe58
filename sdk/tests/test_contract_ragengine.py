"""The RAG engine environment contract: names, values, secrets and round trips."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from kaito_sdk.contracts.ragengine import (
    ENV_PREFIX,
    SECRET_FIELDS,
    RagEngineConfig,
    RagEngineSecrets,
    SecretKeyRef,
    env_name,
    env_vars,
)


def _full_config() -> RagEngineConfig:
    return RagEngineConfig(
        embedding_source="remote",
        embedding_model_id="text-embedding-3-small",
        embedding_url="https://embed.example.com/v1/embeddings",
        llm_inference_url="http://llm.default.svc/v1/chat/completions",
        llm_context_window=8192,
        persist_dir="/mnt/data/my-rag",
        snapshot_retention=3,
        snapshot_on_shutdown=False,
        restore_on_start=False,
        allow_private_urls=True,
        port=5001,
    )


def test_env_names_are_prefixed_upper_case_field_names() -> None:
    assert env_name("llm_context_window") == "KAITO_RAG_LLM_CONTEXT_WINDOW"
    names = [item["name"] for item in env_vars(_full_config())]
    assert names == sorted(names)
    assert all(name.startswith(ENV_PREFIX) for name in names)
    assert set(names) == {env_name(f) for f in RagEngineConfig.model_fields}


def test_env_values_are_strings_and_round_trip() -> None:
    config = _full_config()
    items = env_vars(config)
    assert all(isinstance(item["value"], str) for item in items)
    parsed = RagEngineConfig.model_validate(
        {item["name"].removeprefix(ENV_PREFIX).lower(): item["value"] for item in items}
    )
    assert parsed == config


def test_unset_optional_fields_are_left_out() -> None:
    names = {item["name"] for item in env_vars(RagEngineConfig())}
    assert "KAITO_RAG_LLM_INFERENCE_URL" not in names
    assert "KAITO_RAG_EMBEDDING_URL" not in names
    assert "KAITO_RAG_EMBEDDING_SOURCE" in names


def test_secrets_become_secret_key_refs() -> None:
    secrets = RagEngineSecrets(
        embedding_access_secret=SecretKeyRef(name="embed-token", key="token"),
        llm_access_secret=SecretKeyRef(name="llm", key="LLM_ACCESS_SECRET"),
    )
    by_name = {item["name"]: item for item in env_vars(_full_config(), secrets)}
    assert by_name["KAITO_RAG_EMBEDDING_ACCESS_SECRET"] == {
        "name": "KAITO_RAG_EMBEDDING_ACCESS_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "embed-token", "key": "token"}},
    }
    assert by_name["KAITO_RAG_LLM_ACCESS_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm",
        "key": "LLM_ACCESS_SECRET",
    }
    assert "value" not in by_name["KAITO_RAG_LLM_ACCESS_SECRET"]


def test_secret_fields_do_not_collide_with_plain_fields() -> None:
    assert set(SECRET_FIELDS) == set(RagEngineSecrets.model_fields)
    assert not set(SECRET_FIELDS) & set(RagEngineConfig.model_fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embedding_source": "remote"}, "embedding_url is required"),
        ({"llm_inference_url": "http://llm/v1"}, "llm_context_window is required"),
        ({"llm_context_window": 0}, "greater than 0"),
        ({"snapshot_retention": 0}, "greater than or equal to 1"),
        ({"vector_db_type": "qdrant"}, "faiss"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RagEngineConfig.model_validate(kwargs)


def test_contract_imports_only_pydantic() -> None:
    code = (
        "import sys, kaito_sdk.contracts.ragengine; "
        "heavy = {'pydantic_settings', 'fastapi', 'torch', 'faiss', 'llama_index'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
