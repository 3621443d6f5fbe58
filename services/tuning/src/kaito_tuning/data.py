"""Loading the training data from the input directory in the layouts KAITO accepts.

Files: csv, json (an array of objects, or one object per line), jsonl, parquet and arrow
(Arrow IPC file or stream, as written by ``datasets``). Layouts, chosen by
``DatasetConfig``:

* conversational: ``messages_column`` (or a ``messages`` column) holding
  ``[{"role": ..., "content": ...}, ...]`` (a JSON string in csv files);
* prompt/completion: ``context_column`` + ``response_column`` (or ``prompt`` and
  ``completion`` columns);
* plain text: ``response_column`` (``text`` by default).

Every row is checked; the first bad one raises :class:`DataError` naming the file, the
row (1-based, data rows) and the column. The rows become a ``datasets.Dataset`` with the
columns TRL's ``SFTTrainer`` understands: ``messages``, ``prompt``/``completion`` or
``text``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from kaito_sdk.tuning_config import DatasetSection

__all__ = ["DataError", "Layout", "SplitData", "find_data_files", "load_rows", "load_split"]

EXTENSIONS: Final = ("csv", "json", "jsonl", "parquet", "arrow")
ROLES: Final = frozenset({"system", "user", "assistant", "tool"})

Layout = Literal["messages", "prompt_completion", "text"]


class DataError(ValueError):
    """Bad training data; ``file``, ``row`` and ``column`` say where when known."""

    def __init__(
        self, message: str, *, file: Path, row: int | None = None, column: str | None = None
    ) -> None:
        self.file, self.row, self.column = file, row, column
        where = str(file)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class SplitData:
    """Training rows and, when ``train_test_split`` < 1, held-out evaluation rows."""

    train: Dataset
    eval: Dataset | None
    layout: Layout


def find_data_files(input_dir: Path, config: DatasetSection) -> list[Path]:
    """The data files to read: ``dataset_path`` (file or directory) or the whole input."""
    root = input_dir.resolve()
    target = (root / config.dataset_path).resolve() if config.dataset_path else root
    if target != root and root not in target.parents:
        raise DataError("dataset_path leaves the input directory", file=target)
    if not target.exists():
        raise DataError("no such file or directory (DatasetConfig.dataset_path)", file=target)
    if target.is_file():
        return [target]
    files = sorted(
        path
        for path in target.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(target).parts)
        and (config.dataset_extension is not None or _extension(path) in EXTENSIONS)
    )
    if not files:
        raise DataError(f"no data files ({', '.join(EXTENSIONS)}) found", file=target)
    return files


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _read_file(path: Path, extension: str) -> Iterator[dict[str, Any]]:
    if extension == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)
    elif extension in ("json", "jsonl"):
        yield from _read_json(path, extension)
    elif extension == "parquet":
        yield from pq.read_table(path).to_pylist()
    elif extension == "arrow":
        yield from _read_arrow(path).to_pylist()
    else:
        raise DataError(
            f"unsupported extension {extension!r}; supported: {', '.join(EXTENSIONS)}",
            file=path,
        )


def _read_json(path: Path, extension: str) -> Iterator[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if extension == "json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc}", file=path) from None
        for index, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise DataError("must be a JSON object", file=path, row=index)
            yield row
        return
    row_number = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        row_number += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", file=path, row=row_number) from None
        if not isinstance(row, dict):
            raise DataError("must be a JSON object", file=path, row=row_number)
        yield row


def _read_arrow(path: Path) -> pa.Table:
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()


def _layout(columns: set[str], config: DatasetSection) -> tuple[Layout, tuple[str, ...]]:
    if config.messages_column:
        return "messages", (config.messages_column,)
    if config.context_column:
        return "prompt_completion", (config.context_column, config.response_column)
    if "messages" in columns:
        return "messages", ("messages",)
    if {"prompt", "completion"} <= columns and config.response_column not in columns:
        return "prompt_completion", ("prompt", "completion")
    return "text", (config.response_column,)


def _text(value: Any, *, file: Path, row: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError("must be a non-empty string", file=file, row=row, column=column)
    return value


def _messages(value: Any, *, file: Path, row: int, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(
                "must be a JSON list of {role, content} objects", file=file, row=row, column=column
            ) from None
    if not isinstance(value, list) or not value:
        raise DataError(
            "must be a non-empty list of {role, content} objects",
            file=file,
            row=row,
            column=column,
        )
    messages = []
    for turn, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(
                f"message {turn} must be an object with a string 'content'",
                file=file,
                row=row,
                column=column,
            )
        role = message.get("role")
        if role not in ROLES:
            raise DataError(
                f"message {turn} has role {role!r}; allowed roles: {', '.join(sorted(ROLES))}",
                file=file,
                row=row,
                column=column,
            )
        messages.append({"role": role, "content": message["content"]})
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError("has no assistant message to learn from", file=file, row=row, column=column)
    return messages


def _normalise(
    row: dict[str, Any], layout: Layout, columns: tuple[str, ...], *, file: Path, row_number: int
) -> dict[str, Any]:
    for column in columns:
        if column not in row or row[column] is None:
            present = ", ".join(sorted(str(key) for key in row if key is not None)) or "none"
            raise DataError(
                f"missing (columns present: {present})", file=file, row=row_number, column=column
            )
    if layout == "messages":
        return {
            "messages": _messages(row[columns[0]], file=file, row=row_number, column=columns[0])
        }
    if layout == "prompt_completion":
        prompt, completion = columns
        return {
            "prompt": _text(row[prompt], file=file, row=row_number, column=prompt),
            "completion": _text(row[completion], file=file, row=row_number, column=completion),
        }
    return {"text": _text(row[columns[0]], file=file, row=row_number, column=columns[0])}


def load_rows(files: list[Path], config: DatasetSection) -> tuple[Layout, list[dict[str, Any]]]:
    """Read and check every row of ``files``; the layout comes from the first row."""
    rows: list[dict[str, Any]] = []
    layout: Layout | None = None
    columns: tuple[str, ...] = ()
    for path in files:
        extension = config.dataset_extension or _extension(path)
        try:
            for number, row in enumerate(_read_file(path, extension), start=1):
                if layout is None:
                    layout, columns = _layout(set(row), config)
                rows.append(_normalise(row, layout, columns, file=path, row_number=number))
        except DataError:
            raise
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text: {exc.reason}", file=path) from None
        except csv.Error as exc:
            raise DataError(f"invalid CSV: {exc}", file=path) from None
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"cannot read as {extension}: {exc}", file=path) from None
    if layout is None:
        raise DataError("no rows", file=files[0] if len(files) == 1 else files[0].parent)
    return layout, rows


def load_split(input_dir: Path, config: DatasetSection) -> SplitData:
    """Find, read, check, shuffle and split the data as ``DatasetConfig`` says."""
    files = find_data_files(input_dir, config)
    layout, rows = load_rows(files, config)
    dataset = Dataset.from_list(rows)
    if config.shuffle_dataset:
        dataset = dataset.shuffle(seed=config.shuffle_seed)
    train_rows = max(1, round(len(dataset) * config.train_test_split))
    if train_rows >= len(dataset):
        return SplitData(train=dataset, eval=None, layout=layout)
    split = dataset.train_test_split(
        train_size=train_rows, test_size=len(dataset) - train_rows, shuffle=False
    )
    return SplitData(train=split["train"], eval=split["test"], layout=layout)
