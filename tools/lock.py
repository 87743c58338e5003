"""requirements.lock without torch's own dependency tree.

pip-compile resolves torch (transformers, accelerate and peft need it) and pins what torch brings in:
triton, the nvidia-* and cuda-* libraries of one CUDA build, sympy, networkx. Those pins belong to one torch
build; a lock holding them cannot install beside another build (the CUDA torch a GPU machine's index serves,
the CPU torch of a laptop). So the lock keeps only what our own dependencies need: a package goes when
everything that brings it in (pip-compile's ``# via`` notes) is torch or part of torch's own tree.

    python tools/lock.py requirements.lock    # rewrite the file in place (``make lock`` runs it)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Parts of torch's tree that a CPU build does not declare, so the installed metadata cannot name them.
TORCH_BUILD_PATTERNS = (re.compile(r"^triton$"), re.compile(r"^nvidia-.*"), re.compile(r"^cuda-.*"),
                        re.compile(r"^pytorch-triton.*"))
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_torch_build_package(name: str) -> bool:
    return any(pattern.match(canonical(name)) for pattern in TORCH_BUILD_PATTERNS)


def parse_lock(text: str) -> dict[str, dict]:
    """{package: {"line": index of its pin, "end": index after its notes, "via": {who brings it in}}}."""
    lines = text.splitlines()
    entries: dict[str, dict] = {}
    current = None
    for index, line in enumerate(lines):
        pinned = _PIN.match(line)
        if pinned:
            current = canonical(pinned.group(1))
            entries[current] = {"line": index, "end": index + 1, "via": set()}
            continue
        if current is None:
            continue
        if line.startswith("    #"):
            note = line.strip().lstrip("#").strip()
            if note.startswith("via "):
                note = note[4:]
            if note and note != "via":
                entries[current]["via"].add(canonical(note.split(" (")[0]) if not note.startswith("-") else note)
            entries[current]["end"] = index + 1
        else:
            current = None
    return entries


def torch_tree_in_lock(text: str) -> set[str]:
    """The lock's packages that only torch brings in, directly or through other such packages."""
    entries = parse_lock(text)
    tree = {name for name in entries if is_torch_build_package(name)}
    while True:
        more = {name for name, entry in entries.items()
                if name not in tree and entry["via"] and entry["via"] <= tree | {"torch"}}
        if not more:
            return tree
        tree |= more


def strip_torch_tree(text: str) -> str:
    """``text`` without the pins (and notes) of torch's own tree; the other packages' notes keep naming torch."""
    entries = parse_lock(text)
    drop = torch_tree_in_lock(text)
    lines = text.splitlines()
    gone = {i for name in drop for i in range(entries[name]["line"], entries[name]["end"])}
    kept = [line for i, line in enumerate(lines) if i not in gone]
    note = "# torch and its own dependency tree are left out (tools/lock.py): install the build your machine needs."
    if note not in kept:
        kept.append(note)
    return "\n".join(kept) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/lock.py requirements.lock")
    path = Path(sys.argv[1])
    before = path.read_text()
    after = strip_torch_tree(before)
    path.write_text(after)
    print(f"{path}: left out {len(torch_tree_in_lock(before))} package(s) of torch's own tree: "
          f"{', '.join(sorted(torch_tree_in_lock(before))) or 'none'}")
