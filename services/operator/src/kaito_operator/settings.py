"""Operator configuration, read once at startup from ``KAITO_OPERATOR_*`` variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_sdk.images import IMAGE_REGISTRY, IMAGE_TAG

__all__ = ["Controller", "NodeProvisioner", "OperatorSettings"]

NodeProvisioner = Literal["karpenter", "gpu-provisioner", "byo"]
Controller = Literal["workspace", "ragengine"]


class OperatorSettings(BaseSettings):
    """Everything the operator can be configured with (the chart sets these)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_OPERATOR_", extra="ignore")

    controllers: frozenset[Controller] = frozenset({"workspace", "ragengine"})
    """Which controllers run: the workspace chart runs ``["workspace"]``, the ragengine
    chart ``["ragengine"]`` (JSON list in the environment)."""
    node_provisioner: NodeProvisioner = "byo"
    """How GPU nodes appear: Karpenter NodePools, gpu-provisioner NodeClaims, or
    bring-your-own nodes that already carry the selector's labels."""
    karpenter_node_class_group: str = "karpenter.azure.com"
    """API group of the Karpenter NodeClass the NodePools reference."""
    karpenter_node_class_kind: str = "AKSNodeClass"
    """Kind of the Karpenter NodeClass."""
    karpenter_node_class_name: str = "default"
    """Default NodeClass name (the ``kaito.sh/node-class-name`` annotation overrides it)."""
    image_registry: str = IMAGE_REGISTRY
    """Registry and repository prefix of the service images."""
    image_tag: str = IMAGE_TAG
    """Tag of the service images."""
    release_namespace: str = "kaito-workspace"
    """Namespace of the operator; default tuning ConfigMaps are copied from here."""
    resync_seconds: float = Field(default=30.0, gt=0)
    """How often every Workspace's status is recomputed even without events."""
    webhook_enabled: bool = False
    """Serve the validating admission webhook."""
    webhook_port: int = Field(default=9443, ge=1, le=65535)
    """Port of the webhook HTTPS server."""
    webhook_cert_dir: str = "/etc/kaito/webhook-cert"
    """Directory of the serving certificate (``tls.crt``, ``tls.key``) the chart mounts."""
    webhook_service: str = "kaito-operator-webhook"
    """Service name in front of the webhook (used for the certificate and the config)."""
    webhook_configuration: str = "kaito-operator"
    """Name of the ValidatingWebhookConfiguration the operator keeps up to date."""
    api_server: str | None = None
    """Talk to this API server URL without credentials (local development, the emulator);
    unset means in-cluster service account, then kubeconfig."""
    post_events: bool = True
    """Post Kubernetes Events about handler progress."""
    metrics_port: int | None = Field(default=8081, ge=1, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint (unset: no endpoint)."""
    health_port: int = Field(default=8080, ge=1, le=65535)
    """Port of the liveness endpoint (``/healthz``)."""
