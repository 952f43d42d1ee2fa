"""A synthetic motion dataset written as real H.264 videos, where time direction is the label.

Classes come in pairs that differ only in the direction of time: ``move_left`` / ``move_right``,
``move_up`` / ``move_down``, ``grow`` / ``shrink``, ``rotate_cw`` / ``rotate_ccw``. A video of the second
class of a pair is drawn exactly like one of the first and then played backwards, so the *set* of
frames has the same distribution in both classes. A model that ignores frame order therefore cannot
beat chance within a pair (50%); a model that uses time can reach ~100%. Each video is a camera
moving over a random textured scene, with a distractor shape on a random walk and per-frame noise.

``write_synthetic_dataset(out)`` writes ``train/`` and ``val/`` videos and ``train.csv`` / ``val.csv``
(``path,label`` with a header, paths relative to ``out``) — the default data for ``make demo``, the
tests and the temporal experiments.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PAIRS: dict[str, str] = {
    "move_left": "move_right",
    "move_up": "move_down",
    "grow": "shrink",
    "rotate_cw": "rotate_ccw",
}
CLASSES: list[str] = [c for pair in PAIRS.items() for c in pair]


def write_video(path: str | Path, frames: np.ndarray, fps: float = 12.0, codec: str = "libx264", **options) -> None:
    """Encode uint8 ``(T, H, W, 3)`` RGB frames. ``codec="libx264rgb"`` with ``qp=0`` or ``"ffv1"`` is
    lossless (used by the tests for frame-exact checks)."""
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    T, H, W, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height = W, H
        if codec == "libx264rgb":
            stream.pix_fmt = "rgb24"
        elif codec == "ffv1":
            stream.pix_fmt = "bgr0"
        else:
            stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", **{k: str(v) for k, v in options.items()}} if "264" in codec else {}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured scene ``(size, size, 3)``: smooth colour blotches, stripes and a few solid shapes."""
    low = rng.uniform(30, 225, size=(6, 6, 3))
    reps = -(-size // 6)
    img = np.kron(low, np.ones((reps, reps, 1)))[:size, :size]
    yy, xx = np.mgrid[0:size, 0:size]
    angle, freq = rng.uniform(0, math.pi), rng.uniform(0.15, 0.35)
    img = img + 25 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)))[..., None]
    for _ in range(6):
        cx, cy = rng.uniform(0, size, size=2)
        img[
            _polygon_mask(size, cx, cy, rng.uniform(0.04, 0.1) * size, rng.uniform(0, 6.3), int(rng.integers(3, 7)))
        ] = rng.uniform(0, 255, size=3)
    return img


def _polygon_mask(size: int, cx: float, cy: float, radius: float, angle: float, sides: int) -> np.ndarray:
    """Filled regular polygon as a boolean (size, size) mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) - angle
    sector = 2 * math.pi / sides
    edge = radius * math.cos(math.pi / sides) / np.cos((theta % sector) - sector / 2)
    return r <= edge


def render_clip(label: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(frames, size, size, 3)`` uint8 clip of class ``label``.

    The camera moves over a textured scene (pan left/up, zoom in, rotate clockwise), so the motion is
    visible everywhere in the frame; a distractor shape wanders on its own and every frame gets noise.
    The second class of each pair is the first played backwards.
    """
    base = label if label in PAIRS else next(k for k, v in PAIRS.items() if v == label)
    reverse = label not in PAIRS
    big = 2 * size
    scene = _canvas(rng, big)
    pan = rng.uniform(0.35, 0.5) * size  # pixels of travel over the clip
    zoom = rng.uniform(1.5, 1.9)  # scale change over the clip
    turn = rng.uniform(0.6, 0.9)  # radians over the clip
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    d_colour = rng.uniform(0, 255, size=3)
    d_pos = rng.uniform(0.2, 0.8, size=2) * size
    d_walk = rng.normal(0, 0.02 * size, size=(frames, 2)).cumsum(0)
    clip = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        s = t / max(frames - 1, 1) - 0.5  # -0.5 -> 0.5 over the clip
        scale, angle, dx, dy = 1.0, 0.0, 0.0, 0.0
        if base == "move_left":  # the scene moves left: the camera pans right
            dx = pan * s
        elif base == "move_up":
            dy = pan * s
        elif base == "grow":  # things get bigger: the camera zooms in
            scale = zoom ** (-s)
        elif base == "rotate_cw":
            angle = -turn * s
        c, si = math.cos(angle) * scale, math.sin(angle) * scale
        src_x = c * xx - si * yy + big / 2 + dx
        src_y = si * xx + c * yy + big / 2 + dy
        img = scene[np.clip(src_y.round().astype(int), 0, big - 1), np.clip(src_x.round().astype(int), 0, big - 1)]
        px, py = d_pos + d_walk[t]
        img[_polygon_mask(size, px % size, py % size, 0.08 * size, 0.0, 8)] = d_colour
        clip[t] = img + rng.normal(0, 5, size=img.shape)
    clip = np.clip(clip, 0, 255).astype(np.uint8)
    return clip[::-1].copy() if reverse else clip


def _write_one(job: tuple[str, str, int, int, int, float]) -> None:
    path, label, frames, size, seed, fps = job
    rng = np.random.default_rng(seed)
    write_video(path, render_clip(label, frames, size, rng), fps=fps, crf=18)


def write_synthetic_dataset(
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    per_class: int = 40,
    val_per_class: int = 10,
    frames: int = 32,
    size: int = 80,
    seed: int = 0,
    fps: float = 12.0,
    workers: int | None = None,
) -> dict:
    """Write the dataset and return ``{"train": csv, "val": csv, "root": out_dir, "classes": [...]}``.

    Classes must come in whole pairs (both directions), so frame order is what tells them apart.
    """
    classes = list(classes or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; choose from {CLASSES}")
    partners = {**PAIRS, **{v: k for k, v in PAIRS.items()}}
    lonely = [c for c in classes if partners[c] not in classes]
    if lonely:
        raise ValueError(f"classes {lonely} need their time-reversed partner ({[partners[c] for c in lonely]})")
    out = Path(out_dir)
    jobs, rows = [], {"train": [], "val": []}
    for split, count, split_seed in (("train", per_class, seed), ("val", val_per_class, seed + 1_000_003)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for ci, label in enumerate(classes):
            for k in range(count):
                rel = f"{split}/{label}_{k:04d}.mp4"
                jobs.append((str(out / rel), label, frames, size, split_seed * 7919 + ci * 100_003 + k, fps))
                rows[split].append((rel, label))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=8))
    result = {"root": out, "classes": classes}
    for split, items in rows.items():
        path = out / f"{split}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(items)
        result[split] = path
    return result
