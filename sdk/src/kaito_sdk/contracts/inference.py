"""How the operator launches ``kaito-inference serve``: argv, port and mount paths.

The operator builds the container command with :meth:`InferenceLaunch.to_argv`; the
inference service's own test proves its argument parser accepts every argv built here.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ADAPTERS_MOUNT",
    "CONFIG_FILE",
    "CONFIG_MOUNT",
    "DEFAULT_PORT",
    "ENTRYPOINT",
    "HEALTH_PATH",
    "METRICS_PATH",
    "PORT_NAME",
    "InferenceLaunch",
]

#: The console script inside the inference image.
ENTRYPOINT: Final = ("kaito-inference", "serve")
#: Container port the server listens on, and its name in the pod spec and Service.
DEFAULT_PORT: Final = 5000
PORT_NAME: Final = "http"
#: Where adapters are mounted: one subdirectory per adapter (KAITO's layout).
ADAPTERS_MOUNT: Final = "/mnt/adapter"
#: Where the ``inference.config`` ConfigMap is mounted; the file inside is CONFIG_FILE.
CONFIG_MOUNT: Final = "/mnt/config"
CONFIG_FILE: Final = f"{CONFIG_MOUNT}/inference_config.yaml"
#: Probe and scrape paths.
HEALTH_PATH: Final = "/health"
METRICS_PATH: Final = "/metrics"


class InferenceLaunch(BaseModel):
    """Everything the operator decides about one inference container's command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["transformers", "vllm"] = "transformers"
    model: str | None = Field(default=None, min_length=1)
    """Preset name, model directory or HF id; ``None`` serves the embedded default."""
    served_model_name: str | None = Field(default=None, min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    adapters_dir: str = ADAPTERS_MOUNT
    kaito_config_file: str | None = None
    """Path of the mounted ``inference_config.yaml`` (usually :data:`CONFIG_FILE`)."""
    instance_type: str | None = None
    """GPU SKU of the node: the vLLM launcher derives parallelism from it."""
    max_model_len: int | None = Field(default=None, ge=16)
    extra_args: tuple[str, ...] = ()
    """Further flags (``--dtype bfloat16``); with the vLLM runtime, unknown ones reach vLLM."""

    @field_validator("extra_args")
    @classmethod
    def _flags_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value and not value[0].startswith("--"):
            raise ValueError("extra_args must start with a --flag")
        return value

    def to_argv(self) -> list[str]:
        """The container command: ``kaito-inference serve --runtime ... --port ...``."""
        argv = [*ENTRYPOINT, "--runtime", self.runtime, "--port", str(self.port)]
        argv += ["--adapters-dir", self.adapters_dir]
        for flag, value in (
            ("--model", self.model),
            ("--served-model-name", self.served_model_name),
            ("--kaito-config-file", self.kaito_config_file),
            ("--kaito-instance-type", self.instance_type),
            ("--max-model-len", None if self.max_model_len is None else str(self.max_model_len)),
        ):
            if value is not None:
                argv += [flag, value]
        return argv + list(self.extra_args)
