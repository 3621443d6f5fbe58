"""The validating admission webhook (kopf's admission support over HTTPS).

The chart owns the ValidatingWebhookConfiguration and the serving certificate (a Secret
mounted at ``webhook_cert_dir``); the operator serves ``/validate-workspace``,
``/validate-inferenceset`` and ``/validate-ragengine`` on ``webhook_port``, and there
too ``/convert``, the RAGEngine CRD's conversion webhook (:mod:`kaito_operator.conversion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf

from kaito_operator import admission
from kaito_operator.conversion import ConvertingWebhookServer
from kaito_operator.settings import OperatorSettings
from kaito_sdk.validation import check_manifest

__all__ = ["WEBHOOK_IDS", "register", "validate", "webhook_server"]

#: Handler ids, which are also the URL paths the chart's webhook configuration calls.
WEBHOOK_IDS = {
    "workspaces": "validate-workspace",
    "inferencesets": "validate-inferenceset",
    "ragengines": "validate-ragengine",
}


async def validate(
    *, body: kopf.Body, memo: Any, warnings: list[str] | None = None, **kwargs: Any
) -> None:
    """Refuse the object with every rule it breaks (HTTP 422 to the API server).

    What KAITO admits but will not do what the user may expect (a gated model without a
    token Secret, an adapter strength under vLLM, a deprecated preset) is admitted with
    warnings: kopf returns them in the AdmissionReview response, and kubectl prints them.
    """
    old = kwargs.get("old")  # the stored object, on UPDATE
    manifest = {key: value for key, value in dict(body).items() if key != "status"}
    if warnings is not None:
        warnings.extend(str(warning) for warning in check_manifest(manifest).warnings)
    problems = await admission.review(memo.kube, manifest, dict(old) if old else None)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


def webhook_server(settings: OperatorSettings) -> kopf.WebhookServer:
    """kopf's HTTPS server with the chart's certificate (also serving ``/convert``, the
    RAGEngine CRD's conversion webhook)."""
    cert_dir = Path(settings.webhook_cert_dir)
    return ConvertingWebhookServer(
        addr="0.0.0.0",  # noqa: S104 (the API server reaches the pod through its Service)
        port=settings.webhook_port,
        host=settings.webhook_service,
        certfile=str(cert_dir / "tls.crt"),
        pkeyfile=str(cert_dir / "tls.key"),
    )


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the validation handler of each enabled controller's kind."""
    plurals = []
    if "workspace" in settings.controllers:
        plurals += ["workspaces", "inferencesets"]
    if "ragengine" in settings.controllers:
        plurals.append("ragengines")
    for plural in plurals:
        kopf.on.validate(
            "kaito.sh",
            "v1beta1",
            plural,
            id=WEBHOOK_IDS[plural],
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(validate)
