"""``genies data import``: preference or ranked data in the formats researchers have, into a GENIES distribution.

JSON, JSONL and CSV files are read row by row, each row as it is (``distributions.source_files``);
Parquet files and directories saved with ``save_to_disk`` by Hugging Face ``datasets``. Each row becomes one GENIES example (prompt + responses, the best scored 1.0):

- ``preference``: ``prompt`` + ``chosen`` + ``rejected`` texts; or the conversational variant, where
  chosen/rejected are lists of ``{role, content}`` messages and the prompt is the one user turn
  before the last (assistant) message;
- ``ranked``: ``responses`` (a list of texts) + ``scores`` (a list of numbers); the highest score
  is the best, a tie at the top rejects the row;
- ``genies``: ``prompt`` + ``responses`` (text -> score), as in the GENIES files.

A row that cannot become a valid example is rejected and reported by file, row and reason; the
good rows are written. A ``split`` column (or a saved DatasetDict's train/test splits) is kept;
otherwise the rows are split at random (seeded) by ``split_ratio``. The distribution directory is
written whole or not at all.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from common.atomic import atomic_directory
from common import UserError, demo_data_dir, describe
from common.names import check_name
from common.settings import SEED_MAX, check_choices, setting
from distributions.split_file import check_example, load_split_file
from distributions.data import DATA_DIR_HELP, SPLITS, distributions_dir, resolve_data_dir
from distributions.source_files import TEXT_SUFFIXES, read_rows

Format = Literal["auto", "genies", "preference", "ranked"]
ACCEPTED = "a JSON, JSONL, CSV or Parquet file, or a directory saved with datasets' save_to_disk"
INSTALL = "pip install 'genies-toolkit[import]' (or: pip install datasets)"


@dataclass(frozen=True)
class Columns:
    """Which source column holds what."""

    prompt: str = setting("prompt", "Column of the prompt.", option="--prompt-column")
    chosen: str = setting("chosen", "Column of the preferred response (preference format).", option="--chosen-column")
    rejected: str = setting("rejected", "Column of the other response (preference format).", option="--rejected-column")
    responses: str = setting("responses", "Column of the responses (ranked and genies formats).",
                             option="--responses-column")
    scores: str = setting("scores", "Column of the scores (ranked format).", option="--scores-column")
    split: str = setting("split", "Column naming each row's split (train/test), if any.", option="--split-column")


@dataclass(frozen=True)
class ImportConfig:
    """`genies data import`: each documented field is one of its options (SOURCE its argument)."""

    source: Path = setting(help="JSON, JSONL, CSV, Parquet, or a saved `datasets` directory.", argument=True)
    name: str = setting(help="Name of the distribution to write.")
    format: Format = setting("auto", "preference: prompt+chosen+rejected (texts or message lists); ranked: "
                                     "responses+scores lists; genies: prompt+responses (text -> score); auto: told "
                                     "by the columns.")
    split_ratio: float = setting(0.8, "Share of rows in train when the source has no split column.")
    seed: int = setting(0, "Seeds the train/test split.", at_least=0, at_most=SEED_MAX)
    columns: Columns = field(default_factory=Columns)
    overwrite: bool = setting(False, "Replace an existing distribution of that name.")
    data_dir: str | None = setting(None, DATA_DIR_HELP)

    def __post_init__(self):
        check_choices(self)
        if not 0 < self.split_ratio < 1:
            raise UserError(f"--split-ratio must be between 0 and 1 (the share of rows in train), got {self.split_ratio}")
        check_name(self.name)


@dataclass(frozen=True)
class Rejected:
    where: str  # the file (and the saved split of a DatasetDict)
    position: str  # "line N" in a text file (from 1), "row N" in a Parquet file or saved dataset (from 0)
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.position}: {self.reason}"


@dataclass(frozen=True)
class ImportResult:
    directory: Path
    format: str
    n_train: int
    n_test: int
    rejected: tuple[Rejected, ...]
    contradictions: tuple[str, ...] = ()  # the same prompt and responses preferring different responses


@dataclass(frozen=True)
class SourceTable:
    """The rows of the source, each with where it came from and the split it named (None: not named),
    and the rows that could not be read at all."""

    rows: list[tuple[str, str, str | None, dict]]
    columns: tuple[str, ...]
    unreadable: tuple[Rejected, ...] = ()


def import_distribution(config: ImportConfig, *, on_rejected: Callable[[Rejected], None] | None = None) -> ImportResult:
    """Read, convert, validate and write ``config.source`` as distribution ``config.name``."""
    data_dirs = resolve_data_dir(config.data_dir)
    data_dir = data_dirs.write_to
    if data_dir.resolve() == demo_data_dir().resolve():
        raise UserError(f"{data_dir}: the bundled demo data is rebuilt by the toolkit; import into your own --data-dir")
    target = distributions_dir(data_dir) / config.name
    if target.exists() and not config.overwrite:
        raise UserError(f"{target}: distribution {config.name!r} already exists; pass --overwrite to replace it")
    elsewhere = [d for d in data_dirs.dirs if d != data_dir and (distributions_dir(d) / config.name).is_dir()]
    if elsewhere:  # a name on the search path twice would be refused wherever it is used
        raise UserError(f"{distributions_dir(elsewhere[0]) / config.name}: distribution {config.name!r} exists in "
                        f"another data directory on the search path; import it under another --name")
    scratch = distributions_dir(data_dir) / IMPORT_SCRATCH
    if not _importing(data_dir):
        shutil.rmtree(scratch, ignore_errors=True)
    table = read_source(Path(config.source), config.columns.split, scratch)
    form = detect_format(table.columns, config.columns, str(config.source)) if config.format == "auto" else config.format
    check_columns(form, table.columns, config.columns, str(config.source))
    convert = CONVERTERS[form]
    examples: dict[str | None, list[dict]] = {}
    origins: list[tuple[str, str, dict]] = []
    rejected = list(table.unreadable)
    for where, row, split, raw in table.rows:
        try:
            example = convert(raw, config.columns)
            problem = check_example(example)
            if problem:
                raise RowError(problem)
            if split is not None and split not in SPLITS:
                raise RowError(f"split {split!r} is neither train nor test")
        except RowError as err:
            rejected.append(Rejected(where, row, str(err)))
            continue
        examples.setdefault(split, []).append(example)
        origins.append((where, row, example))
    parts = {where: i for i, where in enumerate(dict.fromkeys(where for where, *_ in table.rows))}
    rejected.sort(key=lambda r: (parts.get(r.where, 0), int(r.position.split()[-1])))  # in the order read
    for row in rejected if on_rejected else ():
        on_rejected(row)
    n_good = sum(len(v) for v in examples.values())
    if not n_good:
        raise UserError(f"{config.source}: no row could be imported as {form} data ({len(rejected)} rejected)")
    train, test = assign_splits(examples, config.split_ratio, config.seed, str(config.source))
    with exclusive(target), atomic_directory(target, {"imported_from": str(config.source), "import_format": form,
                                                      "rejected_rows": len(rejected)}) as staging:
        for split, rows in (("train", train), ("test", test)):
            path = staging / f"{split}.json"
            path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            load_split_file(path, dataset=config.name, split=split)  # what was written is a valid distribution
        if target.exists() and not config.overwrite:  # another import of the name finished meanwhile
            raise UserError(f"{target}: distribution {config.name!r} was written by another import meanwhile; "
                            "pass --overwrite to replace it")
    return ImportResult(target, form, len(train), len(test), tuple(rejected), contradictions(origins))


def contradictions(origins: list[tuple[str, str, dict]]) -> tuple[str, ...]:
    """One line per example whose prompt and responses an earlier one has, but which prefers another response."""
    first: dict[tuple, tuple[str, str, str]] = {}
    found = []
    for where, row, example in origins:
        responses = example["responses"]
        key = (example["prompt"], frozenset(responses))
        preferred = next(text for text, score in responses.items() if score == 1.0)
        if key not in first:
            first[key] = (where, row, preferred)
            continue
        earlier_where, earlier_row, earlier = first[key]
        if earlier != preferred:
            found.append(f"{where}: {row}: prefers {_short(preferred)}, but {earlier_where}: {earlier_row} (the same "
                         f"prompt and responses) prefers {_short(earlier)}: contradictory labels")
    return tuple(found)


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n - 3] + "...")


IMPORT_SCRATCH = ".import-scratch"  # in distributions/: what a reader writes while reading (left by a killed import)


def _importing(data_dir: Path) -> bool:
    """Whether an import into ``data_dir`` holds its lock now (its scratch space is then in use)."""
    return any(distributions_dir(data_dir).glob(".*.importing"))


@contextmanager
def exclusive(target: Path):
    """One import of a distribution name at a time: the lock is a directory made atomically beside it."""
    lock = target.with_name(f".{target.name}.importing")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.mkdir()
    except FileExistsError:
        raise UserError(f"{target}: another import of {target.name!r} is running (or was killed: remove {lock})") from None
    try:
        yield
    finally:
        lock.rmdir()


class RowError(Exception):
    """One row that cannot become an example; the message is the reason."""


def read_source(path: Path, split_column: str, scratch: Path | None = None) -> SourceTable:
    """Every row of a file or a saved dataset (a DatasetDict's splits become the rows' split).
    ``scratch``: where ``datasets`` may write its cache while reading Parquet (default: a temporary
    directory beside the source)."""
    if not path.exists():
        raise UserError(f"{path}: not found (expected {ACCEPTED})")
    if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        return _text_table(path, split_column)
    if path.is_file() and path.suffix.lower() != ".parquet":
        raise UserError(f"{path}: unknown file type {path.suffix or '(no extension)'!r} (expected {ACCEPTED})")
    try:
        import datasets
    except ImportError:
        raise UserError(f"genies data import needs the datasets package: {INSTALL}") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a reader's own error log would precede our one line
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:  # datasets raises FileNotFoundError, ValueError, arrow errors ...
            raise UserError(f"{path}: not a directory saved with datasets' save_to_disk ({describe(err)}); "
                            f"expected {ACCEPTED}") from None
        parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
        return _table([(f"{path}[{name}]" if name else str(path), dataset, name) for name, dataset in parts],
                      split_column)
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".genies-import-", dir=scratch or path.parent) as cache:
        try:
            dataset = datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
        except Exception as err:  # a damaged file surfaces as any of arrow's or datasets' errors
            raise UserError(f"{path}: cannot be read as Parquet ({describe(err)}); expected {ACCEPTED}") from None
        return _table([(str(path), dataset, None)], split_column)


def _text_table(path: Path, split_column: str) -> SourceTable:
    """A JSON, JSON Lines or CSV file, row by row (``distributions.source_files``)."""
    rows, columns, unreadable = [], [], []
    for row in read_rows(path):
        if row.values is None:
            unreadable.append(Rejected(str(path), f"line {row.line}", row.problem))
            continue
        columns += [c for c in row.values if c not in columns]
        rows.append((str(path), f"line {row.line}", _split_of(row.values, split_column, None), row.values))
    if not rows:
        reason = f" ({len(unreadable)} unreadable; the first: {unreadable[0]})" if unreadable else ""
        raise UserError(f"{path}: holds no rows{reason}; expected {ACCEPTED}")
    return SourceTable(rows, tuple(columns), tuple(unreadable))


def _split_of(raw: dict, split_column: str, split_name: str | None) -> str | None:
    if split_column in raw:
        return "" if raw[split_column] is None else str(raw[split_column]).strip().lower()
    return split_name


def _table(parts, split_column: str) -> SourceTable:
    rows, columns = [], []
    for where, dataset, split_name in parts:
        columns += [c for c in dataset.column_names if c not in columns]
        for index, raw in enumerate(dataset):
            rows.append((where, f"row {index}", _split_of(raw, split_column, split_name), raw))
    if not rows:
        raise UserError(f"{parts[0][0] if parts else 'source'}: holds no rows")
    return SourceTable(rows, tuple(columns))


def detect_format(columns: tuple[str, ...], names: Columns, source: str) -> str:
    if names.chosen in columns and names.rejected in columns:
        return "preference"
    if names.responses in columns and names.scores in columns:
        return "ranked"
    if names.prompt in columns and names.responses in columns:
        return "genies"
    raise UserError(f"{source}: cannot tell the format from its columns {', '.join(columns)} (expected "
                    f"{names.prompt}+{names.chosen}+{names.rejected} (preference), {names.responses}+{names.scores} "
                    f"(ranked) or {names.prompt}+{names.responses} (genies); name them with --prompt-column, "
                    "--chosen-column ... or pass --format)")


REQUIRED_COLUMNS = {"preference": ("chosen", "rejected"), "ranked": ("prompt", "responses", "scores"),
                    "genies": ("prompt", "responses")}  # a conversational preference row carries its prompt


def check_columns(form: str, columns: tuple[str, ...], names: Columns, source: str) -> None:
    for role in REQUIRED_COLUMNS[form]:
        if getattr(names, role) not in columns:
            raise UserError(f"{source}: no column {getattr(names, role)!r} for {form} data (its columns: "
                            f"{', '.join(columns)}); name the {role} column with --{role}-column")


def assign_splits(examples: dict[str | None, list[dict]], ratio: float, seed: int,
                  source: str) -> tuple[list[dict], list[dict]]:
    """The rows that named their split keep it; the others are shuffled (seeded) and cut at ``ratio``."""
    train, test = list(examples.get("train", [])), list(examples.get("test", []))
    unassigned = list(examples.get(None, []))
    if unassigned:
        random.Random(seed).shuffle(unassigned)
        n_train = min(max(round(len(unassigned) * ratio), 1), len(unassigned) - 1) if len(unassigned) > 1 else 1
        train += unassigned[:n_train]
        test += unassigned[n_train:]
    for name, rows in (("train", train), ("test", test)):
        if not rows:
            raise UserError(f"{source}: no valid rows left for the {name} split ({len(train) + len(test)} imported); "
                            "a distribution needs both train and test")
    return train, test


# ----------------------------------------------------------------------------- row converters


def preference_example(raw: dict, names: Columns) -> dict:
    chosen, rejected = _field(raw, names.chosen), _field(raw, names.rejected)
    prompt = raw.get(names.prompt)
    if isinstance(chosen, list) or isinstance(rejected, list):
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise RowError(f"{names.chosen!r} and {names.rejected!r} must both be texts or both lists of messages")
        chosen_turns, chosen = _split_conversation(chosen, names.chosen)
        rejected_turns, rejected = _split_conversation(rejected, names.rejected)
        if chosen_turns != rejected_turns:
            raise RowError(f"{names.chosen!r} and {names.rejected!r} differ before their last assistant message")
        if chosen_turns:
            prompt = chosen_turns
    prompt = _user_text(prompt, names.prompt)
    _check_text(chosen, names.chosen)
    _check_text(rejected, names.rejected)
    if chosen == rejected:
        raise RowError(f"{names.chosen!r} and {names.rejected!r} are the same text")
    return {"prompt": prompt, "responses": {chosen: 1.0, rejected: 0.0}}


def ranked_example(raw: dict, names: Columns) -> dict:
    responses, scores = _field(raw, names.responses), _field(raw, names.scores)
    if not isinstance(responses, list) or not isinstance(scores, list):
        raise RowError(f"{names.responses!r} and {names.scores!r} must be lists")
    if len(responses) != len(scores):
        raise RowError(f"{len(responses)} responses but {len(scores)} scores")
    for response in responses:
        _check_text(response, names.responses)
    if len(set(responses)) < len(responses):
        raise RowError("the same response appears more than once")
    for score in scores:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise RowError(f"score {score!r} is not a finite number")
    top = max(scores)
    if scores.count(top) > 1:
        raise RowError(f"{scores.count(top)} responses share the top score {top}; the best must be one response")
    return {"prompt": _user_text(raw.get(names.prompt), names.prompt),
            "responses": {r: 1.0 if s == top else 0.0 for r, s in zip(responses, scores)}}


def genies_example(raw: dict, names: Columns) -> dict:
    responses = _field(raw, names.responses)
    if isinstance(responses, dict) and None in responses.values():  # an Arrow struct holds every key of the file,
        responses = {text: score for text, score in responses.items() if score is not None}  # None where a row lacks it
    return {"prompt": raw.get(names.prompt), "responses": responses}


CONVERTERS = {"preference": preference_example, "ranked": ranked_example, "genies": genies_example}


def _field(raw: dict, name: str):
    if name not in raw:
        raise RowError(f"no column {name!r}")
    if raw[name] is None:
        raise RowError(f"empty {name!r}")
    return raw[name]


def _check_text(value, name: str) -> None:
    if not isinstance(value, str):
        raise RowError(f"{name!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"empty {name!r}")


def _split_conversation(messages: list, name: str) -> tuple[list, str]:
    """(the messages before the last, the last one's text); the last must be the assistant's."""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            raise RowError(f"{name!r} must be a list of {{role, content}} messages")
    if not messages or messages[-1]["role"] != "assistant":
        raise RowError(f"{name!r} does not end with an assistant message")
    return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], messages[-1]["content"]


def _user_text(prompt, name: str) -> str:
    """A prompt column's text, or the one user message of a conversation."""
    if isinstance(prompt, list):
        roles = [m.get("role") if isinstance(m, dict) else None for m in prompt]
        if roles != ["user"]:
            raise RowError(f"the prompt must be one user message (a GENIES prompt is one turn), got roles {roles}")
        prompt = prompt[0].get("content")
    if prompt is None:
        raise RowError(f"empty {name!r}")
    _check_text(prompt, name)
    return prompt
