"""JSON, JSON Lines and CSV files read row by row, each row as it is.

A column-wide reader (``datasets``, pandas) infers one type per column, so one odd row changes
the others (a quoted ``"City"`` lost its quotes) or sinks them all, and a bad line surfaces as one
error without its place. Here each row is parsed on its own: a row that cannot be read (malformed
JSON, not an object, a key twice, a lone surrogate, bytes that are not UTF-8, a CSV row with more
or fewer cells than the header) is rejected with its line and the reason, and the others are
kept exactly as written. A file that cannot be read at all (not UTF-8 throughout a JSON array,
a JSON array that breaks off, an empty CSV) is one ``UserError`` naming where.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from common import UserError
from distributions.split_file import LONE_SURROGATE, json_object

TEXT_SUFFIXES = (".json", ".jsonl", ".csv")


@dataclass(frozen=True)
class SourceRow:
    line: int  # where the row starts in its file, from 1
    values: dict | None  # None: the row could not be read
    problem: str | None = None


def read_rows(path: Path) -> list[SourceRow]:
    """Every row of a .json (a list of objects, or JSON Lines), .jsonl or .csv file."""
    data = path.read_bytes()
    if path.suffix.lower() == ".csv":
        return _csv_rows(path, _text(path, data))
    if path.suffix.lower() == ".json":
        stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped.startswith(b"["):
            return _array_rows(path, _text(path, data))
    return _json_lines(data)


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # an Excel BOM is not part of the first column's name
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as "
                        "UTF-8") from None


def _row(line: int, parsed: object) -> SourceRow:
    if not isinstance(parsed, dict):
        return SourceRow(line, None, f"expected a JSON object, got {type(parsed).__name__}")
    if getattr(parsed, "duplicates", ()):
        return SourceRow(line, None, f"field {parsed.duplicates[0]!r} appears more than once")
    surrogate = _lone_surrogate(parsed)
    if surrogate:
        return SourceRow(line, None, f"{surrogate} holds a lone surrogate (a \\ud800-style escape that is not text)")
    return SourceRow(line, parsed)


def _lone_surrogate(value: object, name: str = "") -> str | None:
    if isinstance(value, str):
        return f"field {name!r}" if LONE_SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and LONE_SURROGATE.search(key):
            return f"a key of field {name!r}"
        found = _lone_surrogate(item, name or str(key))
        if found:
            return found
    return None


def _json_lines(data: bytes) -> list[SourceRow]:
    rows = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            rows.append(SourceRow(number, None, f"not UTF-8 text (byte 0x{raw[err.start]:02x})"))
            continue
        try:
            rows.append(_row(number, json.loads(text, object_pairs_hook=json_object)))
        except json.JSONDecodeError as err:
            rows.append(SourceRow(number, None, f"not valid JSON (column {err.colno}: {err.msg})"))
    return rows


def _array_rows(path: Path, text: str) -> list[SourceRow]:
    """The elements of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder(object_pairs_hook=json_object)
    position = _skip_space(text, text.index("[") + 1)
    rows = []
    while position < len(text) and text[position] != "]":
        line = text.count("\n", 0, position) + 1
        try:
            parsed, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {err.lineno}: not valid JSON (column {err.colno}: {err.msg}); the rows "
                            "after it cannot be told apart") from None
        rows.append(_row(line, parsed))
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
        elif position >= len(text) or text[position] != "]":
            raise UserError(f"{path}: line {text.count(chr(10), 0, position) + 1}: not valid JSON (expected ',' or "
                            "']' after a row)")
    if position >= len(text):
        raise UserError(f"{path}: not valid JSON (the list is not closed with ']')")
    return rows


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _csv_rows(path: Path, text: str) -> list[SourceRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise UserError(f"{path}: line 1: not a CSV header ({err})") from None
    if not header or not any(cell.strip() for cell in header):
        raise UserError(f"{path}: empty CSV (no header row naming the columns)")
    if len(set(header)) < len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise UserError(f"{path}: line 1: column {twice!r} is named twice in the header")
    rows = []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            rows.append(SourceRow(start, None, f"not a CSV row ({err})"))
            break  # the reader cannot resynchronise after a broken quote
        if cells and len(cells) != len(header):
            rows.append(SourceRow(start, None, f"{len(cells)} cells, but the header names {len(header)} columns"))
        elif cells:
            # every cell is the text it is; only an empty cell is missing
            rows.append(SourceRow(start, {name: cell if cell != "" else None for name, cell in zip(header, cells)}))
        start = reader.line_num + 1
    return rows
