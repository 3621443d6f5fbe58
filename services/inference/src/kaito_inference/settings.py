"""Service settings: command-line flags and ``KAITO_INFERENCE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["InferenceSettings"]


class InferenceSettings(BaseSettings):
    """Everything ``kaito-inference serve`` needs; each field reads ``KAITO_INFERENCE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KAITO_INFERENCE_", extra="forbid")

    runtime: Literal["transformers", "vllm"] = "transformers"
    model: str | None = Field(
        default=None,
        description="preset name, local model directory or locally cached Hugging Face id; "
        "unset serves the embedded SmolLM2-135M-Instruct",
    )
    served_model_name: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all interfaces)
    port: int = Field(default=5000, ge=1, le=65535)
    adapters_dir: Path = Path("/mnt/adapter")
    kaito_config_file: Path | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    weights: Literal["auto", "float32", "bfloat16", "int8", "int4", "w8a8"] = Field(
        default="auto",
        description="the fast CPU decoder's linear weights; auto: the fastest format on "
        "this CPU whose perplexity stays within 2% of float32 (w8a8, int8 activations too, "
        "only when asked for)",
    )
    integer_kernels: Literal["auto", "off"] = Field(
        default="auto",
        description="int4 layers and int8 LM heads multiply int8 activations on our AVX2 "
        "integer dot products where a C++ compiler is found (built in seconds, once), else "
        "on torch's kernels with bfloat16 activations; off: always torch's",
    )
    compile_decode: Literal["auto", "off"] = Field(
        default="auto",
        description="compile the fast CPU decoder's decode step with torch inductor (int8, "
        "int4 and w8a8 weights, where a C++ compiler is found; about a minute on 2 cores the "
        "first time, seconds once inductor's cache holds it); off: always eager",
    )
    device: str = "auto"
    max_running: int = Field(default=16, ge=1, description="sequences decoded together")
    max_waiting: int = Field(default=64, ge=0, description="queued requests before 429")
    max_prefill_tokens: int = Field(
        default=128,
        ge=1,
        description="prompt tokens computed per prefill wave, not counting those the "
        "prefix cache holds (more wait for the next)",
    )
    prefill_join: Literal["on", "off"] = Field(
        default="on",
        description="requests that arrive while a prefill pass is in its first half of "
        "layers join it (they catch up in a pass of their own), so a burst does not wait "
        "for a pass its first request started alone (fast CPU decoder)",
    )
    prefix_cache_tokens: int = Field(
        default=4096, ge=0, description="prompt-start tokens kept for reuse (0 turns it off)"
    )
    max_model_len: int | None = Field(default=None, ge=16)
    max_request_body_bytes: int = Field(
        default=16 * 2**20,
        ge=1024,
        description="larger request bodies get 413 before they are read in full (16 MiB)",
    )
    enable_lora_runtime_loading: bool = False
    lora_root: Path | None = Field(
        default=None, description="runtime-loaded adapters must lie under this directory"
    )
    instance_type: str | None = Field(
        default=None, description="GPU SKU of the node (vLLM parallelism from the estimator)"
    )
    disable_rate_limit: bool = False
    max_probe_steps: int | None = Field(
        default=None,
        ge=0,
        description="KAITO's legacy --kaito-max-probe-steps: validated, logged and ignored",
    )
    kv_cache_cpu_memory_utilization: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="share of free host RAM for vLLM's CPU KV-cache offload on GPUs; 0 disables",
    )

    def lora_allowed_root(self) -> Path:
        """The directory runtime-loaded adapters must be inside (default: the adapters dir)."""
        return (self.lora_root or self.adapters_dir).resolve()
