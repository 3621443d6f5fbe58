"""Settings of the tuning job, read once from ``KAITO_TUNING_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_sdk.contracts.tuning import METRICS_PORT

__all__ = ["TuningSettings"]


class TuningSettings(BaseSettings):
    """Operational knobs of ``kaito-tuning`` (hyperparameters live in the training config)."""

    model_config = SettingsConfigDict(env_prefix="KAITO_TUNING_", extra="ignore")

    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint while training; 0 picks a free port."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    """Address the metrics endpoint binds to."""
    fetch_max_bytes: int = Field(default=10 * 1024**3, gt=0)
    """Largest file ``fetch`` downloads (bytes)."""
    fetch_retries: int = Field(default=3, ge=0)
    """Retries after a connection error, a 429 or a 5xx answer."""
    fetch_backoff_s: float = Field(default=2.0, ge=0)
    """First wait between retries (doubles each time)."""
    fetch_timeout_s: float = Field(default=60.0, gt=0)
    """Connect/read timeout of each request."""
    fetch_max_redirects: int = Field(default=5, ge=0)
    """Redirects followed (each target is checked like the original URL)."""
    fetch_allow_loopback: bool = False
    """Tests only: let ``fetch`` reach loopback addresses (127.0.0.0/8, ::1)."""
    log_interval_s: float = Field(default=5.0, ge=0)
    """Seconds between download progress lines."""
