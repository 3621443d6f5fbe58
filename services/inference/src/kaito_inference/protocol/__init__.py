"""OpenAI wire models (pydantic only): the requests we accept and the bodies we send."""

from kaito_inference.protocol.chat import ChatCompletionRequest, ChatMessage, TextPart
from kaito_inference.protocol.common import SamplingRequest, StreamOptions, Usage, new_id
from kaito_inference.protocol.completions import CompletionRequest
from kaito_inference.protocol.errors import ErrorBody, ErrorResponse
from kaito_inference.protocol.models import (
    LoadLoraRequest,
    ModelCard,
    ModelList,
    UnloadLoraRequest,
)

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ErrorBody",
    "ErrorResponse",
    "LoadLoraRequest",
    "ModelCard",
    "ModelList",
    "SamplingRequest",
    "StreamOptions",
    "TextPart",
    "UnloadLoraRequest",
    "Usage",
    "new_id",
]
