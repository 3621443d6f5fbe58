"""What the validating webhook checks: the SDK's rules plus the referenced ConfigMaps.

``review`` returns the list of problems (``field: rule``); an empty list admits the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_operator.kube import KubeClient
from kaito_sdk.api import Workspace, parse_manifest
from kaito_sdk.inference_config import CONFIG_KEY, InferenceConfigError, parse_inference_config
from kaito_sdk.presets import UnknownPresetError, resolve_preset
from kaito_sdk.tuning_config import CONFIG_FILE_NAME, TuningConfigError, parse_training_config
from kaito_sdk.validation import validate_manifest, validate_update

__all__ = ["review"]


async def _config_map_text(
    kube: KubeClient, namespace: str | None, name: str, key: str, field: str
) -> tuple[str | None, list[str]]:
    config_map = await kube.get("v1", "ConfigMap", name, namespace)
    if config_map is None:
        return None, [f"{field}: ConfigMap {name!r} does not exist in namespace {namespace!r}"]
    text = (config_map.get("data") or {}).get(key)
    if text is None:
        return None, [f"{field}: ConfigMap {name!r} has no key {key!r}"]
    return str(text), []


async def _check_inference_config(kube: KubeClient, ws: Workspace) -> list[str]:
    assert ws.inference is not None
    name = ws.inference.config
    if not name:
        return []
    text, problems = await _config_map_text(
        kube, ws.metadata.namespace, name, CONFIG_KEY, "inference.config"
    )
    if text is None:
        return problems
    try:
        config = parse_inference_config(text)
    except InferenceConfigError as exc:
        return [
            f"inference.config ({name}/{CONFIG_KEY}): {key}: {message}"
            for key, message in exc.errors
        ]
    limit = None
    if ws.inference.preset is not None:
        try:
            limit = resolve_preset(ws.inference.preset.name).context_length
        except UnknownPresetError:
            limit = None
    max_len = config.max_model_len()
    if limit is not None and max_len is not None and max_len > limit:
        rule = f"vllm.max-model-len {max_len} exceeds the model's context of {limit} tokens"
        return [f"inference.config ({name}): {rule}"]
    return []


async def _check_tuning_config(kube: KubeClient, ws: Workspace) -> list[str]:
    assert ws.tuning is not None
    name = ws.tuning.config
    if not name:
        return []
    text, problems = await _config_map_text(
        kube, ws.metadata.namespace, name, CONFIG_FILE_NAME, "tuning.config"
    )
    if text is None:
        return problems
    try:
        parse_training_config(text, method=(ws.tuning.method or "").lower() or None)
    except TuningConfigError as exc:
        return [f"tuning.config ({name}/{CONFIG_FILE_NAME}): {exc}"]
    return []


async def review(
    kube: KubeClient, body: Mapping[str, Any], old: Mapping[str, Any] | None
) -> list[str]:
    """Every reason to refuse ``body`` (an update of ``old`` when given)."""
    manifest = _strip_server_fields(body)
    errors = [str(error) for error in validate_manifest(manifest)]
    if errors:
        return errors
    obj = parse_manifest(manifest)
    if old is not None:
        previous = parse_manifest(_strip_server_fields(old))
        errors = [str(error) for error in validate_update(previous, obj)]
        if errors:
            return errors
    if isinstance(obj, Workspace):
        if obj.inference is not None:
            return await _check_inference_config(kube, obj)
        if obj.tuning is not None:
            return await _check_tuning_config(kube, obj)
    return []


def _strip_server_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest without ``status`` (admission judges the desired state only)."""
    return {key: value for key, value in body.items() if key != "status"}
