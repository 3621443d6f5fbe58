"""Every environment variable the operator sets on the RAG service is read by the service.

KAITO's controller and RAG service drifted apart on variable names and silently ignored
remote embeddings (KAITO issue #2365). Here the Deployment the operator builds is fed
into the service's real settings class, variable by variable.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from kaito_operator.builders.ragengine import ragengine_deployment
from kaito_ragengine.settings import Settings
from kaito_sdk.api import RAGEngine
from kaito_sdk.contracts.ragengine import ENV_PREFIX

SPECS: dict[str, dict[str, Any]] = {
    "local-retrieve-only": {
        "embedding": {"local": {"modelID": "sentence-transformers/all-MiniLM-L6-v2"}}
    },
    "local-model-with-llm": {
        "embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}},
        "inferenceService": {
            "url": "https://llm.example.com/v1/chat/completions",
            "contextWindowSize": 8192,
        },
    },
    "remote-everything-with-secrets-and-pvc": {
        "embedding": {
            "remote": {"url": "http://embed.team.svc/v1/embeddings", "accessSecret": "emb"}
        },
        "inferenceService": {
            "url": "http://phi.team.svc/v1/chat/completions",
            "accessSecret": "llm",
            "contextWindowSize": 4096,
        },
        "storage": {"persistentVolume": {"persistentVolumeClaim": "data", "mountPath": "/srv/idx"}},
    },
}


def env_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    engine = RAGEngine.from_manifest(
        {"metadata": {"name": "rag", "namespace": "team", "uid": "u"}, "spec": spec}
    )
    deployment = ragengine_deployment(engine, image="img")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env: list[dict[str, Any]] = container["env"]
    return env


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_variable_is_a_service_setting_with_the_same_value(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(SPECS[case])
    fields = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
    unread = [var["name"] for var in env if var["name"] not in fields]
    assert unread == [], f"the service would silently ignore {unread}"
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for var in env:
        monkeypatch.setenv(var["name"], var.get("value", f"secret-from-{var['name']}"))
    settings = Settings()
    for var in env:
        value = getattr(settings, fields[var["name"]])
        if "valueFrom" in var:
            assert value.get_secret_value() == f"secret-from-{var['name']}"
        elif isinstance(value, bool):
            assert var["value"] == ("true" if value else "false")
        else:
            assert var["value"] == str(value)


def test_remote_embedding_really_switches_the_service_to_remote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in env_of(SPECS["remote-everything-with-secrets-and-pvc"]):
        monkeypatch.setenv(var["name"], var.get("value", "token"))
    settings = Settings()
    assert settings.embedding_source == "remote"
    assert settings.embedding_url == "http://embed.team.svc/v1/embeddings"
    assert settings.persist_dir == "/srv/idx/rag"
    assert settings.allow_private_urls is True
