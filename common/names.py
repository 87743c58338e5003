"""Names that become one path component (dataset, split, view): names, never paths.

A dataset name picks ``<data_dir>/distributions/<name>`` and the store directory
``<root>/<model>/<name>``; ``../x`` or ``a/b`` would read and write outside both.
"""

from __future__ import annotations

import re

from common import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 128  # characters: a file name holds at most 255 bytes, and a store's name adds its extras


def check_name(name: object, what: str = "dataset") -> str:
    """``name`` unchanged when it is a plain name; otherwise a UserError saying why."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{name!r} is not a {what} name: a {what} is named by letters, digits, '.', '_' and '-' "
                        "(starting with a letter or digit), not by a path")
    if len(name) > MAX_NAME:
        raise UserError(f"{name[:20]}... ({len(name)} characters) is not a {what} name: a {what} name has at most "
                        f"{MAX_NAME} characters")
    return name
