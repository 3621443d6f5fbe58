"""Pure planning: what a Workspace resolves to (preset, runtime, node count, plans).

Shared by the reconciler (with what it read from the cluster) and ``kaito render`` (with
what the manifest file holds). No I/O here.
"""

from __future__ import annotations

from typing import Any

from kaito_operator.builders.common import config_hash
from kaito_operator.builders.inference import InferencePlan
from kaito_operator.builders.tuning import TuningPlan
from kaito_operator.errors import InvalidSpecError
from kaito_sdk import labels
from kaito_sdk.api import Workspace
from kaito_sdk.contracts.tuning import RESULTS_DIR
from kaito_sdk.estimator import EstimateError, estimate_nodes
from kaito_sdk.inference_config import InferenceConfigError, parse_inference_config
from kaito_sdk.presets import Preset, UnknownPresetError, resolve_preset
from kaito_sdk.skus import GpuSku
from kaito_sdk.tuning_config import TuningConfigError, parse_training_config

__all__ = [
    "inference_plan",
    "max_model_len",
    "needs_gpu",
    "node_count",
    "preset_of",
    "runtime_of",
    "tuning_plan",
]


def preset_of(ws: Workspace) -> Preset | None:
    """The resolved preset of an inference or tuning Workspace (None for a template)."""
    spec = ws.tuning.preset if ws.tuning is not None else None
    if ws.inference is not None:
        spec = ws.inference.preset
    if spec is None:
        return None
    try:
        return resolve_preset(spec.name)
    except UnknownPresetError as exc:
        raise InvalidSpecError("preset.name", str(exc)) from None


def runtime_of(ws: Workspace, preset: Preset | None) -> str:
    """``kaito.sh/runtime`` if set, else the preset's default runtime, else vLLM."""
    annotations = ws.metadata.annotations or {}
    if labels.ANNOTATION_RUNTIME in annotations:
        return annotations[labels.ANNOTATION_RUNTIME]
    return str(preset.default_runtime) if preset is not None else labels.RUNTIME_VLLM


def needs_gpu(ws: Workspace, preset: Preset | None) -> bool:
    """GPU presets need GPU nodes; a template does when an instance type is given."""
    if preset is None:
        return bool(ws.resource.instance_type)
    return not preset.is_cpu


def max_model_len(config_text: str | None) -> int | None:
    """``vllm.max-model-len`` of an ``inference_config.yaml`` text."""
    if not config_text:
        return None
    try:
        return parse_inference_config(config_text).max_model_len()
    except InferenceConfigError as exc:
        raise InvalidSpecError("inference.config", str(exc)) from None


def node_count(
    ws: Workspace, preset: Preset | None, *, sku: GpuSku | None, config_text: str | None
) -> int:
    """Nodes to provision: the estimator for vLLM on GPUs, ``resource.count`` otherwise."""
    if ws.tuning is not None or not needs_gpu(ws, preset):
        return 1
    count = ws.resource.count or 1
    vllm = runtime_of(ws, preset) == labels.RUNTIME_VLLM
    if preset is not None and vllm and sku is not None:
        try:
            return estimate_nodes(preset, sku, max_model_len=max_model_len(config_text)).node_count
        except EstimateError as exc:
            raise InvalidSpecError("resource.instanceType", str(exc)) from None
    return count


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model else None


def inference_plan(
    ws: Workspace,
    preset: Preset | None,
    *,
    image: str,
    target: int,
    sku: GpuSku | None,
    config_text: str | None,
) -> InferencePlan:
    """The StatefulSet plan; multi-node only for vLLM presets."""
    assert ws.inference is not None
    runtime = runtime_of(ws, preset)
    multi_node = target > 1 and runtime == labels.RUNTIME_VLLM and preset is not None
    gpu = needs_gpu(ws, preset)
    adapters = [_dump(a) for a in ws.inference.adapters or []]
    return InferencePlan(
        preset=preset,
        runtime=runtime,
        image=image,
        nodes=target if multi_node else 1,
        gpus_per_node=(sku.gpu_count if sku is not None else 1) if gpu else None,
        config_map=ws.inference.config,
        revision=config_hash(config_text, adapters, ws.inference.template, image),
    )


def tuning_plan(
    ws: Workspace,
    preset: Preset,
    *,
    image: str,
    config_map: str,
    config_text: str | None,
    sku: GpuSku | None,
) -> TuningPlan:
    """The Job plan; the config must parse and fit the method (``None``: not known here,
    as in ``kaito render`` without the ConfigMap; the default output directory is used)."""
    assert ws.tuning is not None
    output_dir = RESULTS_DIR
    if config_text is not None:
        try:
            config = parse_training_config(config_text, method=(ws.tuning.method or "").lower())
        except TuningConfigError as exc:
            raise InvalidSpecError("tuning.config", str(exc)) from None
        output_dir = config.training.resolved_output_dir
    gpus = None if preset.is_cpu else (sku.gpu_count if sku is not None else 1)
    return TuningPlan(
        preset=preset,
        image=image,
        config_map=config_map,
        output_dir=output_dir,
        gpus=gpus,
        revision=config_hash(_dump(ws.tuning), config_text, image, gpus),
    )
