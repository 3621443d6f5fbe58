"""``kaito_sdk.tools.oci`` against a real registry (Debian's docker-registry, distribution 2.8)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import oras.client
import pytest

from kaito_sdk.contracts.tuning import COMPLETION_MARKER
from kaito_sdk.tools.oci import (
    ANNOTATION_MODEL_NAME,
    OciError,
    RegistryCredentials,
    load_docker_credentials,
    pull_adapter,
    push_adapter,
    registry_host,
)
from kaito_tuning.__main__ import main

from .conftest import Registry


@pytest.fixture(scope="module")
def open_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """Plain HTTP, no credentials."""
    return registry_factory(auth=False)


@pytest.fixture(scope="module")
def auth_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """TLS (self-signed) with htpasswd credentials."""
    return registry_factory(auth=True)


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    """An adapter directory (the bytes are what matters to the registry)."""
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (directory / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
    (directory / "checkpoint-1").mkdir()  # not part of the artifact
    return directory


def _docker_config(path: Path, host: str, user: str, password: str, *, inline: bool) -> Path:
    if inline:
        entry = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    else:
        entry = {"username": user, "password": password}
    path.write_text(json.dumps({"auths": {host: entry}}))
    return path


def _same_files(a: Path, b: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_push_and_pull_without_credentials(
    open_registry: Registry, adapter: Path, tmp_path: Path
) -> None:
    ref = open_registry.ref("adapters/math", "v1")
    push_adapter(adapter, ref, model_name="math", insecure=True)

    manifest = httpx.get(
        f"http://{open_registry.host}/v2/adapters/math/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    assert manifest["annotations"][ANNOTATION_MODEL_NAME] == "math"
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["annotations"]["org.opencontainers.image.title"] == "data"
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    dest = tmp_path / "pulled"
    assert pull_adapter(ref, dest, insecure=True) == "math"
    _same_files(adapter, dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


@pytest.mark.parametrize("inline", [True, False], ids=["auth", "username-password"])
def test_push_and_pull_with_credentials_over_tls(
    auth_registry: Registry, adapter: Path, tmp_path: Path, inline: bool
) -> None:
    assert auth_registry.username is not None
    assert auth_registry.password is not None
    config = _docker_config(
        tmp_path / "config.json",
        auth_registry.host,
        auth_registry.username,
        auth_registry.password,
        inline=inline,
    )
    ref = auth_registry.ref("team/adapter", "1.0")
    push_adapter(
        adapter, ref, model_name="team", docker_config=config, ca_bundle=auth_registry.ca_bundle
    )
    dest = tmp_path / "pulled"
    name = pull_adapter(ref, dest, docker_config=config, ca_bundle=auth_registry.ca_bundle)
    assert name == "team"
    _same_files(adapter, dest)


def test_registry_refuses_missing_and_wrong_credentials(
    auth_registry: Registry, adapter: Path, tmp_path: Path
) -> None:
    ref = auth_registry.ref("team/secret", "1")
    with pytest.raises(OciError) as caught:
        push_adapter(adapter, ref, model_name="x", ca_bundle=auth_registry.ca_bundle)
    assert str(caught.value) == (
        f"registry {auth_registry.host} requires credentials and none were given for it"
    )
    assert auth_registry.username is not None
    wrong = _docker_config(
        tmp_path / "wrong.json", auth_registry.host, auth_registry.username, "nope", inline=True
    )
    with pytest.raises(OciError) as caught:
        push_adapter(
            adapter, ref, model_name="x", docker_config=wrong, ca_bundle=auth_registry.ca_bundle
        )
    assert str(caught.value).startswith(f"push to {ref} failed:")
    assert "nope" not in str(caught.value)
    with pytest.raises(OciError, match="requires credentials"):
        pull_adapter(ref, tmp_path / "x", ca_bundle=auth_registry.ca_bundle)


def test_tls_is_verified(auth_registry: Registry, adapter: Path) -> None:
    with pytest.raises(OciError, match=rf"registry {auth_registry.host}: unreachable: SSLError"):
        push_adapter(adapter, auth_registry.ref("a/b"), model_name="b")


def test_pull_of_a_non_adapter_artifact(open_registry: Registry, tmp_path: Path) -> None:
    other = tmp_path / "data"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    client = oras.client.OrasClient(insecure=True)
    ref = open_registry.ref("not/adapter")
    client.push(target=ref, files=[str(other)], disable_path_validation=True, quiet=True)
    with pytest.raises(OciError) as caught:
        pull_adapter(ref, tmp_path / "dest", insecure=True)
    assert str(caught.value) == (
        f"{ref} is not a KAITO adapter artifact: /data lacks adapter_model.safetensors"
    )
    assert not (tmp_path / "dest").exists()


def test_pull_of_a_missing_reference(open_registry: Registry, tmp_path: Path) -> None:
    ref = open_registry.ref("nothing/here")
    with pytest.raises(OciError, match=rf"^pull of {ref} failed:"):
        pull_adapter(ref, tmp_path / "dest", insecure=True)


def test_push_needs_adapter_files(open_registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(OciError) as caught:
        push_adapter(tmp_path, open_registry.ref("a/b"), model_name="b", insecure=True)
    assert str(caught.value) == (
        f"{tmp_path} is not an adapter: missing adapter_config.json, adapter_model.safetensors"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("{}", "missing the 'auths' mapping"),
        ('{"auths": {"r.io": 5}}', "auths['r.io'] must be a mapping"),
        (
            '{"auths": {"r.io": {}}}',
            "auths['r.io'] has neither 'auth' nor 'username' and 'password'",
        ),
        (
            '{"auths": {"r.io": {"auth": "###"}}}',
            "auths['r.io'].auth is not base64 of 'user:password'",
        ),
        (
            '{"auths": {"r.io": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
            "auths['r.io'].auth is not base64 of 'user:password'",
        ),
    ],
)
def test_docker_config_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(OciError) as caught:
        load_docker_credentials(path, "r.io")
    assert str(caught.value) == f"docker config {path}: {message}"


def test_docker_config_lookup(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    token = base64.b64encode(b"bob:pa:ss").decode()
    path.write_text(json.dumps({"auths": {"https://r.io": {"auth": token}}}))
    found = load_docker_credentials(path, "r.io")
    assert found == RegistryCredentials("bob", "pa:ss")
    assert "pa:ss" not in repr(found)
    assert load_docker_credentials(path, "other.io") is None
    with pytest.raises(OciError, match="cannot read: FileNotFoundError"):
        load_docker_credentials(tmp_path / "missing.json", "r.io")


@pytest.mark.parametrize("ref", ["adapter:v1", "library/adapter:v1", "/x:1"])
def test_reference_needs_a_registry_host(ref: str) -> None:
    with pytest.raises(OciError, match="must start with a registry host"):
        registry_host(ref)
    assert registry_host("localhost:5000/a:b") == "localhost:5000"


def test_run_trains_and_pushes_the_adapter(
    open_registry: Registry, tiny_model: Path, chat_data: Path, tmp_path: Path
) -> None:
    """``kaito-tuning run --push``: the trained adapter lands in the registry."""
    config = tmp_path / "training_config.yaml"
    config.write_text(
        "training_config:\n"
        "  TrainingArguments: {max_steps: 2, per_device_train_batch_size: 2}\n"
        "  DatasetConfig: {train_test_split: 1}\n"
    )
    out, ref = tmp_path / "out", open_registry.ref("tuned/chat-adapter", "v2")
    argv = ["run", "--model", str(tiny_model), "--config", str(config), "--input", str(chat_data)]
    argv += ["--output", str(out), "--push", ref, "--insecure-registry", "--metrics-port", "0"]
    assert main(argv) == 0
    assert (out / COMPLETION_MARKER).is_file()
    dest = tmp_path / "pulled"
    assert pull_adapter(ref, dest, insecure=True) == "chat-adapter"
    _same_files(out, dest)
