"""The ``InferenceSet`` kind (``kaito.sh/v1beta1``): ``replicas`` inference Workspaces made
from one template, scalable through the ``scale`` subresource (``kubectl scale``, an HPA,
a KEDA ScaledObject).

The annotations under ``scaledobject.kaito.sh/`` ask the operator for a KEDA
``ScaledObject`` that drives the InferenceSet from the serving metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import yaml
from pydantic import Field

from kaito_sdk.api.base import (
    ApiInfo,
    Condition,
    KubeModel,
    KubeObject,
    ObjectMeta,
    PrinterColumn,
    ScaleSubresource,
)
from kaito_sdk.api.workspace import (
    InferenceSpec,
    LabelSelector,
    PartitionSpec,
    PerformanceStatus,
    ResourceSpec,
    Workspace,
)
from kaito_sdk.labels import LABEL_INFERENCESET_CREATED_BY

__all__ = [
    "ANNOTATION_SCALEDOBJECT_MAX_REPLICAS",
    "ANNOTATION_SCALEDOBJECT_METRICS",
    "ANNOTATION_SCALEDOBJECT_MIN_REPLICAS",
    "ANNOTATION_SCALEDOBJECT_SERVER_ADDRESS",
    "AUTO_UPGRADE_STRATEGIES",
    "METRIC_TYPES",
    "AutoUpgradePolicy",
    "AutoUpgradeStatus",
    "InferenceSet",
    "InferenceSetResourceSpec",
    "InferenceSetSpec",
    "InferenceSetStatus",
    "InferenceSetTemplate",
    "MaintenanceWindow",
    "ScalingMetric",
    "TemplateMetadata",
    "member_name",
    "member_workspace",
    "scaling_bounds",
    "scaling_metrics",
]

#: A YAML list of ``{name, type, upthreshold, downthreshold}``: one KEDA trigger per entry.
ANNOTATION_SCALEDOBJECT_METRICS: Final = "scaledobject.kaito.sh/metrics"
#: Most replicas the ScaledObject may ask for (default 10).
ANNOTATION_SCALEDOBJECT_MAX_REPLICAS: Final = "scaledobject.kaito.sh/max-replicas"
#: Fewest replicas the ScaledObject keeps (default 1).
ANNOTATION_SCALEDOBJECT_MIN_REPLICAS: Final = "scaledobject.kaito.sh/min-replicas"
#: The Prometheus server KEDA queries.
ANNOTATION_SCALEDOBJECT_SERVER_ADDRESS: Final = "scaledobject.kaito.sh/server-address"
#: KEDA metric types a scaling metric may use.
METRIC_TYPES: Final = ("AverageValue", "Value")
#: How a base image upgrade replaces Workspaces.
AUTO_UPGRADE_STRATEGIES: Final = ("InPlace", "Surge")


class TemplateMetadata(KubeModel):
    """Metadata copied onto every member Workspace."""

    labels: dict[str, str] | None = None
    """Labels every member Workspace carries."""
    annotations: dict[str, str] | None = None
    """Annotations every member Workspace carries (runtime, benchmark opt-out, ...)."""


class InferenceSetResourceSpec(KubeModel):
    """The nodes of each replica (the label selector comes from ``spec.labelSelector``)."""

    instance_type: str | None = None
    """GPU SKU of each replica's nodes; required with node auto-provisioning, empty for
    bring-your-own nodes."""
    partition: PartitionSpec | None = None
    """GPU partitioning of each replica (bring-your-own nodes only). Immutable."""


class InferenceSetTemplate(KubeModel):
    """The Workspace every replica is made from."""

    metadata: TemplateMetadata | None = None
    """Labels and annotations propagated to the member Workspaces."""
    resource: InferenceSetResourceSpec | None = None
    """The nodes of each replica."""
    inference: InferenceSpec
    """What each replica serves (the same type as ``Workspace.inference``)."""


class MaintenanceWindow(KubeModel):
    """When base image upgrades may start."""

    schedule: str
    """Five-field cron expression (UTC) at which the window opens."""
    duration: str | None = None
    """How long the window stays open (a Go duration such as ``4h``; default 4h)."""


class AutoUpgradePolicy(KubeModel):
    """Automatic base image upgrades of the member Workspaces."""

    enabled: bool | None = None
    """Upgrade members when the operator's image version changes (default false)."""
    strategy: str | None = Field(
        default=None, json_schema_extra={"enum": list(AUTO_UPGRADE_STRATEGIES)}
    )
    """``InPlace`` (default: roll each member's pods) or ``Surge``."""
    maintenance_window: MaintenanceWindow | None = None
    """When upgrades may start; any time if unset."""


