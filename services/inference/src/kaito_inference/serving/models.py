"""Which models the server answers for: readiness, the base model and its adapters."""

from __future__ import annotations

from kaito_inference.engines.base import Engine
from kaito_inference.errors import ModelLoadFailedError, ModelNotFoundError, ModelNotReadyError
from kaito_inference.protocol.models import ModelCard, ModelList

__all__ = ["ServedModels"]


class ServedModels:
    """The engine's base model and adapters, as the OpenAI ``model`` field names them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def require_ready(self) -> None:
        """503 while the model is loading (or after it failed to load)."""
        if self.engine.ready:
            return
        failure = self.engine.load_error
        if failure is not None:
            raise ModelLoadFailedError(f"the model failed to load: {failure}")
        raise ModelNotReadyError("the model is still loading")

    def adapter_names(self) -> set[str]:
        """Names of the adapters served now."""
        return {adapter.name for adapter in self.engine.adapters()}

    def is_served(self, name: str) -> bool:
        """Whether ``name`` is the base model or an adapter."""
        return name == self.engine.base_model or name in self.adapter_names()

    def adapter_for(self, model: str) -> str | None:
        """``None`` for the base model, the adapter name for an adapter, else 404.

        Raises 503 first while the model is not ready.
        """
        self.require_ready()
        if model == self.engine.base_model:
            return None
        if model in self.adapter_names():
            return model
        raise ModelNotFoundError(f"the model {model!r} does not exist", param="model")

    def model_list(self) -> ModelList:
        """``GET /v1/models``: the base model first, then each adapter."""
        self.require_ready()
        base = self.engine.base_model
        cards = [ModelCard(id=base, root=base)]
        cards += [
            ModelCard(id=a.name, root=str(a.path), parent=base) for a in self.engine.adapters()
        ]
        return ModelList(data=cards)
