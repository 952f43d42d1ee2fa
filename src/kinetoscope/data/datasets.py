"""``VideoDataset``: annotations + reader + sampler + transform, with a bad-file policy.

A video that cannot be opened or decoded, is missing or empty, or has no video stream never stops a
training run. The dataset logs it, adds it to ``<report_dir>/bad_files.csv`` (a ``path,reason`` CSV
with one row per file, whichever worker or epoch met it) and then, by ``on_error``:

* ``"substitute"`` (training default): returns another sample chosen deterministically from the
  index, so an epoch keeps its length and a resumed run reads the same data;
* ``"skip"``: returns ``{"index", "path", "error"}`` instead of a sample; :func:`collate_valid` drops
  these from the batch and lists them (evaluation uses it to exclude unreadable videos and count them);
* ``"raise"``: raises the ``VideoDecodeError`` that names the file.

Only decoding and I/O failures (``OSError``, which ``VideoDecodeError`` is) count as a bad video; any
other exception, e.g. from a transform, is a bug and propagates unchanged.
"""

from __future__ import annotations

import csv
import logging
import signal
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
        warn: bool = True,
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
        self.warn = warn  # log each bad file (off where the caller reports them itself)
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

    def __getitem__(self, index: int) -> dict:
        try:
            return self.load(index)
        except OSError as err:  # VideoDecodeError and I/O errors; anything else is a bug and propagates
            reason = self._report(self.samples[index][0], err)
            if self.on_error == "raise":
                raise
            if self.on_error == "skip":
                return {"index": index, "path": self.samples[index][0], "error": reason}
        for attempt in range(1, min(len(self), 50)):
            other = (index + attempt * _SUBSTITUTE_STEP) % len(self)
            try:
                sample = self.load(other)
            except OSError as err:
                self._report(self.samples[other][0], err)
                continue
            sample["index"] = index
            return sample
        raise VideoDecodeError(f"no readable video found to substitute for {self.samples[index][0]}")

    def _report(self, path: str, err: Exception) -> str:
        reason = f"{type(err).__name__}: {error_reason(path, err)}"
        if path not in self._reported:
            self._reported.add(path)
            if self.warn:
                log.warning("bad video %s: %s (policy: %s)", path, reason, self.on_error)
            if self.report_path is not None:
                append_bad_file(self.report_path, path, reason)
        return reason


class ImageDataset(VideoDataset):
    """Still images as clips, for image pretraining with the video pipeline: a class-per-folder tree of
    images (torchvision's ``ImageFolder`` layout, format ``"images"``) or any annotation file listing
    images, each image a clip of ``frames`` identical frames.

    An image is read as a one-frame video and goes through the same presets (one ``tv_tensors.Video``,
    so every frame gets the same crop and flip), the same bad-file policy (an unreadable image is
    reported in ``bad_files.csv`` and substituted, skipped or raised like a video) and the same items
    ``{"video", "label", "index"}``. ``crops`` (1 or 3) are the spatial test views; an image has one
    temporal view. Give a model ``model.frames_per_image`` frames (its stem's temporal stride).
    """

    def __init__(
        self,
        annotations: str | Path | list[tuple[str, int]],
        root: str | Path | None = None,
        *,
        frames: int = 1,
        crops: int = 1,
        format: str = "images",
        **kwargs,
    ) -> None:
        if "sampling" in kwargs or "views" in kwargs:
            raise TypeError("ImageDataset takes frames= and crops=, not sampling= or views=")
        super().__init__(annotations, root, format=format, sampling=f"dense:{frames}x1", views=f"1x{crops}", **kwargs)


BAD_FILES_HEADER = ("path", "reason")


def append_bad_file(report: str | Path, path: str, reason: str) -> None:
    """Add ``path`` to a ``bad_files.csv`` unless it is listed already. An exclusive lock makes the
    read-check-append atomic, so DataLoader workers and later epochs never write a file twice."""
    import fcntl

    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        f.seek(0)
        rows = list(csv.reader(f))
        if any(row and row[0] == path for row in rows[1:]):
            return
        writer = csv.writer(f)
        if not rows:
            writer.writerow(BAD_FILES_HEADER)
        writer.writerow((path, reason))


def read_bad_files(report_dir: str | Path) -> list[tuple[str, str]]:
    """The ``(path, reason)`` rows of a run's ``bad_files.csv``."""
    path = Path(report_dir) / "bad_files.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [(row[0], row[1] if len(row) > 1 else "") for row in rows[1:] if row]


def collate_valid(batch: list[dict]) -> dict:
    """``default_collate`` of the readable samples, plus ``"errors"``: the ``{"index", "path", "error"}``
    entries ``on_error="skip"`` returned in their place. A batch with no readable sample has no ``"video"``."""
    good = [b for b in batch if "error" not in b]
    out = default_collate(good) if good else {}
    out["errors"] = [b for b in batch if "error" in b]
    return out


def worker_init_fn(worker_id: int) -> None:
    """One intra-op thread per DataLoader worker (decoding already uses one FFmpeg thread). Ctrl-C and
    SIGTERM are left to the main process, which checkpoints and then shuts the workers down."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
