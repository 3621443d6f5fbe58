"""The ``Workspace`` kind (``kaito.sh/v1beta1``): one model served or tuned on GPU nodes.

As in KAITO, ``resource``, ``inference`` and ``tuning`` sit at the top level of the
object (there is no ``spec``); exactly one of ``inference`` and ``tuning`` is set.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from kaito_sdk.api.base import ApiInfo, Condition, KubeModel, KubeObject, PrinterColumn

__all__ = [
    "CONFIG_MAP_NAME_SCHEMA",
    "MAX_ADAPTERS",
    "PARTITION_MODES",
    "TUNING_METHOD_SCHEMA",
    "AdapterSpec",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "LabelSelector",
    "LabelSelectorRequirement",
    "PartitionSpec",
    "PerformanceMetric",
    "PerformanceStatus",
    "PresetOptions",
    "PresetSpec",
    "ResourceSpec",
    "TuningSpec",
    "Workspace",
    "WorkspaceStatus",
]

#: Most adapters one inference workspace may load.
MAX_ADAPTERS: Final = 10
#: GPU partitioning modes.
PARTITION_MODES: Final = ("mig", "accelerator")


class LabelSelectorRequirement(KubeModel):
    """One ``matchExpressions`` entry of a label selector."""

    key: str
    """Label key the requirement applies to."""
    operator: str
    """Relation of the key to the values; KAITO accepts only ``In``."""
    values: list[str] | None = None
    """Values the label may take."""


class LabelSelector(KubeModel):
    """A Kubernetes label selector (``metav1.LabelSelector``)."""

    match_labels: dict[str, str] | None = None
    """Labels a node must carry, key to value."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Set-based requirements; KAITO accepts only the ``In`` operator."""


class PartitionSpec(KubeModel):
    """How each GPU is partitioned (bring-your-own nodes only)."""

    mode: str = Field(json_schema_extra={"enum": list(PARTITION_MODES)})
    """``mig`` (NVIDIA Multi-Instance GPU slices) or ``accelerator`` (whole GPUs)."""
    profile: str | None = None
    """MIG profile such as ``1g.10gb``; required for ``mig``, invalid otherwise."""
    count: int | None = Field(default=None, json_schema_extra={"minimum": 1})
    """Number of whole GPUs; required for ``accelerator``, invalid for ``mig``."""


class ResourceSpec(KubeModel):
    """The GPU nodes a workload runs on."""

    count: int | None = Field(default=None, json_schema_extra={"minimum": 1})
    """Deprecated: number of nodes (default 1). Only the transformers runtime uses it;
    vLLM sizes the node count with the estimator. Immutable; at most 1 for tuning."""
    instance_type: str | None = None
    """GPU SKU to provision (for example ``Standard_NC24ads_A100_v4``). Immutable."""
    label_selector: LabelSelector
    """Selects the nodes for the workload; only ``matchLabels`` and ``In`` expressions.
    The labels are also stamped onto provisioned nodes. Immutable."""
    preferred_nodes: list[str] | None = None
    """Deprecated: names of existing nodes to use."""
    partition: PartitionSpec | None = None
    """GPU partitioning (bring-your-own nodes only). Immutable."""


class PresetOptions(KubeModel):
    """Options of a preset model."""

    image: str | None = None
    """Deprecated: a private image holding the model weights."""
    image_pull_secrets: list[str] | None = None
    """Deprecated: Secrets used to pull ``image``."""
    model_access_secret: str | None = None
    """Secret with key ``HF_TOKEN`` for gated models downloaded at runtime."""


class PresetSpec(KubeModel):
    """A model from the preset catalog (or any Hugging Face ``org/model`` id)."""

    name: str
    """Preset name, legacy alias, or Hugging Face ``org/model`` id. Immutable."""
    access_mode: str | None = None
    """Deprecated: ``public`` or ``private`` model image."""
    preset_options: PresetOptions | None = None
    """Options of the preset model."""


class DataSource(KubeModel):
    """Where data comes from: URLs, an image, or a volume."""

    name: str | None = None
    """Name of the data (the adapter name for adapters; immutable for tuning input)."""
    urls: list[str] | None = None
    """Public http(s) URLs of the data files (tuning input only)."""
    volume_source: dict[str, Any] | None = None
    """A Kubernetes ``VolumeSource`` holding the data (schemaless)."""
    image: str | None = None
    """An OCI image whose ``/data`` holds the data."""
    image_pull_secrets: list[str] | None = None
    """Secrets used to pull ``image``."""


class DataDestination(KubeModel):
    """Where tuning results go: an image or a volume."""

    volume_source: dict[str, Any] | None = None
    """A Kubernetes ``VolumeSource`` to write the adapter to (schemaless)."""
    image: str | None = None
    """OCI image reference the adapter is pushed to."""
    image_push_secret: str | None = None
    """Secret with registry credentials; required with ``image``."""


class AdapterSpec(KubeModel):
    """A LoRA adapter loaded next to the base model."""

    source: DataSource | None = None
    """Where the adapter lives: ``name`` plus an ``image`` or a ``volumeSource``."""
    strength: str | None = None
    """Merge weight, a number in [0, 1] written as a string (transformers runtime only)."""


