"""Bad input gets OpenAI's error shape with the right status, naming the field and the rule,
never a 500 or a traceback. Runs the real app and HTTP stack on the fake engine (no torch):
what is checked here is parsing, validation and error mapping, not generation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_inference.app import create_app
from kaito_inference.engines.fake import FakeEngine
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import serve_app, wait_healthy

BODY_LIMIT = 64 * 1024
CONTEXT = 1024
CHAT = [{"role": "user", "content": "hello model"}]


class ExplodingEngine(FakeEngine):
    """A fake whose chat template fails the way a bug would."""

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        raise RuntimeError("a bug in the chat template")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = InferenceSettings(
        adapters_dir=Path("/nonexistent"), max_request_body_bytes=BODY_LIMIT
    )
    engine = FakeEngine(model="fake", max_model_len=CONTEXT)
    with serve_app(create_app(settings, engine=engine)) as base:
        wait_healthy(base, timeout=30)
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def post(url: str, path: str, payload: dict[str, Any]) -> httpx.Response:
    """POST ``payload`` as ASCII JSON, so a lone surrogate goes out as ``\\ud800``."""
    headers = {"content-type": "application/json"}
    return httpx.post(f"{url}{path}", content=json.dumps(payload), headers=headers, timeout=30)


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body, checked to be OpenAI's shape with ``status``."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"stream_options": {"include_usage": True}}, None),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": CONTEXT}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x" * CONTEXT}]}, "messages"),
    ],
)
def test_bad_chat_requests_are_400_naming_the_field(
    url: str, body: dict[str, Any], param: str | None
) -> None:
    error = openai_error(
        post(url, "/v1/chat/completions", {"model": "fake", "messages": CHAT, **body}), 400
    )
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_context_overflow_says_how_many_tokens(url: str) -> None:
    error = openai_error(
        post(url, "/v1/completions", {"model": "fake", "prompt": "x" * CONTEXT}), 400
    )
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")
    assert f"{CONTEXT} tokens" in error["message"]
    empty = openai_error(post(url, "/v1/completions", {"model": "fake", "prompt": ""}), 400)
    assert empty["param"] == "prompt"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a\ud800b"}]},
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content",
        ),
        ("/v1/completions", {"prompt": "\ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["x\udc00"]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "stop": ["\ud800"]}, "stop"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    url: str, path: str, body: dict[str, Any], param: str, stream: bool
) -> None:
    payload = {"model": "fake", "max_tokens": 2, "stream": stream, **body}
    error = openai_error(post(url, path, payload), 400)
    assert error["param"] == param
    assert "surrogate" in error["message"]
    assert error["code"] == "invalid_value"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "stop": 5}, "stop"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "\ud800": 1}, None),
        ({"model": "\ud800", "prompt": "x"}, "model"),
    ],
)
def test_wrong_types_name_the_field_not_the_union_member(
    url: str, body: dict[str, Any], param: str | None
) -> None:
    error = openai_error(post(url, "/v1/completions", {"model": "fake", **body}), 400)
    assert error["param"] == param


def test_malformed_json_is_400_without_a_param(url: str) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/v1/completions", content='{"model": "fake", ', headers=headers)
    error = openai_error(response, 400)
    assert (error["code"], error["param"]) == ("invalid_json", None)
    assert error["message"].startswith("the request body is not valid JSON")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1])
def test_out_of_range_seed_is_400_naming_seed(url: str, path: str, seed: int) -> None:
    body = {"messages": CHAT} if path.endswith("chat/completions") else {"prompt": "x"}
    error = openai_error(
        post(url, path, {"model": "fake", "max_tokens": 2, "seed": seed, **body}), 400
    )
    assert error["param"] == "seed"
    assert str(2**63 - 1) in error["message"] or str(-(2**63)) in error["message"]


def test_openai_client_sees_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="fake", prompt=["a", "b"])
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="fake", prompt="x", echo=True)


def test_bodies_over_the_limit_are_413_declared_or_chunked(url: str, client: openai.OpenAI) -> None:
    prompt = "word " * (BODY_LIMIT // 5 + 10)
    declared = openai_error(post(url, "/v1/completions", {"model": "fake", "prompt": prompt}), 413)
    assert declared["code"] == "request_too_large"
    assert "KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES" in declared["message"]

    raw = b'{"model": "fake", "prompt": "' + prompt.encode() + b'"}'
    pieces = (raw[i : i + 8192] for i in range(0, len(raw), 8192))  # no Content-Length
    chunked = httpx.post(
        f"{url}/v1/completions",
        content=pieces,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in chunked.request.headers
    assert openai_error(chunked, 413)["code"] == "request_too_large"

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": prompt}], max_tokens=2
        )
    assert refused.value.status_code == 413
    fits = post(url, "/v1/completions", {"model": "fake", "prompt": "word " * 100, "max_tokens": 2})
    assert fits.status_code == 200, fits.text


def test_unknown_routes_and_methods_keep_their_status_in_openai_shape(url: str) -> None:
    assert openai_error(httpx.get(f"{url}/v1/nothing-here"), 404)["type"] == "not_found_error"
    assert openai_error(httpx.get(f"{url}/v1/chat/completions"), 405)["message"]


def test_an_engine_bug_is_a_500_without_a_traceback() -> None:
    settings = InferenceSettings(adapters_dir=Path("/nonexistent"))
    with serve_app(create_app(settings, engine=ExplodingEngine(model="fake"))) as base:
        wait_healthy(base, timeout=30)
        error = openai_error(
            post(base, "/v1/chat/completions", {"model": "fake", "messages": CHAT}), 500
        )
    assert (error["type"], error["message"]) == ("server_error", "internal server error")
    assert "Traceback" not in json.dumps(error)
