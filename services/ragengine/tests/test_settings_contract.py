"""Every variable the operator sets (SDK contract) is read by the service settings (#2365)."""

from __future__ import annotations

import os

import pytest

from kaito_ragengine.settings import Settings
from kaito_sdk.contracts.ragengine import (
    ENV_PREFIX,
    SECRET_FIELDS,
    RagEngineConfig,
    RagEngineSecrets,
    SecretKeyRef,
    env_vars,
)


def test_every_operator_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    config = RagEngineConfig(
        embedding_source="remote",
        embedding_model_id="text-embedding-3-small",
        embedding_url="https://embed.example.com/v1",
        llm_inference_url="http://llm.ns.svc/v1/chat/completions",
        llm_context_window=4096,
        persist_dir="/mnt/data/rag",
        snapshot_retention=7,
        snapshot_on_shutdown=False,
        restore_on_start=False,
        allow_private_urls=True,
        port=5050,
    )
    secrets = RagEngineSecrets(
        embedding_access_secret=SecretKeyRef(name="e", key="token"),
        llm_access_secret=SecretKeyRef(name="l", key="token"),
    )
    # every value differs from its default (only faiss exists), so an unread variable fails
    defaults = RagEngineConfig()
    same = [f for f in RagEngineConfig.model_fields if getattr(config, f) == getattr(defaults, f)]
    assert same == ["vector_db_type"]
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    items = env_vars(config, secrets)
    for item in items:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            monkeypatch.setenv(item["name"], f"{ref['name']}/{ref['key']}")
    settings_env_names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert {item["name"] for item in items} <= settings_env_names
    settings = Settings()
    for field in RagEngineConfig.model_fields:
        assert getattr(settings, field) == getattr(config, field), field
    for field in SECRET_FIELDS:
        secret = getattr(settings, field)
        assert secret is not None
        assert secret.get_secret_value() == f"{field[0]}/token"
        assert "token" not in repr(settings)  # secrets never show up in logs


def test_settings_validate_like_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_RAG_LLM_INFERENCE_URL", "http://llm/v1")
    monkeypatch.delenv("KAITO_RAG_LLM_CONTEXT_WINDOW", raising=False)
    with pytest.raises(ValueError, match="llm_context_window is required"):
        Settings()
