"""What every OpenAI request shares: strict parsing, sampling options, usage and ids.

Every option we do not implement is either absent (so ``extra="forbid"`` turns it into a
400 naming the field) or present with a validator that rejects the unsupported values
(``n > 1``, penalties), so nothing is ever silently ignored.
"""

from __future__ import annotations

import re
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_STOP_SEQUENCES",
    "SEED_MAX",
    "SEED_MIN",
    "SamplingRequest",
    "StreamOptions",
    "StrictRequest",
    "Usage",
    "new_id",
    "require_unicode",
]

MAX_STOP_SEQUENCES = 4
#: ``seed`` must fit a signed 64-bit integer (torch's generator seed, as in vLLM).
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


def require_unicode(texts: list[str]) -> None:
    """Reject lone UTF-16 surrogates (``"\\ud800"`` in JSON): no tokenizer can encode them."""
    if any(_SURROGATE.search(text) for text in texts):
        raise ValueError("must be valid Unicode text (it contains a lone surrogate code point)")


def new_id(prefix: str) -> str:
    """A fresh OpenAI-style object id such as ``chatcmpl-<hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


class StrictRequest(BaseModel):
    """A request body: unknown fields are a 400 naming the field."""

    model_config = ConfigDict(extra="forbid")


class StreamOptions(StrictRequest):
    """``stream_options``: only ``include_usage`` exists."""

    include_usage: bool = False


class SamplingRequest(StrictRequest):
    """The fields chat and text completions share: model, sampling, stopping, streaming."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None  # accepted as metadata, as OpenAI does

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported; use 0")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        require_unicode(stops)
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        """Whether the stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
