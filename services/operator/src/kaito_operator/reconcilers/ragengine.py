"""RAGEngine reconcile: the service Deployment and its Service, applied server-side; the
RAGEngine :class:`~kaito_operator.controller.Kind` of the generic controller."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, ClassVar

import pydantic

from kaito_operator.builders import ragengine as builders
from kaito_operator.builders import services as service_builders
from kaito_operator.errors import InvalidSpecError, refuse_invalid
from kaito_operator.kube import KubeClient
from kaito_operator.reconcilers.kind import Children, Reconciled
from kaito_operator.reconcilers.nodes import NodeProvisioner
from kaito_operator.reconcilers.observe import Outcome, RAGEngineChildren, observe_ragengine
from kaito_operator.settings import OperatorSettings
from kaito_sdk.api import RAGEngine, RAGEngineStatus
from kaito_sdk.images import image_for
from kaito_sdk.validation import validate

__all__ = ["RAGEngineReconciler"]


class RAGEngineReconciler:
    """Drives RAGEngines to their Deployment and Service and says what runs for them."""

    model: ClassVar[type[RAGEngine]] = RAGEngine
    summary: ClassVar[str] = "RAGEngineSucceeded"
    reconcile_on_child_change: ClassVar[bool] = False

    def __init__(self, kube: KubeClient, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.nodes = NodeProvisioner(kube, settings)

    async def reconcile(self, owner: RAGEngine) -> Reconciled:
        """Apply the Service and Deployment ``owner`` asks for (if it passes the SDK's
        rules); return the Deployment version written."""
        refuse_invalid(validate(owner))
        image = image_for(
            "ragengine", registry=self.settings.image_registry, tag=self.settings.image_tag
        )
        try:
            deployment = builders.ragengine_deployment(owner, image=image)
        except builders.UnsupportedSpecError as exc:
            raise InvalidSpecError(exc.field, str(exc)) from None
        except pydantic.ValidationError as exc:
            raise InvalidSpecError("spec", exc.errors()[0]["msg"]) from None
        await self.kube.apply(service_builders.service(owner))
        return Reconciled(workload=("Deployment", await self.kube.apply(deployment)))

    async def cleanup(self, owner: RAGEngine) -> None:
        """Nothing lives outside the namespace: the children go by garbage collection."""

    async def observe(
        self, owner: RAGEngine, children: Children, outcome: Outcome, *, now: datetime.datetime
    ) -> RAGEngineStatus:
        """The status from the Deployment and pods (``children``) and the nodes read now."""
        deployment: Mapping[str, Any] | None = None
        pods = []
        for kind, obj in children:
            if kind == "Pod":
                pods.append(obj)
            elif kind == "Deployment" and obj["metadata"]["name"] == owner.metadata.name:
                deployment = obj
        compute = owner.spec.compute
        nodes = None
        if compute is not None and compute.label_selector is not None:
            nodes = await self.nodes.matching_nodes(compute.label_selector)
        return observe_ragengine(
            owner, RAGEngineChildren(deployment, pods, nodes), outcome, now=now
        )
