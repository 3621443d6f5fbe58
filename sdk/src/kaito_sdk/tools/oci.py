"""Push and pull LoRA adapters as OCI artifacts in KAITO's layout.

An adapter artifact has one layer: the directory ``data/`` (a gzipped tar, unpacked on
pull) holding ``adapter_config.json`` and ``adapter_model.safetensors``; the manifest
carries the annotation ``sh.kaito.model.name`` with the adapter's name. The tuning job
pushes with :func:`push_adapter`; the inference service pulls with :func:`pull_adapter`.

Credentials come from a docker config file (the ``imagePushSecret`` /
``imagePullSecrets``, a ``kubernetes.io/dockerconfigjson`` Secret): the entry for the
registry's host, as ``auth`` (base64 ``user:password``) or ``username``/``password``.
The registry's challenge decides the scheme: HTTP Basic, or a bearer token obtained with
those credentials. Secrets never appear in errors or logs.

Needs the optional extra ``kaito-sdk[oci]`` (the ``oras`` package, imported lazily).
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kaito_sdk.contracts.tuning import ADAPTER_FILES

__all__ = [
    "ANNOTATION_MODEL_NAME",
    "ARTIFACT_DATA_DIR",
    "OciError",
    "RegistryCredentials",
    "load_docker_credentials",
    "pull_adapter",
    "push_adapter",
    "registry_host",
]

#: Manifest annotation naming the adapter (KAITO's pusher sets it).
ANNOTATION_MODEL_NAME: Final = "sh.kaito.model.name"
#: Directory inside the artifact that holds the adapter files.
ARTIFACT_DATA_DIR: Final = "data"


class OciError(RuntimeError):
    """A push or pull that failed: bad reference, credentials, registry answer, layout."""


@dataclass(frozen=True)
class RegistryCredentials:
    """User name and password for one registry (the password is never shown)."""

    username: str
    password: str = field(repr=False)


def registry_host(reference: str) -> str:
    """The registry part (``host[:port]``) of an image reference such as ``host/repo:tag``."""
    head, sep, _ = reference.partition("/")
    if not sep or not head or not ("." in head or ":" in head or head == "localhost"):
        raise OciError(
            f"reference {reference!r} must start with a registry host (host[:port]/repo:tag)"
        )
    return head


def load_docker_credentials(config_path: Path, registry: str) -> RegistryCredentials | None:
    """Credentials for ``registry`` from a docker config file; ``None`` when it has none."""
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise OciError(
            f"docker config {config_path}: cannot read: {exc.__class__.__name__}"
        ) from None
    except json.JSONDecodeError:
        raise OciError(f"docker config {config_path}: not valid JSON") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise OciError(f"docker config {config_path}: missing the 'auths' mapping")
    for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v2/"):
        entry = auths.get(key)
        if entry is not None:
            return _entry_credentials(entry, config_path, key)
    return None


def _entry_credentials(entry: Any, config_path: Path, key: str) -> RegistryCredentials:
    where = f"docker config {config_path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise OciError(f"{where} must be a mapping")
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return RegistryCredentials(username, password)
    encoded = entry.get("auth")
    if not isinstance(encoded, str):
        raise OciError(f"{where} has neither 'auth' nor 'username' and 'password'")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OciError(f"{where}.auth is not base64 of 'user:password'") from None
    user, sep, secret = decoded.partition(":")
    if not sep or not user:
        raise OciError(f"{where}.auth is not base64 of 'user:password'")
    return RegistryCredentials(user, secret)


def _client(
    reference: str,
    credentials: RegistryCredentials | None,
    *,
    insecure: bool,
    ca_bundle: str | None,
) -> Any:
    """An ``oras`` client whose auth backend matches the registry's challenge."""
    import oras.client  # noqa: PLC0415 - optional extra, imported only when used
    import requests  # noqa: PLC0415

    host = registry_host(reference)
    verify: bool | str = ca_bundle if ca_bundle is not None else True
    scheme = "http" if insecure else "https"
    try:
        probe = requests.get(f"{scheme}://{host}/v2/", timeout=30, verify=verify)
    except requests.RequestException as exc:
        raise OciError(f"registry {host}: unreachable: {exc.__class__.__name__}") from None
    challenge = probe.headers.get("Www-Authenticate", "")
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    if probe.status_code == 401 and credentials is None:
        raise OciError(f"registry {host} requires credentials and none were given for it")
    client = oras.client.OrasClient(
        hostname=host, insecure=insecure, tls_verify=verify, auth_backend=backend
    )
    if credentials is not None:
        client.auth.set_basic_auth(credentials.username, credentials.password)
    return client


def _resolve_credentials(reference: str, docker_config: Path | None) -> RegistryCredentials | None:
    if docker_config is None:
        return None
    return load_docker_credentials(docker_config, registry_host(reference))


def push_adapter(
    adapter_dir: Path,
    reference: str,
    *,
    model_name: str,
    docker_config: Path | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
) -> None:
    """Push the adapter in ``adapter_dir`` to ``reference`` (``host/repo:tag``).

    ``insecure`` talks plain HTTP; ``ca_bundle`` trusts a private CA for HTTPS.
    """
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise OciError(f"{adapter_dir} is not an adapter: missing {', '.join(missing)}")
    credentials = _resolve_credentials(reference, docker_config)
    client = _client(reference, credentials, insecure=insecure, ca_bundle=ca_bundle)
    with tempfile.TemporaryDirectory(prefix="kaito-adapter-") as staging:
        data_dir = Path(staging) / ARTIFACT_DATA_DIR
        data_dir.mkdir()
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / name, data_dir / name)
        try:
            client.push(
                target=reference,
                files=[str(data_dir)],
                manifest_annotations={ANNOTATION_MODEL_NAME: model_name},
                disable_path_validation=True,
                quiet=True,
            )
        except Exception as exc:  # oras raises plain ValueError/HTTPError/Exception
            raise OciError(f"push to {reference} failed: {_describe(exc)}") from None


def pull_adapter(
    reference: str,
    dest: Path,
    *,
    docker_config: Path | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
) -> str | None:
    """Pull the adapter at ``reference`` into ``dest``; returns its model-name annotation."""
    credentials = _resolve_credentials(reference, docker_config)
    client = _client(reference, credentials, insecure=insecure, ca_bundle=ca_bundle)
    with tempfile.TemporaryDirectory(prefix="kaito-adapter-") as staging:
        try:
            manifest = client.get_manifest(reference)
            client.pull(target=reference, outdir=staging)
        except Exception as exc:  # oras raises plain ValueError/HTTPError/Exception
            raise OciError(f"pull of {reference} failed: {_describe(exc)}") from None
        data_dir = Path(staging) / ARTIFACT_DATA_DIR
        missing = [
            name
            for name in ADAPTER_FILES
            if not (data_dir / name).is_file() or (data_dir / name).is_symlink()
        ]
        if missing:
            raise OciError(
                f"{reference} is not a KAITO adapter artifact: "
                f"/{ARTIFACT_DATA_DIR} lacks {', '.join(missing)}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(data_dir / name, dest / name)
    annotations = manifest.get("annotations") or {}
    model_name = annotations.get(ANNOTATION_MODEL_NAME)
    return model_name if isinstance(model_name, str) else None


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return f"HTTP {status}: {text}" if status is not None else text
