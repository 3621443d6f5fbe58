"""The inference container's contract glue: argv, ports, env, config and adapter mounts.

Everything the server reads (argv, port, paths) comes from ``kaito_sdk.contracts.inference``,
the one definition the ``kaito-inference`` service parses too.
"""

from __future__ import annotations

import shlex
from typing import Any

from kaito_operator.builders.services import RAY_PORT, headless_service_name
from kaito_sdk import labels
from kaito_sdk.api import AdapterSpec, Workspace
from kaito_sdk.contracts import inference as contract
from kaito_sdk.presets import Preset

__all__ = ["CONFIG_DIR", "adapters", "env", "ports", "serve_argv"]

#: Where the ``inference.config`` ConfigMap is mounted.
CONFIG_DIR = contract.CONFIG_MOUNT
_HF_TOKEN_KEY = "HF_TOKEN"  # noqa: S105 (a key name, not a secret)


def ports(nodes: int) -> list[dict[str, Any]]:
    """Container ports: ``http`` always; Ray's port on multi-node pods."""
    result: list[dict[str, Any]] = [
        {"name": contract.PORT_NAME, "containerPort": contract.DEFAULT_PORT}
    ]
    if nodes > 1:
        result.append({"name": "ray", "containerPort": RAY_PORT})
    return result


def env(ws: Workspace, nodes: int) -> list[dict[str, Any]]:
    """``HF_TOKEN`` from the model access Secret; pod identity and leader for multi-node."""
    result: list[dict[str, Any]] = []
    preset = ws.inference.preset if ws.inference is not None else None
    secret = preset.preset_options.model_access_secret if preset and preset.preset_options else None
    if secret:
        ref = {"name": secret, "key": _HF_TOKEN_KEY}
        result.append({"name": _HF_TOKEN_KEY, "valueFrom": {"secretKeyRef": ref}})
    if nodes > 1:
        index = {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
        result.append({"name": "POD_INDEX", "valueFrom": index})
    return result


def adapters(
    specs: list[AdapterSpec],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Volumes, mounts, puller init containers and pull secrets for the LoRA adapters.

    A ``volumeSource`` adapter is mounted at ``<adapters dir>/<name>``; an image adapter
    is copied by an init container (running that image) from its ``/data`` into an
    emptyDir at the same place.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    pullers: list[dict[str, Any]] = []
    secrets: list[str] = []
    image_adapters = [a for a in specs if a.source is not None and a.source.image]
    if image_adapters:
        volumes.append({"name": "adapters", "emptyDir": {}})
        mounts.append({"name": "adapters", "mountPath": contract.ADAPTERS_MOUNT})
    for spec in specs:
        source = spec.source
        if source is None or not source.name:
            continue
        path = f"{contract.ADAPTERS_MOUNT}/{source.name}"
        quoted = shlex.quote(path)
        if source.volume_source is not None:
            volumes.append({"name": f"adapter-{source.name}", **source.volume_source})
            mounts.append({"name": f"adapter-{source.name}", "mountPath": path, "readOnly": True})
        elif source.image:
            pullers.append(
                {
                    "name": f"adapter-{source.name}",
                    "image": source.image,
                    "command": ["sh", "-c", f"mkdir -p {quoted} && cp -r /data/. {quoted}/"],
                    "volumeMounts": [{"name": "adapters", "mountPath": contract.ADAPTERS_MOUNT}],
                }
            )
            secrets += [s for s in source.image_pull_secrets or [] if s not in secrets]
    return volumes, mounts, pullers, secrets


def serve_argv(
    ws: Workspace,
    preset: Preset,
    *,
    runtime: str,
    nodes: int,
    config_map: str | None,
) -> list[str]:
    """The container command: ``kaito-inference serve`` per the SDK's launch contract.

    Multi-node (vLLM over Ray): pod 0 starts the Ray head and the server, which spreads
    the model over the nodes (pipeline parallel) and each node's GPUs (tensor parallel,
    derived from ``--kaito-instance-type``); the other pods join the head and wait.
    """
    annotations = ws.metadata.annotations or {}
    extra: list[str] = []
    mode = annotations.get(labels.ANNOTATION_PERFORMANCE_MODE)
    if runtime == labels.RUNTIME_VLLM and mode:
        extra += ["--performance-mode", mode]
    if nodes > 1:
        extra += ["--distributed-executor-backend", "ray"]
    launch = contract.InferenceLaunch(
        runtime=runtime,
        model=preset.name,
        kaito_config_file=contract.CONFIG_FILE if config_map else None,
        instance_type=ws.resource.instance_type,
        extra_args=tuple(extra),
    )
    argv = launch.to_argv()
    if nodes <= 1:
        return argv
    domain = f"{headless_service_name(ws)}.{ws.metadata.namespace}.svc.cluster.local"
    leader = f"{ws.metadata.name}-0.{domain}:{RAY_PORT}"
    script = (
        'if [ "$POD_INDEX" = "0" ]; then '
        f"ray start --head --port={RAY_PORT} && exec {shlex.join(argv)}; "
        f"else exec ray start --address={leader} --block; fi"
    )
    return ["/bin/sh", "-c", script]
