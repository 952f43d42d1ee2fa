"""``check_videos``: scan a dataset in parallel and list the files that cannot be read, with reasons."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .._progress import progress as progress_bar
from .annotations import load_annotations
from .decoding import error_reason, open_video


def check_one(path: str, backend: str = "auto") -> tuple[str, str | None, int]:
    """``(path, None or reason, frames)``: opens the file and decodes its first, middle and last frame."""
    try:
        reader = open_video(path, backend)
        n = reader.num_frames
        reader.get_frames(sorted({0, n // 2, n - 1}))
        return path, None, n
    except Exception as err:  # noqa: BLE001  (any failure is a finding, not a crash)
        return path, f"{type(err).__name__}: {error_reason(path, err)}", 0


def check_videos(
    annotations: str | Path,
    root: str | Path | None = None,
    format: str = "auto",
    workers: int | None = None,
    backend: str = "auto",
    progress: bool = False,
) -> dict:
    """``{"total", "readable", "unreadable": [(path, reason)], "frames": {path: n}}`` for a dataset."""  # fmt: skip
    ann = load_annotations(annotations, root=root, format=format)
    paths = [p for p, _ in ann.samples]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        scanned = pool.map(check_one, paths, [backend] * len(paths), chunksize=4)
        results = list(progress_bar(scanned, total=len(paths), desc="checking videos", enabled=progress, unit="video"))
    bad = [(p, reason) for p, reason, _ in results if reason is not None]
    return {
        "total": len(paths),
        "readable": len(paths) - len(bad),
        "unreadable": bad,
        "frames": {p: n for p, reason, n in results if reason is None},
    }
