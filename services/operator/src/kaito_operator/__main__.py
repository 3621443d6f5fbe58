"""``kaito-operator``: run the controllers the settings enable, cluster-wide."""

from __future__ import annotations

import asyncio
import logging

import kopf

from kaito_operator.handlers import build_registry
from kaito_operator.settings import OperatorSettings

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``kaito-operator`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = OperatorSettings()
    asyncio.run(
        kopf.operator(
            registry=build_registry(settings),
            clusterwide=True,
            standalone=True,
            memo=kopf.Memo(settings=settings),
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        )
    )


if __name__ == "__main__":
    main()
