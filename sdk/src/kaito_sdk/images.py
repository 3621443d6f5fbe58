"""Container image names and tags for every service: the one place both the chart values
and the operator defaults read (a chart test compares ``values.yaml`` with this module)."""

from __future__ import annotations

from typing import Final

__all__ = ["IMAGE_REGISTRY", "IMAGE_TAG", "SERVICE_IMAGES", "image_for"]

#: Registry and repository prefix the release images are pushed to.
IMAGE_REGISTRY: Final = "ghcr.io/kaito-py"
#: Tag of the current release; matches the packages' version.
IMAGE_TAG: Final = "0.1.0"
#: Service name -> image repository (without registry or tag).
SERVICE_IMAGES: Final[dict[str, str]] = {
    "operator": "kaito-operator",
    "inference": "kaito-inference",
    "tuning": "kaito-tuning",
    "ragengine": "kaito-ragengine",
}


def image_for(service: str, *, registry: str = IMAGE_REGISTRY, tag: str = IMAGE_TAG) -> str:
    """Full image reference for ``service`` (one of :data:`SERVICE_IMAGES`)."""
    try:
        repository = SERVICE_IMAGES[service]
    except KeyError:
        known = ", ".join(sorted(SERVICE_IMAGES))
        raise ValueError(f"unknown service {service!r}; known services: {known}") from None
    return f"{registry}/{repository}:{tag}"
