"""Trainer callback that logs progress with rates and keeps the metrics current."""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kaito_tuning.metrics import TrainingMetrics

__all__ = ["ProgressCallback", "format_eta"]

logger = logging.getLogger(__name__)


def format_eta(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class ProgressCallback(TrainerCallback):
    """Logs loss, steps/s, tokens/s and ETA at every logging step.

    Tokens come from TRL's cumulative ``num_tokens`` log entry. Rates are over the last
    logging interval; the ETA uses the average rate since this process started training
    (a resumed run does not count the steps it skipped).
    """

    def __init__(self, metrics: TrainingMetrics | None = None) -> None:
        self.metrics = metrics
        self.history: list[dict[str, float]] = []
        self._start_time = 0.0
        self._start_step = 0
        self._last = (0.0, 0, 0.0)  # time, step, tokens

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Remember where this process started (the step is > 0 after a resume)."""
        now = time.monotonic()
        self._start_time, self._start_step = now, state.global_step
        self._last = (now, state.global_step, 0.0)
        if self.metrics is not None:
            self.metrics.max_steps.set(state.max_steps)
        resumed = f" (resuming at step {state.global_step})" if state.global_step else ""
        logger.info("training: %d steps%s", state.max_steps, resumed)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Turn a Trainer log entry into a progress line and metric updates."""
        if not logs or "loss" not in logs:
            return
        now, step = time.monotonic(), state.global_step
        tokens = float(logs.get("num_tokens", 0.0))
        last_time, last_step, last_tokens = self._last
        interval = max(now - last_time, 1e-9)
        steps_per_s = (step - last_step) / interval
        tokens_per_s = (tokens - last_tokens) / interval if tokens >= last_tokens else 0.0
        self._last = (now, step, tokens)
        done = step - self._start_step
        average = done / max(now - self._start_time, 1e-9)
        eta = (state.max_steps - step) / average if average > 0 else 0.0
        entry = {
            "time": now,
            "cpu_time": time.process_time(),
            "step": float(step),
            "tokens": tokens,
            "loss": float(logs["loss"]),
            "steps_per_second": steps_per_s,
            "tokens_per_second": tokens_per_s,
            "eta_seconds": eta,
        }
        self.history.append(entry)
        logger.info(
            "step %d/%d loss %.4f | %.3f steps/s | %.1f tokens/s | ETA %s",
            step,
            state.max_steps,
            entry["loss"],
            steps_per_s,
            tokens_per_s,
            format_eta(eta),
        )
        if self.metrics is not None:
            self.metrics.step.set(step)
            self.metrics.epoch.set(state.epoch or 0.0)
            self.metrics.loss.set(entry["loss"])
            self.metrics.steps_per_second.set(steps_per_s)
            self.metrics.tokens_per_second.set(tokens_per_s)
            self.metrics.tokens.set(tokens)
            self.metrics.eta_seconds.set(eta)
