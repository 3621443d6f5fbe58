"""RAGEngine reconcile: the service Deployment and its Service, applied server-side."""

from __future__ import annotations

import pydantic

from kaito_operator.builders import ragengine as builders
from kaito_operator.builders import services as service_builders
from kaito_operator.errors import InvalidSpecError, refuse_invalid
from kaito_operator.kube import KubeClient
from kaito_operator.reconcilers.freshness import ChildEvent
from kaito_operator.settings import OperatorSettings
from kaito_sdk.api import RAGEngine
from kaito_sdk.images import image_for
from kaito_sdk.validation import validate

__all__ = ["RAGEngineReconciler"]


class RAGEngineReconciler:
    """Drives one RAGEngine to its Deployment and Service."""

    def __init__(self, kube: KubeClient, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings

    async def reconcile(self, engine: RAGEngine) -> ChildEvent:
        """Apply the Service and Deployment ``engine`` asks for (if it passes the SDK's rules);
        return the Deployment version written."""
        refuse_invalid(validate(engine))
        image = image_for(
            "ragengine", registry=self.settings.image_registry, tag=self.settings.image_tag
        )
        try:
            deployment = builders.ragengine_deployment(engine, image=image)
        except builders.UnsupportedSpecError as exc:
            raise InvalidSpecError(exc.field, str(exc)) from None
        except pydantic.ValidationError as exc:
            raise InvalidSpecError("spec", exc.errors()[0]["msg"]) from None
        await self.kube.apply(service_builders.service(engine))
        return ChildEvent.of("Deployment", await self.kube.apply(deployment), deleted=False)
