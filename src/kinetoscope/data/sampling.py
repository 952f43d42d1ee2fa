"""Which frames a clip reads: dense clips, uniform segments, and multi-view testing.

A protocol is one string:

* ``"dense:32x2"``: 32 frames, every 2nd frame (a 64-frame window); training draws the window's start
  at random, testing spaces ``N`` windows evenly over the video (Kinetics protocols of Video Swin,
  MViT, PST, DualFormer).
* ``"uniform:16"``: the video is cut into 16 equal segments and one frame is taken from each (TSN);
  training draws a random frame per segment, testing takes the middle, and ``N`` test clips take
  the ``N`` evenly spaced offsets inside each segment (Something-Something protocols).

Views are ``"CLIPSxCROPS"`` (``"4x3"``: 4 temporal clips x 3 spatial crops). Videos shorter than a
clip ``"loop"`` back to the start or ``"repeat"`` their last frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

ShortVideo = Literal["loop", "repeat"]


@dataclass(frozen=True)
class ClipSampler:
    kind: Literal["dense", "uniform"]
    num_frames: int
    stride: int = 1
    short_video: ShortVideo = "loop"

    @property
    def span(self) -> int:
        """Frames of video one dense clip covers."""
        return (self.num_frames - 1) * self.stride + 1

    def _fit(self, idx: np.ndarray, total: int) -> np.ndarray:
        if self.short_video == "loop":
            return idx % total
        if self.short_video == "repeat":
            return np.minimum(idx, total - 1)
        raise ValueError(f"short_video must be 'loop' or 'repeat', got {self.short_video!r}")

    def train(self, total: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of one random training clip from a video of ``total`` frames."""
        _check_total(total)
        if self.kind == "dense":
            start = int(rng.integers(0, max(total - self.span, 0) + 1))
            return self._fit(start + self.stride * np.arange(self.num_frames), total)
        edges = np.linspace(0, total, self.num_frames + 1)
        if total >= self.num_frames:
            lo, hi = np.floor(edges[:-1]).astype(int), np.maximum(np.floor(edges[1:]).astype(int), 1)
            return np.minimum(lo + (rng.random(self.num_frames) * (hi - lo)).astype(int), total - 1)
        return self._short_uniform(total)

    def test(self, total: int, clips: int = 1) -> list[np.ndarray]:
        """Indices of ``clips`` deterministic test clips, evenly spread over the video."""
        _check_total(total)
        if self.kind == "dense":
            room = max(total - self.span, 0)
            starts = [int(round(room * (k + 0.5) / clips)) if clips > 1 else room // 2 for k in range(clips)]
            return [self._fit(s + self.stride * np.arange(self.num_frames), total) for s in starts]
        if total < self.num_frames:
            return [self._short_uniform(total)] * clips
        seg = total / self.num_frames
        return [
            np.minimum((seg * (np.arange(self.num_frames) + (k + 0.5) / clips)).astype(int), total - 1)
            for k in range(clips)
        ]

    def _short_uniform(self, total: int) -> np.ndarray:
        if self.short_video == "loop":
            return np.arange(self.num_frames) % total
        return np.minimum((np.arange(self.num_frames) * total) // self.num_frames, total - 1)


def _check_total(total: int) -> None:
    if total <= 0:
        raise ValueError("cannot sample frames from a video with no frames")


_PROTOCOL = re.compile(r"^(dense):(\d+)x(\d+)$|^(uniform):(\d+)$")


def parse_protocol(protocol: str, short_video: ShortVideo = "loop") -> ClipSampler:
    """``"dense:32x2"`` or ``"uniform:16"`` -> a :class:`ClipSampler`."""
    m = _PROTOCOL.match(protocol.strip().lower())
    if not m:
        raise ValueError(f"unknown sampling protocol {protocol!r}; use 'dense:FRAMESxSTRIDE' or 'uniform:FRAMES'")
    if m.group(1):
        frames, stride = int(m.group(2)), int(m.group(3))
        if frames < 1 or stride < 1:
            raise ValueError(f"frames and stride must be positive in {protocol!r}")
        return ClipSampler("dense", frames, stride, short_video)
    frames = int(m.group(5))
    if frames < 1:
        raise ValueError(f"frames must be positive in {protocol!r}")
    return ClipSampler("uniform", frames, 1, short_video)


def parse_views(views: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(4 clips, 3 crops)``; crops must be 1 or 3."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", views)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) not in (1, 3):
        raise ValueError(f"views must be 'CLIPSxCROPS' with crops 1 or 3 (e.g. '4x3', '1x1'), got {views!r}")
    return int(m.group(1)), int(m.group(2))
