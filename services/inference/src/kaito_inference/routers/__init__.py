"""Thin FastAPI routers: parse the body, make one call into serving, shape the response.

They neither raise nor catch: errors come out of serving as domain errors and are mapped
to OpenAI-shaped responses in :mod:`kaito_inference.errors`.
"""

from fastapi import APIRouter

from kaito_inference.routers import adapters, chat, completions, health, models

__all__ = ["ROUTERS"]

#: Every router of the server, in the order they are included.
ROUTERS: tuple[APIRouter, ...] = (
    chat.router,
    completions.router,
    models.router,
    adapters.router,
    health.router,
)
