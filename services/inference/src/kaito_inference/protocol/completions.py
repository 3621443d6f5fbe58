"""``POST /v1/completions``: the request model (one prompt per request)."""

from __future__ import annotations

from pydantic import Field, field_validator

from kaito_inference.protocol.common import SamplingRequest, require_unicode

__all__ = ["CompletionRequest"]


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions`` (one prompt per request)."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        require_unicode([value] if isinstance(value, str) else value)
        return value

    def prompt_text(self) -> str:
        """The single prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("logprobs are not supported")
        return value
