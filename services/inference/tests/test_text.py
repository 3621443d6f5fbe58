"""Incremental detokenisation with stop strings (tiny model's byte-level BPE tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from kaito_inference.engines.text import IncrementalText


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def feed(tokenizer: object, text: str, stops: list[str]) -> tuple[list[str], IncrementalText]:
    stream = IncrementalText(tokenizer, stops)
    deltas = []
    for token in tokenizer(text)["input_ids"]:  # type: ignore[operator]  # the tokenizer's call is loosely typed
        deltas.append(stream.push(token))
        if stream.stopped:
            break
    else:
        deltas.append(stream.flush())
    return deltas, stream


def test_no_stop_reassembles_the_text(tokenizer: object) -> None:
    text = "the model streams tokens, then ünïcode ✓ and more"
    deltas, stream = feed(tokenizer, text, [])
    assert "".join(deltas) == text
    assert not stream.stopped


def test_stop_string_is_cut_and_never_leaks(tokenizer: object) -> None:
    deltas, stream = feed(tokenizer, "one two three STOP four five", ["STOP"])
    assert stream.stopped
    assert "".join(deltas) == "one two three "
    assert all("S" not in d for d in deltas)


def test_partial_stop_is_held_back_then_released(tokenizer: object) -> None:
    deltas, stream = feed(tokenizer, "alpha beta STOx gamma", ["STOP"])
    assert not stream.stopped
    assert "".join(deltas) == "alpha beta STOx gamma"


def test_earliest_of_several_stops_wins(tokenizer: object) -> None:
    deltas, _ = feed(tokenizer, "a b. c! d", ["!", "."])
    assert "".join(deltas) == "a b"
