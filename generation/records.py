"""Import files read record by record, each with the line number an error message should name.

JSONL: one JSON object per non-blank line. CSV: a header row, then one record per row (the number is
the line the row starts on). Both are UTF-8 (a byte-order mark is accepted).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from generation.errors import InvalidFile, LineProblem

FORMATS = ("jsonl", "csv")
T = TypeVar("T")


def records_format(name: str, fmt: str | None = None) -> str:
    """The format to read ``name`` as: ``fmt`` if given, else from the extension (default JSONL)."""
    if fmt:
        if fmt not in FORMATS:
            raise InvalidFile(name=name, problems=[LineProblem(0, f"unknown format {fmt!r}")])
        return fmt
    return "csv" if name.lower().endswith(".csv") else "jsonl"


def records_read(
    stream: IO[bytes], *, name: str, fmt: str, csv_columns: tuple[str, ...] = ()
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)``; a line that does not parse yields ``(n, LineProblem)``.

    A CSV header lacking one of ``csv_columns`` fails the whole file at line 1.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        if fmt == "csv":
            yield from _csv_records(text, name=name, columns=csv_columns)
        else:
            yield from _jsonl_records(text)
    except UnicodeDecodeError as exc:
        raise InvalidFile(name=name, problems=[LineProblem(0, f"not UTF-8 text ({exc.reason})")]) from exc
    finally:
        text.detach()


def _jsonl_records(text: IO[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, LineProblem(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            yield number, LineProblem(number, "JSON nested too deeply")
            continue
        if not isinstance(record, dict):
            yield number, LineProblem(number, "expected a JSON object")
            continue
        yield number, record


def _csv_records(text: IO[str], *, name: str, columns: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    # csv's own field limit (131,072 characters) would stop the file with an error of its own; the
    # length caps (config.limits) judge each field instead, and the upload cap bounds the whole.
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    missing = [column for column in columns if column not in header]
    if missing:
        problem = f"the CSV header has no {', '.join(repr(c) for c in missing)} column (found: {header})"
        raise InvalidFile(name=name, problems=[LineProblem(1, problem)])
    line = reader.line_num + 1
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:  # the file cannot be read on past this line
            raise InvalidFile(name=name, problems=[LineProblem(line, f"not valid CSV ({exc})")]) from exc
        if None in row:
            yield line, LineProblem(line, "more fields than the header has")
        elif any(value is None for value in row.values()):
            yield line, LineProblem(line, "fewer fields than the header has")
        else:
            yield line, row
        line = reader.line_num + 1


def records_parse(
    records: Iterator[tuple[int, Any]] | list[tuple[int, Any]],
    parse: Callable[[int, dict[str, Any]], T | LineProblem],
    *,
    name: str,
    empty: str,
) -> list[T]:
    """Parse every record; raise InvalidFile listing every bad one (or ``empty`` when there are none)."""
    parsed: list[T] = []
    problems: list[LineProblem] = []
    for line, record in records:
        if isinstance(record, LineProblem):
            result: T | LineProblem = record
        elif not isinstance(record, dict):
            result = LineProblem(line, "expected a JSON object")
        else:
            result = parse(line, record)
        (problems if isinstance(result, LineProblem) else parsed).append(result)  # type: ignore[arg-type]
    if problems:
        raise InvalidFile(name=name, problems=problems)
    if not parsed:
        raise InvalidFile(name=name, problems=[LineProblem(0, empty)])
    return parsed


def records_numbered(objects: list[Any]) -> list[tuple[int, Any]]:
    """Already-decoded JSON objects (an API body) numbered like lines: item i is 'line' i+1."""
    return list(enumerate(objects, start=1))
