"""The inference StatefulSet of a Workspace (reference §7.2), launched through the SDK's
inference contract (argv, port, mount paths)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kaito_operator.builders import serving
from kaito_operator.builders.common import (
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    NEWEST,
    TERMINATION_MESSAGE_POLICY,
    KubeVersion,
    harden,
    node_affinity,
    object_meta,
    selector_labels,
    shm_volume,
)
from kaito_operator.builders.services import headless_service_name
from kaito_sdk import labels
from kaito_sdk.api import Workspace
from kaito_sdk.contracts import inference as contract
from kaito_sdk.presets import Preset

__all__ = ["PVC_RETENTION_SINCE", "InferencePlan", "inference_statefulset", "probes"]

_PROBE_PERIOD_S = 10
#: The first version with ``StatefulSet.spec.persistentVolumeClaimRetentionPolicy``.
PVC_RETENTION_SINCE = KubeVersion(1, 23)


@dataclass(frozen=True)
class InferencePlan:
    """What the reconciler resolved for an inference Workspace."""

    preset: Preset | None
    """The model (None when the Workspace brings its own pod template)."""
    runtime: str
    """``vllm`` or ``transformers``."""
    image: str
    """The ``kaito-inference`` image."""
    nodes: int
    """Pods (one per node); above 1 only for multi-node vLLM."""
    gpus_per_node: int | None
    """GPUs each pod requests; None for CPU presets."""
    config_map: str | None
    """The ``inference.config`` ConfigMap, if any."""
    revision: str
    """Hash of config, adapters and template: a new value rolls the pods."""


def probes(startup_timeout_s: int) -> dict[str, dict[str, Any]]:
    """``/health`` startup (sized to the startup budget), readiness and liveness probes."""

    def probe(failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": contract.HEALTH_PATH, "port": contract.PORT_NAME},
            "periodSeconds": _PROBE_PERIOD_S,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(max(1, -(-startup_timeout_s // _PROBE_PERIOD_S))),
        "readinessProbe": probe(3),
        "livenessProbe": probe(3),
    }


def _placement(ws: Workspace, pod_spec: dict[str, Any], *, gpu: bool, spread: bool) -> None:
    affinity = node_affinity(ws.resource.label_selector) or {}
    if spread:
        term = {
            "labelSelector": {"matchLabels": selector_labels(ws)},
            "topologyKey": "kubernetes.io/hostname",
        }
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    if affinity:
        pod_spec["affinity"] = {**pod_spec.get("affinity", {}), **affinity}
    if gpu:
        existing = list(pod_spec.get("tolerations") or [])
        pod_spec["tolerations"] = existing + [dict(t) for t in GPU_TOLERATIONS if t not in existing]


def _preset_pod(ws: Workspace, plan: InferencePlan) -> dict[str, Any]:
    assert plan.preset is not None
    assert ws.inference is not None
    shm, shm_mount = shm_volume()
    volumes: list[dict[str, Any]] = [shm]
    mounts: list[dict[str, Any]] = [shm_mount]
    init_containers: list[dict[str, Any]] = []
    if plan.config_map:
        volumes.append({"name": "config", "configMap": {"name": plan.config_map}})
        mounts.append({"name": "config", "mountPath": serving.CONFIG_DIR, "readOnly": True})
    adapter_volumes, adapter_mounts, pullers, pull_secrets = serving.adapters(
        ws.inference.adapters or []
    )
    volumes += adapter_volumes
    mounts += adapter_mounts
    init_containers += pullers
    env: list[dict[str, Any]] = serving.env(ws, plan.nodes)
    if plan.gpus_per_node is not None:
        gpus = {GPU_RESOURCE: str(plan.gpus_per_node)}
        resources: dict[str, Any] = {"requests": dict(gpus), "limits": dict(gpus)}
    elif plan.preset.cpu_resources is not None:
        cpu = plan.preset.cpu_resources
        resources = {"requests": {"cpu": cpu.cpu, "memory": cpu.memory}}
    else:
        resources = {}
    container = {
        "name": str(ws.metadata.name),
        "image": plan.image,
        "command": serving.serve_argv(
            ws,
            plan.preset,
            runtime=plan.runtime,
            nodes=plan.nodes,
            config_map=plan.config_map,
        ),
        "ports": serving.ports(plan.nodes),
        "env": env,
        "resources": resources,
        **probes(plan.preset.startup_timeout_seconds),
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes}
    harden(pod, [container])
    if init_containers:
        pod["initContainers"] = init_containers
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    return {"spec": pod}


def _template_pod(ws: Workspace) -> dict[str, Any]:
    assert ws.inference is not None
    assert ws.inference.template is not None
    template = copy.deepcopy(ws.inference.template)
    template.setdefault("spec", {})
    return template


def inference_statefulset(
    ws: Workspace, plan: InferencePlan, *, server: KubeVersion = NEWEST
) -> dict[str, Any]:
    """The StatefulSet ``<ws>``: the preset's server (or the user's template) on its nodes.

    ``persistentVolumeClaimRetentionPolicy`` (Kubernetes 1.23+) is set only when
    ``server`` has it.
    """
    assert ws.inference is not None
    template = _preset_pod(ws, plan) if plan.preset is not None else _template_pod(ws)
    gpu = plan.gpus_per_node is not None or (
        plan.preset is None and bool(ws.resource.instance_type)
    )
    _placement(ws, template["spec"], gpu=gpu, spread=plan.nodes > 1)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **selector_labels(ws)}
    created_by = (ws.metadata.labels or {}).get(labels.LABEL_INFERENCESET_CREATED_BY)
    if created_by:  # the InferenceSet's Service selects its members' pods by this label
        meta["labels"][labels.LABEL_INFERENCESET_CREATED_BY] = created_by
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        labels.ANNOTATION_WORKSPACE_HASH: plan.revision,
    }
    annotations = {labels.ANNOTATION_RUNTIME: plan.runtime} if plan.preset is not None else {}
    spec: dict[str, Any] = {
        "replicas": plan.nodes,
        "serviceName": headless_service_name(ws),
        "podManagementPolicy": "Parallel" if plan.nodes > 1 else "OrderedReady",
        "selector": {"matchLabels": selector_labels(ws)},
        "template": template,
    }
    if server >= PVC_RETENTION_SINCE:
        spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(ws, str(ws.metadata.name), annotations=annotations or None),
        "spec": spec,
    }
