"""Dataset loading: formats, layouts, shuffle/split, and every error path with its message."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from kaito_sdk.tuning_config import DatasetSection
from kaito_tuning.data import DataError, find_data_files, load_split

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _no_shuffle(**kwargs: object) -> DatasetSection:
    return DatasetSection(shuffle_dataset=False, train_test_split=1, **kwargs)


def test_conversational_jsonl_is_detected(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", [{"messages": MESSAGES, "extra": 1}] * 3)
    split = load_split(tmp_path, _no_shuffle())
    assert split.layout == "messages"
    assert split.train.column_names == ["messages"]
    assert split.train[0]["messages"] == MESSAGES
    assert split.eval is None


def test_prompt_completion_detected_in_json_array(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(4)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    split = load_split(tmp_path, _no_shuffle())
    assert split.layout == "prompt_completion"
    assert split.train.to_list() == rows


def test_named_context_and_response_columns_from_csv(tmp_path: Path) -> None:
    with (tmp_path / "qa.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows([["2+2?", "4"], ["3+3?", "6"]])
    config = _no_shuffle(context_column="question", response_column="answer")
    split = load_split(tmp_path, config)
    assert split.layout == "prompt_completion"
    assert split.train.to_list() == [
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": "3+3?", "completion": "6"},
    ]


def test_messages_column_as_json_string_in_csv(tmp_path: Path) -> None:
    with (tmp_path / "chat.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation"])
        writer.writerow([json.dumps(MESSAGES)])
    split = load_split(tmp_path, _no_shuffle(messages_column="conversation"))
    assert split.train[0]["messages"] == MESSAGES


def test_text_column_from_parquet_and_arrow(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "a.parquet")
    Dataset.from_dict({"text": ["three"]}).to_parquet(str(tmp_path / "unused.txt"))
    table = pa.table({"text": ["four", "five"]})
    with pa.ipc.new_stream(str(tmp_path / "b.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_file(str(tmp_path / "c.arrow"), table.schema) as writer:
        writer.write_table(pa.table({"text": ["six"]}))
    split = load_split(tmp_path, _no_shuffle())
    assert split.layout == "text"
    assert list(split.train["text"]) == ["one", "two", "four", "five", "six"]


def test_dataset_path_and_extension(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _jsonl(tmp_path / "sub" / "rows.data", [{"body": "hello"}])
    _jsonl(tmp_path / "other.jsonl", [{"body": "ignored"}])
    config = _no_shuffle(dataset_path="sub", dataset_extension="jsonl", response_column="body")
    assert list(load_split(tmp_path, config).train["text"]) == ["hello"]
    single = _no_shuffle(dataset_path="other.jsonl", response_column="body")
    assert list(load_split(tmp_path, single).train["text"]) == ["ignored"]


def test_hidden_files_and_other_extensions_are_skipped(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / ".partial.jsonl").write_text("not json")
    (tmp_path / "README.md").write_text("# readme")
    assert find_data_files(tmp_path, DatasetSection()) == [tmp_path / "a.jsonl"]


def test_shuffle_is_seeded_and_split_sizes(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", [{"text": f"row {i}"} for i in range(10)])
    first = load_split(tmp_path, DatasetSection(shuffle_seed=7, train_test_split=0.8))
    again = load_split(tmp_path, DatasetSection(shuffle_seed=7, train_test_split=0.8))
    other = load_split(tmp_path, DatasetSection(shuffle_seed=8, train_test_split=0.8))
    assert first.eval is not None
    assert (len(first.train), len(first.eval)) == (8, 2)
    assert list(first.train["text"]) == list(again.train["text"])
    assert list(first.train["text"]) != list(other.train["text"])
    assert sorted(list(first.train["text"]) + list(first.eval["text"])) == sorted(
        f"row {i}" for i in range(10)
    )
    ordered = load_split(tmp_path, DatasetSection(shuffle_dataset=False, train_test_split=0.5))
    assert list(ordered.train["text"]) == [f"row {i}" for i in range(5)]


def _error(tmp_path: Path, config: DatasetSection | None = None) -> DataError:
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, config or _no_shuffle())
    return caught.value


def test_missing_column_names_file_row_and_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": "ok"}, {"body": "no text"}])
    error = _error(tmp_path)
    assert (error.file, error.row, error.column) == (path, 3, "text")
    assert str(error) == f"{path}, row 3, column 'text': missing (columns present: body)"


def test_missing_named_column_in_first_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a"}])
    error = _error(tmp_path, _no_shuffle(context_column="prompt", response_column="answer"))
    assert str(error) == (
        f"{path}, row 1, column 'prompt': missing (columns present: answer, question)"
    )


def test_empty_text_value(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": "  "}])
    assert str(_error(tmp_path)) == f"{path}, row 2, column 'text': must be a non-empty string"


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": oops}\n')
    error = _error(tmp_path)
    assert (error.row, error.column) == (2, None)
    assert str(error).startswith(f"{path}, row 2: invalid JSON: Expecting value")


def test_json_row_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[{"text": "ok"}, 5]')
    assert str(_error(tmp_path)) == f"{path}, row 2: must be a JSON object"


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ("not json", "must be a JSON list of {role, content} objects"),
        ([], "must be a non-empty list of {role, content} objects"),
        ([{"role": "user"}], "message 1 must be an object with a string 'content'"),
        (
            [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}],
            "message 2 has role 'robot'; allowed roles: assistant, system, tool, user",
        ),
        ([{"role": "user", "content": "hi"}], "has no assistant message to learn from"),
    ],
)
def test_bad_messages(tmp_path: Path, messages: object, rule: str) -> None:
    path = _jsonl(tmp_path / "a.jsonl", [{"messages": MESSAGES}, {"messages": messages}])
    assert str(_error(tmp_path)) == f"{path}, row 2, column 'messages': {rule}"


def test_no_data_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert str(_error(tmp_path)) == (
        f"{tmp_path.resolve()}: no data files (csv, json, jsonl, parquet, arrow) found"
    )


def test_missing_dataset_path(tmp_path: Path) -> None:
    error = _error(tmp_path, _no_shuffle(dataset_path="nope.jsonl"))
    assert str(error) == (
        f"{tmp_path.resolve() / 'nope.jsonl'}: no such file or directory "
        "(DatasetConfig.dataset_path)"
    )


def test_symlink_out_of_the_input_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _jsonl(outside / "secret.jsonl", [{"text": "x"}])
    data = tmp_path / "data"
    data.mkdir()
    (data / "link").symlink_to(outside)
    error = _error(data, _no_shuffle(dataset_path="link"))
    assert str(error) == f"{outside}: dataset_path leaves the input directory"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("\n")
    assert str(_error(tmp_path)) == f"{path}: no rows"


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    assert str(_error(tmp_path)).startswith(f"{path}: cannot read as parquet:")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"text\n\xff\xfe\n")
    assert str(_error(tmp_path)).startswith(f"{path}: not UTF-8 text:")
