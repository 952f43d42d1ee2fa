"""``VideoDataset``: annotations + reader + sampler + transform, with a bad-file policy.

A video that cannot be opened or decoded, is missing or empty, or has no video stream never stops a
training run. With ``on_error="substitute"`` (default) the dataset logs it once, appends it to
``<report_dir>/bad_files.csv`` (path, reason) and returns another sample chosen deterministically from
the index, so an epoch keeps its length and a resumed run reads the same data. ``"skip"`` returns
``None`` (use :func:`collate_skip_none` to drop it from the batch); ``"raise"`` raises a
``VideoDecodeError`` that names the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .annotations import load_annotations
from .decoding import Backend, VideoDecodeError, error_reason, open_video
from .sampling import parse_protocol, parse_views
from .transforms import IMAGENET_MEAN, IMAGENET_STD, apply_transform, build_transform

log = logging.getLogger(__name__)
OnError = Literal["substitute", "skip", "raise"]
_SUBSTITUTE_STEP = 7919  # a prime: successive substitutes spread over the dataset


class VideoDataset(Dataset):
    """Clips of the videos listed in an annotation file.

    ``ds[i]`` is ``{"video": float tensor, "label": int, "index": int}``. In training (``train=True``)
    ``video`` is one randomly sampled, augmented clip ``(C, T, H, W)``; in evaluation it stacks all
    views ``(clips * crops, C, T, H, W)`` in a fixed order (clip-major).
    """

    def __init__(
        self,
        annotations: str | Path | list[tuple[str, int]],
        root: str | Path | None = None,
        *,
        format: str = "auto",
        sampling: str = "dense:16x4",
        views: str = "1x1",
        train: bool = True,
        crop_size: int = 224,
        short_side: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        transform: Callable | None = None,
        backend: Backend = "auto",
        on_error: OnError = "substitute",
        report_dir: str | Path | None = None,
        classes: list[str] | None = None,
        seed: int = 0,
        short_video: Literal["loop", "repeat"] = "loop",
        flip_map: dict[int, int] | None = None,
        **transform_kwargs,
    ) -> None:
        if on_error not in ("substitute", "skip", "raise"):
            raise ValueError(f"on_error must be 'substitute', 'skip' or 'raise', got {on_error!r}")
        if isinstance(annotations, list):  # (path, label) pairs, e.g. videos to predict
            if classes is None:
                raise ValueError("a list of (path, label) samples needs classes=")
            self.samples, self.classes = [(str(p), int(lab)) for p, lab in annotations], list(classes)
        else:
            ann = load_annotations(annotations, root=root, format=format, classes=classes)
            self.samples, self.classes = ann.samples, ann.classes
        if not self.samples:
            raise ValueError(f"{annotations}: no labelled videos found")
        self.train = train
        self.sampler = parse_protocol(sampling, short_video)
        self.clips, self.crops = parse_views(views)
        self.backend = backend
        self.on_error = on_error
        self.report_path = Path(report_dir) / "bad_files.csv" if report_dir else None
        self.seed = seed
        self.epoch = 0
        self.flip_map = flip_map
        if transform is None:
            flip = transform_kwargs.pop("flip", flip_map is None)  # label-aware flips are done here
            transform = build_transform(
                train, crop_size, short_side, mean, std, crops=self.crops, flip=flip, **transform_kwargs
            )
        self.transform = transform
        self._reported: set[str] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the per-sample randomness (frame choice) for an epoch; makes resumed runs exact."""
        self.epoch = epoch

    def _rng(self, index: int, stream: int = 0) -> np.random.Generator:
        """Randomness of one sample in one epoch; separate ``stream``s for frames, pixels and flips."""
        return np.random.default_rng((self.seed, self.epoch, index, stream))

    def load(self, index: int) -> dict:
        """The sample at ``index``; raises ``VideoDecodeError`` if its file is bad."""
        path, label = self.samples[index]
        reader = open_video(path, self.backend)
        try:
            total = reader.num_frames
            if self.train:
                indices = [self.sampler.train(total, self._rng(index))]
            else:
                indices = self.sampler.test(total, self.clips)
            frames = [reader.get_frames(idx) for idx in indices]  # each (T, C, H, W) uint8
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        if self.train:
            # augmentation draws depend on (seed, epoch, index) alone: any worker, any resume, same clip
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self._rng(index, stream=1).integers(2**62)))
                video = apply_transform(self.transform, frames[0])  # (C, T, H, W)
            if self.flip_map is not None and label in self.flip_map and self._rng(index, stream=2).random() < 0.5:
                video, label = video.flip(-1), self.flip_map[label]
        else:
            views = [apply_transform(self.transform, f) for f in frames]  # (C,T,H,W) or (crops,C,T,H,W)
            video = torch.stack([v if v.dim() == 5 else v.unsqueeze(0) for v in views]).flatten(0, 1)
        return {"video": video, "label": label, "index": index}

    def __getitem__(self, index: int) -> dict | None:
        try:
            return self.load(index)
        except (VideoDecodeError, IndexError, OSError, ValueError, RuntimeError) as err:
            self._report(self.samples[index][0], err)
            if self.on_error == "raise":
                raise
            if self.on_error == "skip":
                return None
        for attempt in range(1, min(len(self), 50)):
            other = (index + attempt * _SUBSTITUTE_STEP) % len(self)
            try:
                sample = self.load(other)
            except (VideoDecodeError, IndexError, OSError, ValueError, RuntimeError) as err:
                self._report(self.samples[other][0], err)
                continue
            sample["index"] = index
            return sample
        raise VideoDecodeError(f"no readable video found to substitute for {self.samples[index][0]}")

    def _report(self, path: str, err: Exception) -> None:
        if path in self._reported:
            return
        self._reported.add(path)
        reason = error_reason(path, err)
        log.warning("bad video %s: %s (policy: %s)", path, reason, self.on_error)
        if self.report_path is not None:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            line = f'"{path}","{type(err).__name__}: {reason.replace(chr(34), chr(39))}"\n'
            # one small O_APPEND write per line: lines from several workers do not interleave
            fd = os.open(self.report_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def collate_skip_none(batch: list[dict | None]) -> dict | None:
    """``default_collate`` without the ``None`` samples that ``on_error="skip"`` returns."""
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


def read_bad_files(report_dir: str | Path) -> list[tuple[str, str]]:
    """The ``(path, reason)`` rows of a run's bad-files report (deduplicated across workers)."""
    import csv

    path = Path(report_dir) / "bad_files.csv"
    if not path.exists():
        return []
    seen, rows = set(), []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row and row[0] not in seen:
                seen.add(row[0])
                rows.append((row[0], row[1] if len(row) > 1 else ""))
    return rows


def worker_init_fn(worker_id: int) -> None:
    """One intra-op thread per DataLoader worker (decoding already uses one FFmpeg thread)."""
    torch.set_num_threads(1)
