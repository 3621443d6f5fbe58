"""The CRD conversion webhook: ``ConversionReview`` (``apiextensions.k8s.io/v1``) on ``/convert``.

The RAGEngine CRD serves KAITO's v1alpha1 schema (flat storage) beside the stored v1beta1
one, so the API server asks the operator to convert (``conversion: Webhook``). kopf's
webhook server serves admission reviews only: :class:`ConvertingWebhookServer` is kopf's
server (same port, same certificate) with ``/convert`` answered by
:func:`review_conversion`, which converts with :func:`kaito_sdk.api.convert_manifest`.

helm cannot template a chart's ``crds/``: at startup the operator points the CRD's
conversion webhook where the API server already reaches its admission webhook: the
clientConfig of the chart's ValidatingWebhookConfiguration (Service or URL, and its
caBundle) with the path ``/convert`` (:func:`conversion_client_config`); without that
configuration, at its Service from the settings, trusting ``ca.crt`` of its certificate
directory. :func:`point_crd_at_webhook` applies it.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import kopf

from kaito_operator.kube import KubeApiError, KubeClient
from kaito_operator.settings import OperatorSettings
from kaito_sdk.api import ConversionError, RAGEngine, convert_manifest
from kaito_sdk.crd.build import CONVERSION_PATH

__all__ = [
    "CONVERSION_CRD",
    "CONVERT_WEBHOOK_ID",
    "ConvertingWebhookServer",
    "conversion_client_config",
    "conversion_crd_patch",
    "point_crd_at_webhook",
    "review_conversion",
]

logger = logging.getLogger(__name__)

#: The URL path (kopf's webhook id) the API server posts ConversionReviews to.
CONVERT_WEBHOOK_ID: Final = CONVERSION_PATH.strip("/")
#: The CRD whose versions have different schemas.
CONVERSION_CRD: Final = RAGEngine.api_info.crd_name
_REVIEW_VERSION: Final = "apiextensions.k8s.io/v1"


def review_conversion(review: Any) -> dict[str, Any]:
    """The ConversionReview response to ``review``: every object converted to
    ``desiredAPIVersion`` and ``result.status: Success``, or ``result.status: Failure``
    with a message naming what could not be converted. Never raises; the ``uid`` is
    echoed whenever the request has one."""
    request = review.get("request") if isinstance(review, Mapping) else None
    uid = request.get("uid") if isinstance(request, Mapping) else None
    response: dict[str, Any] = {"uid": uid if isinstance(uid, str) else ""}
    try:
        response["convertedObjects"] = _convert_all(request)
        response["result"] = {"status": "Success"}
    except ConversionError as exc:
        response["result"] = {"status": "Failure", "message": str(exc)}
    return {"apiVersion": _REVIEW_VERSION, "kind": "ConversionReview", "response": response}


def _convert_all(request: Any) -> list[dict[str, Any]]:
    if not isinstance(request, Mapping):
        raise ConversionError("request: required, a ConversionRequest object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ConversionError("request.uid: required, a non-empty string")
    desired = request.get("desiredAPIVersion")
    if not isinstance(desired, str):
        raise ConversionError("request.desiredAPIVersion: required, a string")
    objects = request.get("objects")
    if not isinstance(objects, list):
        raise ConversionError("request.objects: required, a list")
    converted = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise ConversionError(f"request.objects[{index}]: must be an object")
        try:
            converted.append(convert_manifest(obj, desired))
        except ConversionError as exc:
            name = (obj.get("metadata") or {}).get("name", "")
            raise ConversionError(
                f"request.objects[{index}] ({obj.get('kind')} {name}): {exc}"
            ) from None
    return converted


class ConvertingWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server that also answers ConversionReviews on ``/convert``."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        """Serve kopf's admission handler ``fn``, with ``/convert`` answered here."""

        async def dispatch(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            if webhook == CONVERT_WEBHOOK_ID:
                return review_conversion(request)
            return await fn(request, webhook=webhook, **kwargs)

        async for client_config in super().__call__(dispatch):
            yield client_config


async def conversion_client_config(kube: KubeClient, settings: OperatorSettings) -> dict[str, Any]:
    """Where the API server should post ConversionReviews: the admission webhook's
    clientConfig (from the ValidatingWebhookConfiguration ``settings.webhook_configuration``)
    with the path ``/convert``; without one, the Service named in the settings."""
    configuration = await kube.get(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        settings.webhook_configuration,
    )
    webhooks = (configuration or {}).get("webhooks") or []
    admission = webhooks[0].get("clientConfig") or {} if webhooks else {}
    client_config: dict[str, Any]
    if admission.get("url"):
        url = urllib.parse.urlsplit(admission["url"])
        client_config = {"url": url._replace(path=CONVERSION_PATH, query="").geturl()}
    elif admission.get("service"):
        client_config = {"service": {**admission["service"], "path": CONVERSION_PATH}}
    else:
        client_config = {
            "service": {
                "namespace": settings.release_namespace,
                "name": settings.webhook_service,
                "path": CONVERSION_PATH,
                "port": settings.webhook_port,
            }
        }
    ca = Path(settings.webhook_cert_dir) / "ca.crt"
    if admission.get("caBundle"):
        client_config["caBundle"] = admission["caBundle"]
    elif ca.is_file():
        client_config["caBundle"] = base64.b64encode(ca.read_bytes()).decode("ascii")
    return client_config


def conversion_crd_patch(client_config: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that points the RAGEngine CRD's conversion webhook at
    ``client_config`` (the other of ``url`` and ``service`` removed: exactly one is
    allowed)."""
    other = "service" if "url" in client_config else "url"
    return {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {**client_config, other: None},
                },
            }
        },
    }


async def point_crd_at_webhook(kube: KubeClient, settings: OperatorSettings) -> bool:
    """Patch the CRD with :func:`conversion_crd_patch` of :func:`conversion_client_config`;
    False (logged) when the API server refuses, in which case v1alpha1 RAGEngine requests fail
    until an operator restart succeeds."""
    try:
        patch = conversion_crd_patch(await conversion_client_config(kube, settings))
        found = await kube.merge_patch(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", CONVERSION_CRD, None, patch
        )
    except KubeApiError as exc:
        logger.error(
            "could not point the %s conversion webhook at this operator: %s; "
            "kaito.sh/v1alpha1 RAGEngine requests will fail",
            CONVERSION_CRD,
            exc,
        )
        return False
    if found is None:
        logger.error("the %s CRD is not installed: install the chart's CRDs", CONVERSION_CRD)
        return False
    return True
