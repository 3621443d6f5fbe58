"""The tuning Job of a Workspace (reference §5.3), launched through the SDK's tuning contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaito_operator.builders.common import (
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    TERMINATION_MESSAGE_POLICY,
    harden,
    node_affinity,
    object_meta,
    shm_volume,
    workspace_labels,
)
from kaito_sdk import labels
from kaito_sdk.api import Workspace
from kaito_sdk.contracts import tuning as contract
from kaito_sdk.presets import Preset

__all__ = ["TuningPlan", "tuning_config_map", "tuning_config_name", "tuning_job"]


@dataclass(frozen=True)
class TuningPlan:
    """What the reconciler resolved for a tuning Workspace."""

    preset: Preset
    """The base model."""
    image: str
    """The ``kaito-tuning`` image."""
    config_map: str
    """ConfigMap (in the Workspace's namespace) holding ``training_config.yaml``."""
    output_dir: str
    """``TrainingArguments.output_dir`` of that config."""
    gpus: int | None
    """GPUs of one node of the instance type; None for CPU presets."""
    revision: str
    """Hash of everything the Job is made from; a new value replaces the Job."""


def tuning_config_name(ws: Workspace) -> str:
    """The ConfigMap a Workspace without ``tuning.config`` gets (copied from the template)."""
    return f"{ws.metadata.name}-training-config"


def tuning_config_map(ws: Workspace, text: str) -> dict[str, Any]:
    """The Workspace's own copy of the default training config."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(ws, tuning_config_name(ws)),
        "data": {contract.CONFIG_FILE_NAME: text},
    }


def _input(ws: Workspace, image: str) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Init containers, the data volume and pull secrets for ``tuning.input``."""
    assert ws.tuning is not None
    assert ws.tuning.input is not None
    source = ws.tuning.input
    mount = {"name": "data", "mountPath": contract.DATA_DIR}
    if source.volume_source is not None:
        return [], {"name": "data", **source.volume_source}, []
    volume = {"name": "data", "emptyDir": {}}
    if source.urls:
        fetch = {
            "name": "data-downloader",
            "image": image,
            "command": contract.fetch_argv(source.urls),
            "volumeMounts": [mount],
        }
        return [fetch], volume, []
    puller = {
        "name": "data-puller",
        "image": source.image,
        "command": ["sh", "-c", f"cp -r /data/. {contract.DATA_DIR}/"],
        "volumeMounts": [mount],
    }
    return [puller], volume, list(source.image_pull_secrets or [])


def _resources(plan: TuningPlan) -> dict[str, Any]:
    if plan.gpus is None:
        cpu = plan.preset.cpu_resources
        requests = {"cpu": cpu.cpu, "memory": cpu.memory} if cpu is not None else {}
        return {"requests": requests}
    gpus = {GPU_RESOURCE: str(plan.gpus)}
    return {"requests": dict(gpus), "limits": dict(gpus)}


def tuning_job(ws: Workspace, plan: TuningPlan) -> dict[str, Any]:
    """The ``batch/v1`` Job ``<ws>`` that fine-tunes the preset and stores the adapter."""
    tuning = ws.tuning
    assert tuning is not None
    assert tuning.method is not None
    assert tuning.output is not None
    init_containers, data_volume, pull_secrets = _input(ws, plan.image)
    shm, shm_mount = shm_volume()
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": plan.config_map}},
        data_volume,
        shm,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": contract.DATA_DIR},
        {"name": "results", "mountPath": plan.output_dir},
        shm_mount,
    ]
    output = tuning.output
    if output.volume_source is not None:
        volumes.append({"name": "results", **output.volume_source})
    else:
        volumes.append({"name": "results", "emptyDir": {}})
    if output.image is not None:
        secret = {"secretName": output.image_push_secret}
        volumes.append({"name": "docker-config", "secret": secret})
        mounts.append(
            {"name": "docker-config", "mountPath": contract.DOCKER_CONFIG_DIR, "readOnly": True}
        )
    container = {
        "name": "tuning",
        "image": plan.image,
        "command": contract.run_argv(
            method=tuning.method.lower(),  # type: ignore[arg-type]  # validated: lora or qlora, any case
            preset=plan.preset.name,
            output_dir=plan.output_dir,
            push_image=output.image,
        ),
        "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
        "ports": [{"name": "metrics", "containerPort": contract.METRICS_PORT}],
        "resources": _resources(plan),
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": init_containers,
        "containers": [container],
        "volumes": volumes,
    }
    harden(pod_spec, [container, *(c for c in init_containers if c["image"] == plan.image)])
    if not init_containers:
        del pod_spec["initContainers"]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    affinity = node_affinity(ws.resource.label_selector)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if plan.gpus is not None:
        pod_spec["tolerations"] = [dict(t) for t in GPU_TOLERATIONS]
    revision = {labels.ANNOTATION_WORKSPACE_HASH: plan.revision}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(ws, str(ws.metadata.name), annotations=revision),
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": workspace_labels(ws), "annotations": dict(revision)},
                "spec": pod_spec,
            },
        },
    }