#: Schema-only rules (the API server checks them even with the webhook down; the SDK's
#: validation gives the field-named messages): a ConfigMap name is a DNS-1123 subdomain.
CONFIG_MAP_NAME_SCHEMA: Final[dict[str, Any]] = {
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
#: ``lora`` or ``qlora``, in any case (an enum cannot say case-insensitive).
TUNING_METHOD_SCHEMA: Final[dict[str, Any]] = {
    "pattern": "^([lL][oO][rR][aA]|[qQ][lL][oO][rR][aA])$"
}


class InferenceSpec(KubeModel):
    """Serve a model: a preset or a custom pod template."""

    preset: PresetSpec | None = None
    """The model to serve; mutually exclusive with ``template``."""
    template: dict[str, Any] | None = None
    """A custom pod (``PodTemplateSpec``, schemaless); mutually exclusive with ``preset``.
    Cannot be set or unset after creation."""
    config: str | None = Field(default=None, json_schema_extra=CONFIG_MAP_NAME_SCHEMA)
    """ConfigMap (same namespace) whose ``inference_config.yaml`` holds runtime settings."""
    adapters: list[AdapterSpec] | None = Field(
        default=None, json_schema_extra={"maxItems": MAX_ADAPTERS}
    )
    """LoRA adapters to load (at most 10, unique names)."""


class TuningSpec(KubeModel):
    """Fine-tune a model with LoRA or QLoRA."""

    preset: PresetSpec | None = None
    """The base model; must be a tunable preset. Immutable."""
    method: str | None = Field(default=None, json_schema_extra=TUNING_METHOD_SCHEMA)
    """``lora`` or ``qlora`` (case-insensitive). Immutable."""
    config: str | None = Field(default=None, json_schema_extra=CONFIG_MAP_NAME_SCHEMA)
    """ConfigMap whose ``training_config.yaml`` holds the hyperparameters."""
    input: DataSource | None = None
    """The dataset: exactly one of ``urls``, ``image`` or ``volumeSource``."""
    output: DataDestination | None = None
    """Where the adapter goes: ``image`` (with ``imagePushSecret``) or ``volumeSource``."""


class PerformanceMetric(KubeModel):
    """One benchmark measurement."""

    description: str | None = None
    """What was measured (for example ``stress/high-concurrency``)."""
    value: float
    """The measured value."""
    unit: str | None = None
    """Unit of ``value`` (for example ``tokens/min``)."""
    config: str | None = None
    """Benchmark settings the value was measured with."""


class PerformanceStatus(KubeModel):
    """Results of the post-load benchmark."""

    metrics: dict[str, PerformanceMetric] | None = None
    """Metric name (for example ``peakTokensPerMinute``) to measurement."""


class WorkspaceStatus(KubeModel):
    """Observed state of a Workspace."""

    worker_nodes: list[str] | None = None
    """Nodes the workload runs on."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Latest observations of the workspace's state."""
    target_node_count: int | None = None
    """Node count chosen once by the estimator (or ``resource.count``)."""
    state: str | None = None
    """Pending, Ready or NotReady (inference); Pending, Running, Succeeded or Failed (tuning)."""
    performance: PerformanceStatus | None = None
    """Benchmark results."""


class Workspace(KubeObject):
    """A model served (``inference``) or fine-tuned (``tuning``) on GPU nodes."""

    api_info: ClassVar[ApiInfo] = ApiInfo(
        group="kaito.sh",
        version="v1beta1",
        older_versions=("v1alpha1",),
        kind="Workspace",
        plural="workspaces",
        singular="workspace",
        short_names=("wk", "wks"),
        printer_columns=(
            PrinterColumn("Instance", "string", ".resource.instanceType"),
            PrinterColumn(
                "ResourceReady", "string", '.status.conditions[?(@.type=="ResourceReady")].status'
            ),
            PrinterColumn(
                "InferenceReady",
                "string",
                '.status.conditions[?(@.type=="InferenceReady")].status',
            ),
            PrinterColumn(
                "JobStarted", "string", '.status.conditions[?(@.type=="JobStarted")].status'
            ),
            PrinterColumn(
                "WorkspaceSucceeded",
                "string",
                '.status.conditions[?(@.type=="WorkspaceSucceeded")].status',
            ),
            PrinterColumn("TargetNodeCount", "integer", ".status.targetNodeCount"),
            PrinterColumn("State", "string", ".status.state"),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
    )

    api_version: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    """Versioned schema of this object: ``kaito.sh/v1beta1`` (stored) or ``kaito.sh/v1alpha1``
    (served with the same schema)."""
    kind: Literal["Workspace"] = "Workspace"
    """Kind of this object: ``Workspace``."""
    resource: ResourceSpec
    """The GPU nodes the workload runs on."""
    inference: InferenceSpec | None = None
    """Serve a model; mutually exclusive with ``tuning``."""
    tuning: TuningSpec | None = None
    """Fine-tune a model; mutually exclusive with ``inference``."""
    status: WorkspaceStatus | None = None
    """Observed state, written by the operator."""
