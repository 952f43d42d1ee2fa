"""Progress for long loops: a tqdm bar on a terminal, a plain line every few seconds in a log.

tqdm redraws its bar with carriage returns, which a log file keeps as one ever-growing line. When
stderr is not a terminal, :func:`progress` returns :class:`LineProgress` instead: same calls
(``update``, ``set_postfix``, ``close``, iteration), one complete line every ``interval`` seconds
and one at the end. Imports nothing heavy, so the CLI can use it before torch is loaded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

LINE_INTERVAL_S = 5.0


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    leave: bool = True,
    unit: str = "it",
    file: TextIO | None = None,
):
    """A progress bar over ``iterable`` (or updated by hand with ``total``); disabled: a no-op."""
    file = file or sys.stderr
    if enabled and _is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=leave, unit=unit, file=file, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, enabled=enabled, unit=unit, file=file)


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """``desc: n/total (pct%) elapsed, rate, postfix`` as whole lines, at most one per ``interval``."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        enabled: bool = True,
        unit: str = "it",
        file: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.enabled, self.unit = iterable, total, desc, enabled, unit
        self.file = file or sys.stderr
        self.interval = LINE_INTERVAL_S if interval is None else interval
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = False, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def write(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n:
                self._write()

    def _write(self) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        rate = f"{self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else ""
        parts = [
            p for p in (f"{self.desc}: {done}" if self.desc else done, f"{elapsed:.0f} s", rate, self.postfix) if p
        ]
        print(", ".join(parts), file=self.file, flush=True)
