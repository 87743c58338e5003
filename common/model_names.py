"""Short model names for runs, store listings, reports and plots: never a long path.

An alias is its own name (``smollm2-135m``); a ``.gguf`` file is named by its file name without the
extension; a local model directory by its config's ``_name_or_path`` when that is a hub id, else by the
directory's name (a hub cache's snapshot directory, named by a commit hash, by its repository instead); a hub
id by its last part (``meta-llama/Llama-2-7b-hf`` -> ``Llama-2-7b-hf``). What the name stands for exactly is
the model's content fingerprint (``actstore.models.model_fingerprint``), recorded beside it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

ALIASES_FILE = Path(__file__).with_name("model_aliases.json")
MAX_LENGTH = 48
_HASH = re.compile(r"^[0-9a-f]{20,}$")


def model_name(model: str) -> str:
    """The short name of ``model`` (an alias, a local path or a hub id); pure apart from reading a config.json."""
    text = str(model).strip()
    if text in _aliases():
        return text
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        return _short(path.stem)
    if path.is_dir():
        return _short(_directory_name(path))
    if _looks_like_path(text):
        return _short(path.name or text)
    return _short(text.strip("/").split("/")[-1])


def model_aliases() -> dict[str, dict]:
    """Names accepted wherever a ``--model`` is asked for, with how each is built or found."""
    return json.loads(ALIASES_FILE.read_text(encoding="utf-8"))


def is_alias(model: str) -> bool:
    """Whether ``model`` is an alias of common/model_aliases.json (a pinned package or a built-in model)."""
    return str(model).strip() in _aliases()


@functools.lru_cache(maxsize=1)
def _aliases() -> frozenset[str]:
    """The alias names (common/model_aliases.json), read without importing the model loader (and torch)."""
    return frozenset(model_aliases())


def _directory_name(path: Path) -> str:
    resolved = path.resolve()
    name = resolved.name
    if _HASH.match(name) and resolved.parent.name == "snapshots":  # a hub cache: models--org--name/snapshots/<hash>
        return resolved.parent.parent.name.split("--")[-1]
    try:
        config = json.loads((resolved / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return name
    declared = str(config.get("_name_or_path") or "") if isinstance(config, dict) else ""
    if declared and not _looks_like_path(declared) and declared.count("/") == 1:
        return declared.split("/")[-1]
    return name


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1


def _short(name: str) -> str:
    name = re.sub(r"\s+", "-", name.strip()) or "model"
    return name if len(name) <= MAX_LENGTH else name[:MAX_LENGTH - 1] + "…"
