"""One split file: a JSON list of preference examples, read and checked; what extraction reads.

Each example has a non-empty ``prompt`` and a ``responses`` mapping (text -> score) with at
least two responses, exactly one scored 1.0 and the others 0.0. Other fields are metadata.
No key appears twice in an object (JSON parsers keep only the last), and the prompt and responses
are text: no lone surrogate (``"\\ud800"``), which no tokenizer can encode. Where such files live
(a GENIES data directory, names, the demo data) is distributions/data.py's concern.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import UserError

LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")  # JSON's "\ud800" escape: a str that is not UTF-8 text


class JsonObject(dict):
    """A parsed JSON object that remembers the keys it held more than once (json keeps only the last value)."""

    duplicates: tuple[str, ...] = ()


def json_object(pairs: list[tuple[str, object]]) -> JsonObject:
    parsed = JsonObject(pairs)
    if len(parsed) < len(pairs):
        parsed.duplicates = tuple(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
    return parsed


@dataclass(frozen=True)
class Example:
    index: int  # position in the file, kept when bad examples are skipped
    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def best(self) -> int:
        return self.scores.index(1.0)


@dataclass(frozen=True)
class Problem:
    path: Path
    index: int | None  # None: the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}" if self.index is None else f"{self.path}: example {self.index}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Split:
    dataset: str
    split: str
    path: Path
    examples: tuple[Example, ...]
    fingerprint: str
    skipped: tuple[Problem, ...] = field(default=())

    @property
    def n_sequences(self) -> int:
        return sum(len(e.responses) for e in self.examples)


def fingerprint_bytes(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def fingerprint(path: Path) -> str:
    return fingerprint_bytes(Path(path).read_bytes())


_seen_fingerprints: dict[tuple[str, int, int], str] = {}


def check_data_unchanged(meta: dict, url: str) -> None:
    """Refuse a store whose data file, where it exists on this machine, changed since extraction.

    The store's labels are its own copy, so its numbers describe the file as it was; a user who
    edited the file expects them to describe the file as it is. Without the file (a laptop that
    holds only the stores) there is nothing to compare, and the store's own labels are used.
    """
    path = Path(str(meta.get("data_file") or ""))
    if not meta.get("fingerprint") or not path.is_file():
        return
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _seen_fingerprints:
        _seen_fingerprints[key] = fingerprint(path)
    if _seen_fingerprints[key] != meta["fingerprint"]:
        raise UserError(f"{url}: the data file {path} changed since this store was extracted from it; re-extract "
                        "with the same `actstore extract` command and --overwrite")


def check_example(raw: object) -> str | None:
    """What is wrong with one raw example, or None when it is valid."""
    if not isinstance(raw, dict):
        return f"expected an object, got {_kind(raw)}"
    if getattr(raw, "duplicates", ()):
        return f"field {raw.duplicates[0]!r} appears more than once"
    prompt = raw.get("prompt")
    if problem := _field_problem("prompt", prompt, str, "a string"):
        return problem
    if not prompt.strip():
        return "empty prompt"
    if LONE_SURROGATE.search(prompt):
        return f"prompt {_not_text(prompt)}"
    responses = raw.get("responses")
    if problem := _field_problem("responses", responses, dict, "an object of response -> score"):
        return problem
    if getattr(responses, "duplicates", ()):
        return (f"response {_short(responses.duplicates[0])} appears more than once in 'responses' "
                "(each response is one key, with one score)")
    if len(responses) < 2:
        return f"needs at least two responses, has {len(responses)}"
    for text, score in responses.items():
        if LONE_SURROGATE.search(text):
            return f"response {_short(text)} {_not_text(text)}"
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return f"score of response {_short(text)} must be a number, got {_kind(score)}"
        if score not in (0, 1):
            return f"score of response {_short(text)} is {score}; scores must be 1.0 (preferred) or 0.0"
    n_best = sum(1 for s in responses.values() if s == 1)
    if n_best != 1:
        return f"exactly one response must score 1.0, found {n_best}"
    return None


def read_examples(path: Path) -> tuple[list[object], bytes]:
    """Parse a split file into raw examples; a file-level problem raises UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        data = json.loads(text, object_pairs_hook=json_object)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of examples, got {_kind(data)}")
    if not data:
        raise UserError(f"{path}: holds no examples")
    return data, raw


def validate_file(path: Path) -> list[Problem]:
    """Every problem in one split file (file-level problems stop the scan)."""
    try:
        data, _ = read_examples(path)
    except UserError as err:
        return [Problem(Path(path), None, str(err).split(": ", 1)[-1])]
    problems = []
    for index, raw in enumerate(data):
        message = check_example(raw)
        if message:
            problems.append(Problem(Path(path), index, message))
    return problems


def load_split_file(path: Path, *, dataset: str, split: str, skip_bad: bool = False) -> Split:
    data, raw = read_examples(path)
    examples, skipped = [], []
    for index, item in enumerate(data):
        message = check_example(item)
        if message:
            problem = Problem(Path(path), index, message)
            if not skip_bad:
                raise UserError(f"{problem} (use --skip-bad to leave such examples out)")
            skipped.append(problem)
            continue
        responses = tuple(item["responses"].keys())
        scores = tuple(float(item["responses"][r]) for r in responses)
        examples.append(Example(index, item["prompt"], responses, scores))
    if not examples:
        raise UserError(f"{path}: no valid examples left after skipping {len(skipped)} bad ones")
    return Split(dataset, split, Path(path), tuple(examples), fingerprint_bytes(raw), tuple(skipped))


def _field_problem(name: str, value: object, kind: type, described: str) -> str | None:
    if value is None:
        return f"missing field {name!r}"
    if not isinstance(value, kind):
        return f"{name!r} must be {described}, got {_kind(value)}"
    return None


def _kind(value: object) -> str:
    return "dict" if isinstance(value, dict) else type(value).__name__  # not JsonObject


def _not_text(text: str) -> str:
    position = LONE_SURROGATE.search(text).start()
    return (f"holds a lone surrogate {text[position]!r} at character {position} "
            "(a JSON \\u escape that is not a character; it cannot be encoded as UTF-8)")


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")
