"""How many GPU nodes a preset needs on an instance type, and how vLLM splits it over them.

This is KAITO's node estimator (``pkg/workspace/estimator/nodesestimator``, documented in
``website/docs/memory-estimator.md``), with its parallelism rule from
``configureParallelism``. All sizes are in GiB::

    model_size  = weights * 1.02                     # 2% for buffers loaded with them
    usable      = gpu_memory * 0.84                  # vLLM's --gpu-memory-utilization
    reserve     = 2.3 + context * bytes_per_token / 2**30 / gpus_per_node
    room        = (usable - reserve) / 1.05          # 5% fragmentation margin
    min_gpus    = floor(model_size / room) + 1
    nodes       = ceil(min_gpus / gpus_per_node)

``context`` is the user's ``max-model-len`` or 2048; ``bytes_per_token`` is the KV-cache
cost of one token (``2 * layers * kv_heads * head_dim * 2``). The 2.3 GiB is CUDA
context, activations and the sampler. A node's GPUs are always all used:

* one node whose weights fill less than half of one GPU: data parallel over its GPUs
  (``tensor_parallel_size = 1``, ``data_parallel_size = gpus_per_node``);
* otherwise ``tensor_parallel_size = gpus_per_node`` and
  ``pipeline_parallel_size = nodes`` (more than one node runs vLLM over Ray).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from kaito_sdk.presets import Preset, resolve_preset
from kaito_sdk.skus import GpuSku, find_sku

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "EstimateError",
    "NodeEstimate",
    "estimate_nodes",
]

DEFAULT_CONTEXT_LENGTH = 2048
"""Context length (tokens) the KV reserve assumes when the user sets no max-model-len."""
_GIB = 1024**3
_WEIGHT_OVERHEAD = 1.02
_GPU_MEMORY_UTILIZATION = 0.84
_FIXED_RESERVE_GIB = 2.3
_FRAGMENTATION = 1.05
_DATA_PARALLEL_BELOW = 0.5


class EstimateError(ValueError):
    """The preset cannot be placed on the instance type (with the numbers that say why)."""


class NodeEstimate(BaseModel):
    """The node count and parallel layout for one preset on one instance type."""

    model_config = ConfigDict(frozen=True)

    preset: str
    """Preset name."""
    instance_type: str
    """The SKU, as the catalog spells it."""
    gpu_model: str
    """GPU model of the SKU."""
    gpus_per_node: int
    """GPUs on one node."""
    node_count: int
    """Nodes to provision."""
    min_gpus: int
    """The fewest GPUs that hold weights and KV reserve."""
    total_gpus: int
    """GPUs in use over all nodes (``node_count * gpus_per_node``)."""
    tensor_parallel_size: int
    """vLLM ``--tensor-parallel-size``."""
    pipeline_parallel_size: int
    """vLLM ``--pipeline-parallel-size`` (the node count)."""
    data_parallel_size: int
    """vLLM ``--data-parallel-size`` (above 1 only for small models on multi-GPU nodes)."""
    context_length: int
    """Tokens of context the KV reserve was sized for."""
    model_size_gib: float
    """Weights plus 2%."""
    usable_per_gpu_gib: float
    """GPU memory vLLM may use on one GPU."""
    reserve_per_gpu_gib: float
    """Fixed reserve plus this GPU's share of the KV cache."""
    room_per_gpu_gib: float
    """Memory left for weights on one GPU."""
    explanation: tuple[str, ...]
    """The arithmetic, one step a line."""
    warnings: tuple[str, ...] = ()
    """Things that may still stop vLLM (attention heads not divisible by the TP size)."""


def _resolve(preset: Preset | str, instance_type: GpuSku | str) -> tuple[Preset, GpuSku]:
    model = resolve_preset(preset) if isinstance(preset, str) else preset
    if isinstance(instance_type, GpuSku):
        return model, instance_type
    sku = find_sku(instance_type)
    if sku is None:
        msg = f"instance type {instance_type!r} is not in the GPU SKU catalog (see `kaito skus`)"
        raise EstimateError(msg)
    return model, sku