class InferenceSetSpec(KubeModel):
    """Desired state of an InferenceSet."""

    template: InferenceSetTemplate
    """The Workspace each replica is made from."""
    replicas: int | None = Field(default=None, json_schema_extra={"minimum": 0})
    """Desired number of member Workspaces (default 1); the ``scale`` subresource writes it."""
    node_count_limit: int | None = Field(default=None, json_schema_extra={"minimum": 0})
    """Most GPU nodes all replicas together may use (unlimited if unset)."""
    label_selector: LabelSelector
    """Node selector copied into each member's ``resource.labelSelector``."""
    update_strategy: dict[str, Any] | None = None
    """How members are replaced (schemaless ``StatefulSetUpdateStrategy``); default
    ``RollingUpdate`` with ``maxUnavailable: 1``."""
    auto_upgrade: AutoUpgradePolicy | None = None
    """Automatic base image upgrades."""


class AutoUpgradeStatus(KubeModel):
    """Observed state of base image upgrades."""

    num_drifted_workspaces: int | None = None
    """Members whose base image differs from the operator's."""
    last_successful_upgrade_time: str | None = None
    """When the last member finished an upgrade."""


class InferenceSetStatus(KubeModel):
    """Observed state of an InferenceSet."""

    replicas: int | None = None
    """Member Workspaces that exist (the ``scale`` subresource reads it)."""
    ready_replicas: int | None = None
    """Member Workspaces whose inference is ready."""
    selector: str | None = None
    """Label selector of the members (``inferenceset.kaito.sh/created-by=<name>``)."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Latest observations of the InferenceSet's state."""
    performance: PerformanceStatus | None = None
    """Benchmark results aggregated across the members."""
    auto_upgrade: AutoUpgradeStatus | None = None
    """Observed state of base image upgrades."""


class InferenceSet(KubeObject):
    """``replicas`` inference Workspaces made from one template."""

    api_info: ClassVar[ApiInfo] = ApiInfo(
        group="kaito.sh",
        version="v1beta1",
        older_versions=("v1alpha1",),
        kind="InferenceSet",
        plural="inferencesets",
        singular="inferenceset",
        short_names=("is", "isets"),
        categories=("inferenceset",),
        printer_columns=(
            PrinterColumn("Replicas", "integer", ".spec.replicas"),
            PrinterColumn("ReadyReplicas", "integer", ".status.readyReplicas"),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
        ),
        scale_subresource=ScaleSubresource(),
    )

    api_version: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    """Versioned schema of this object: ``kaito.sh/v1beta1`` (stored) or ``kaito.sh/v1alpha1``
    (served with the same schema)."""
    kind: Literal["InferenceSet"] = "InferenceSet"
    """Kind of this object: ``InferenceSet``."""
    spec: InferenceSetSpec
    """Desired state."""
    status: InferenceSetStatus | None = None
    """Observed state, written by the operator."""

    @property
    def desired_replicas(self) -> int:
        """``spec.replicas``, 1 when unset (KAITO's default)."""
        return 1 if self.spec.replicas is None else self.spec.replicas


def member_name(inference_set: InferenceSet, index: int) -> str:
    """Name of the member Workspace number ``index``: ``<inferenceset>-<index>``."""
    return f"{inference_set.metadata.name}-{index}"


