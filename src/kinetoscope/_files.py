"""Writing results safely: outputs checked before the work, files replaced atomically.

Imports nothing heavy, so the CLI can check its output paths before it loads torch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def check_output_file(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` cannot be written or would replace an existing file.

    Creates the missing parent folders; an existing file needs ``overwrite=True``.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise ValueError(f"{what} {p} exists; pass --overwrite to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{what} {p}: cannot create its folder ({err.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{what} {p}: folder {parent} is not writable")
    return p


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside ``path``, then rename it over ``path``: a process killed while
    writing leaves the previous file intact. The file gets the usual permissions (0666 less umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def replace_between_markers(text: str, generated: str, begin: str, end: str, append_missing: bool = False) -> str:
    """``text`` with what lies between its ``begin`` and ``end`` markers replaced by ``generated`` (the markers
    kept, each on its own line): how the README and the benchmark docs keep their hand-written prose around
    generated tables. Missing markers raise ``ValueError``, or with ``append_missing`` the marked block is
    appended."""
    block = f"{begin}\n{generated}\n{end}"
    head, found, rest = text.partition(begin)
    if found and end in rest:
        return head + block + rest.split(end, 1)[1]
    if append_missing:
        return text.rstrip() + "\n\n" + block + "\n"
    raise ValueError(f"the text lacks the markers {begin} ... {end}")