def estimate_nodes(
    preset: Preset | str,
    instance_type: GpuSku | str,
    *,
    max_model_len: int | None = None,
) -> NodeEstimate:
    """Nodes of ``instance_type`` needed to serve ``preset`` with vLLM, and the TP/PP layout.

    ``preset`` is a :class:`Preset` or any name :func:`resolve_preset` accepts;
    ``instance_type`` a :class:`GpuSku` or a SKU name. Raises :class:`EstimateError` when
    the preset lacks the metadata (best-effort or CPU presets), ``max_model_len`` exceeds
    the model's context, or the KV reserve alone fills a GPU; ``UnknownPresetError`` for
    an unknown preset name.
    """
    model, sku = _resolve(preset, instance_type)
    if model.is_cpu:
        raise EstimateError(f"{model.name} is a CPU preset: it needs no GPU nodes")
    weights, bytes_per_token = model.weight_size_gib, model.bytes_per_token
    if weights is None or bytes_per_token is None:
        msg = (
            f"{model.hf_id} is not in the preset catalog, so its weight size and KV-cache "
            "size are unknown; pick a catalog preset or set resource.count yourself"
        )
        raise EstimateError(msg)
    context = DEFAULT_CONTEXT_LENGTH if max_model_len is None else max_model_len
    if context <= 0:
        raise EstimateError(f"max-model-len must be a positive number of tokens, got {context}")
    if model.context_length is not None and context > model.context_length:
        msg = (
            f"max-model-len {context} exceeds the context limit of {model.name} "
            f"({model.context_length} tokens)"
        )
        raise EstimateError(msg)

    gpus_per_node, gpu_memory = sku.gpu_count, sku.gpu_memory_gib
    model_size = weights * _WEIGHT_OVERHEAD
    usable = gpu_memory * _GPU_MEMORY_UTILIZATION
    kv_per_gpu = context * bytes_per_token / _GIB / gpus_per_node
    reserve = _FIXED_RESERVE_GIB + kv_per_gpu
    room = (usable - reserve) / _FRAGMENTATION
    if room <= 0:
        msg = (
            f"the KV cache for {context} tokens ({context * bytes_per_token / _GIB:.2f} GiB, "
            f"{kv_per_gpu:.2f} GiB per GPU) plus {_FIXED_RESERVE_GIB} GiB fixed reserve "
            f"exceeds the {usable:.2f} GiB usable on one {sku.gpu_model} of {sku.name}; "
            "lower max-model-len or pick a larger GPU"
        )
        raise EstimateError(msg)
    min_gpus = math.floor(model_size / room) + 1
    nodes = math.ceil(min_gpus / gpus_per_node)

    data_parallel = nodes == 1 and gpus_per_node > 1 and weights < _DATA_PARALLEL_BELOW * gpu_memory
    tensor_parallel = 1 if data_parallel else gpus_per_node
    if data_parallel:
        layout = (
            f"weights {weights:g} GiB < half of one {gpu_memory} GiB GPU: a full copy on each "
            f"GPU, data parallel {gpus_per_node}, tensor parallel 1"
        )
    else:
        layout = f"tensor parallel {tensor_parallel} (GPUs per node), pipeline parallel {nodes}"
        if nodes > 1:
            layout += " (nodes, over Ray)"
    experts: tuple[str, ...] = ()
    if model.active_parameters is not None and model.parameters is not None:
        experts = (
            f"mixture of experts: sized by all {model.parameters / 1e9:.1f}B parameters' "
            f"weights ({model.active_parameters / 1e9:.1f}B active per token; every expert "
            "stays in GPU memory)",
        )
    explanation = (
        *experts,
        f"model size = {weights:g} GiB weights x {_WEIGHT_OVERHEAD} = {model_size:.2f} GiB",
        f"usable per GPU = {gpu_memory} GiB x {_GPU_MEMORY_UTILIZATION} = {usable:.2f} GiB",
        f"reserve per GPU = {_FIXED_RESERVE_GIB} GiB + {context} tokens x {bytes_per_token} "
        f"B/token / {gpus_per_node} GPU(s) = {reserve:.2f} GiB",
        f"room for weights per GPU = ({usable:.2f} - {reserve:.2f}) / {_FRAGMENTATION} "
        f"= {room:.2f} GiB",
        f"min GPUs = floor({model_size:.2f} / {room:.2f}) + 1 = {min_gpus}",
        f"nodes = ceil({min_gpus} / {gpus_per_node} GPU(s) per node) = {nodes}",
        f"layout: {layout}",
    )
    warnings: list[str] = []
    heads = model.num_attention_heads
    if heads is not None and heads % tensor_parallel:
        warnings.append(
            f"{model.name} has {heads} attention heads, not divisible by tensor parallel "
            f"size {tensor_parallel}: vLLM will refuse this layout; pick another SKU"
        )
    if nodes > 1 and not model.multi_node:
        warnings.append(
            f"{model.name} is served on one node only (no multi-node inference), but needs "
            f"{nodes} nodes of {sku.name}; pick a SKU with more GPU memory per node"
        )
    return NodeEstimate(
        preset=model.name,
        instance_type=sku.name,
        gpu_model=sku.gpu_model,
        gpus_per_node=gpus_per_node,
        node_count=nodes,
        min_gpus=min_gpus,
        total_gpus=nodes * gpus_per_node,
        tensor_parallel_size=tensor_parallel,
        pipeline_parallel_size=nodes,
        data_parallel_size=gpus_per_node if data_parallel else 1,
        context_length=context,
        model_size_gib=model_size,
        usable_per_gpu_gib=usable,
        reserve_per_gpu_gib=reserve,
        room_per_gpu_gib=room,
        explanation=explanation,
        warnings=tuple(warnings),
    )
