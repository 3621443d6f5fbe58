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


class CountingTokenizer:
    """Wraps a tokenizer and records how many ids each ``decode`` call got."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def decode(self, ids: list[int], **kwargs: object) -> str:
        self.lengths.append(len(ids))
        return self.tokenizer.decode(ids, **kwargs)  # type: ignore[attr-defined, no-any-return]  # a transformers tokenizer


def test_a_long_answer_decodes_short_windows_and_the_same_text(tokenizer: object) -> None:
    text = "Streams of tokens: ünïcode ✓, emoji 🦙🚀 and 数字 " * 40
    ids = tokenizer(text)["input_ids"]  # type: ignore[operator]  # the tokenizer's call is loosely typed
    counting = CountingTokenizer(tokenizer)
    stream = IncrementalText(counting, [])
    deltas = [stream.push(token) for token in ids] + [stream.flush()]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]  # a transformers tokenizer
    assert len(ids) > 400
    assert max(counting.lengths) <= 8  # a window around the newest token, not every id


def test_the_served_models_tokenizer_reassembles_its_text(smollm2_dir: Path) -> None:
    smollm2 = AutoTokenizer.from_pretrained(smollm2_dir)
    text = "  Leading spaces, tabs\tand\nnew lines; café, 🦙, 東京 — done."
    deltas, stream = feed(smollm2, text, ["never"])
    assert "".join(deltas) == text
    assert not stream.stopped
