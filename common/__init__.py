"""What every package of the toolkit needs, written once.

- ``UserError``: the one exception for user mistakes; the CLI prints its message on one line, exit 2.
- The per-user directories (XDG style): ``$GENIES_HOME``, else ``$XDG_CACHE_HOME/genies``.
- ``write_text_atomic``: a file users keep appears whole or not at all (temporary sibling, one rename).
- ``read_json``: a JSON file, or a one-line UserError naming it.
- ``parse_list``: ``"a, b,,c"`` -> ``("a", "b", "c")``, the comma-separated lists of the command line.
- ``format_layers``: ``[0, 1, 2, 3]`` -> ``"0..3"``, layer lists in messages and tables.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Iterable


class UserError(Exception):
    """Bad input from the user (a file, a name, a flag). The message names what and where."""


def check_number(name: str, value: float | None, *, minimum: float = 0.0, above: bool = True) -> None:
    """Refuse, in one line, a hyper-parameter that is not a finite number above ``minimum`` (or at
    least ``minimum`` with ``above=False``); ``None`` (the default chosen later) passes."""
    if value is None:
        return
    if not (math.isfinite(value) and (value > minimum if above else value >= minimum)):
        bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
        raise UserError(f"{name} must be a finite number {bound}, got {value}")


def describe(err: BaseException) -> str:
    """``Type: first line of the message``, for a one-line error that names what went wrong underneath."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def user_cache_dir() -> Path:
    """Root for everything the toolkit caches: ``$GENIES_HOME`` or ``$XDG_CACHE_HOME/genies``."""
    if os.environ.get("GENIES_HOME"):
        return Path(os.environ["GENIES_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genies"


def default_data_dir() -> Path:
    return user_cache_dir() / "data"


def default_store_root() -> Path:
    return user_cache_dir() / "stores"


def default_model_cache() -> Path:
    return user_cache_dir() / "models"


def demo_data_dir() -> Path:
    return user_cache_dir() / "demo-data"


def default_finetune_dir() -> Path:
    return user_cache_dir() / "finetune"


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """``path``, when it is a directory that takes a new entry, or can be created (its nearest existing
    parent is a directory that takes one); otherwise a UserError naming ``what`` ("the store root", ...;
    nothing is left behind)."""
    import tempfile

    path = Path(path).expanduser()
    absolute = path.absolute()
    existing = next(p for p in (absolute, *absolute.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise UserError(f"{path}: cannot create {what}: {existing} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genies-write-check-", dir=existing))
    except OSError as err:
        raise UserError(f"{path}: cannot create {what} ({existing}: {err.strerror})") from None
    return path


def temporary_sibling(path: Path, kind: str) -> Path:
    """A name beside ``path`` that no other process or earlier attempt uses (hidden, so listings skip it)."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (verbatim: no newline translation) to ``path`` through a temporary sibling and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, "tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: str | os.PathLike) -> object:
    """The parsed content of a JSON file; undecodable or malformed content is a UserError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def parse_list(spec: str) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma-separated list."""
    return tuple(item.strip() for item in str(spec).split(",") if item.strip())


def format_layers(layers: Iterable[int]) -> str:
    """``0..3`` for three or more consecutive layers, else ``0,2,5``; ``none`` for no layer."""
    layers = list(layers)
    if not layers:
        return "none"
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ",".join(map(str, layers))


def environment_int(environ, name: str, default: int) -> int:
    """The integer environment variable ``name`` (``default`` when unset or empty); anything else is a UserError."""
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None