def member_workspace(inference_set: InferenceSet, index: int) -> Workspace:
    """The member Workspace number ``index`` as the template describes it: the template's
    labels and annotations plus ``inferenceset.kaito.sh/created-by``, the set's node
    selector, the template's resource and inference (deep copies)."""
    spec = inference_set.spec
    template = spec.template
    template_meta = template.metadata or TemplateMetadata()
    resource = template.resource or InferenceSetResourceSpec()
    labels = {
        **(template_meta.labels or {}),
        LABEL_INFERENCESET_CREATED_BY: str(inference_set.metadata.name),
    }
    return Workspace(
        metadata=ObjectMeta(
            name=member_name(inference_set, index),
            namespace=inference_set.metadata.namespace,
            labels=labels,
            annotations=dict(template_meta.annotations) if template_meta.annotations else None,
        ),
        resource=ResourceSpec(
            instance_type=resource.instance_type,
            label_selector=spec.label_selector.model_copy(deep=True),
            partition=resource.partition.model_copy(deep=True) if resource.partition else None,
        ),
        inference=template.inference.model_copy(deep=True),
    )


@dataclass(frozen=True)
class ScalingMetric:
    """One entry of the ``scaledobject.kaito.sh/metrics`` annotation."""

    name: str
    """Prometheus metric name (``kaito_inference_requests_waiting``, ...)."""
    type: str
    """KEDA metric type: ``AverageValue`` (per replica, the default) or ``Value``."""
    upthreshold: float
    """Scale up when the metric (per replica for ``AverageValue``) goes above this."""
    downthreshold: float
    """Scale down only when the metric falls below this (at most ``upthreshold``)."""


def scaling_metrics(inference_set: InferenceSet) -> list[ScalingMetric]:
    """The metrics of the ``scaledobject.kaito.sh/metrics`` annotation (empty without it).

    Raises :class:`ValueError` saying what is wrong with the annotation's YAML.
    """
    text = (inference_set.metadata.annotations or {}).get(ANNOTATION_SCALEDOBJECT_METRICS)
    if text is None:
        return []
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            "must be a non-empty YAML list of {name, type, upthreshold, downthreshold}"
        )
    metrics = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"entry {number}: must be a mapping with a metric name")
        unknown = set(entry) - {"name", "type", "upthreshold", "downthreshold"}
        if unknown:
            raise ValueError(f"entry {number}: unknown keys {', '.join(sorted(unknown))}")
        kind = entry.get("type", "AverageValue")
        if kind not in METRIC_TYPES:
            raise ValueError(f"entry {number}: type must be one of {', '.join(METRIC_TYPES)}")
        up = _number(entry.get("upthreshold"))
        down = _number(entry.get("downthreshold", entry.get("upthreshold")))
        if up is None or down is None:
            raise ValueError(f"entry {number}: upthreshold and downthreshold must be numbers")
        if not 0 <= down <= up or up <= 0:
            raise ValueError(
                f"entry {number}: want 0 <= downthreshold <= upthreshold and upthreshold > 0"
            )
        metrics.append(ScalingMetric(entry["name"], kind, up, down))
    return metrics


def _number(value: object) -> float | None:
    """``value`` as a float when it is a YAML number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _replica_bound(inference_set: InferenceSet, key: str, default: int) -> int:
    text = (inference_set.metadata.annotations or {}).get(key)
    if text is None:
        return default
    if not text.strip().isdigit():
        raise ValueError(f"{key} must be a whole number, got {text!r}")
    return int(text)


def scaling_bounds(inference_set: InferenceSet) -> tuple[int, int]:
    """``(min, max)`` replicas of the ScaledObject: the ``scaledobject.kaito.sh/min-replicas``
    and ``max-replicas`` annotations, 1 and 10 by default. Raises :class:`ValueError`."""
    low = _replica_bound(inference_set, ANNOTATION_SCALEDOBJECT_MIN_REPLICAS, 1)
    high = _replica_bound(inference_set, ANNOTATION_SCALEDOBJECT_MAX_REPLICAS, 10)
    if high < max(low, 1):
        raise ValueError(f"max-replicas ({high}) must be at least min-replicas ({low}) and 1")
    return low, high
