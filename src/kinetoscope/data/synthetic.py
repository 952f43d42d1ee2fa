"""A synthetic motion dataset written as real H.264 videos, where time direction is the label.

Classes come in pairs that differ only in the direction of time: ``move_left`` / ``move_right``,
``move_up`` / ``move_down``, ``grow`` / ``shrink``, ``rotate_cw`` / ``rotate_ccw``. A video of the second
class of a pair is drawn exactly like one of the first and then played backwards, so the *set* of
frames has the same distribution in both classes. A model that ignores frame order therefore cannot
beat chance within a pair (50%); a model that uses time can reach ~100%. Each video has three bright
shapes moving together over a dim textured background, a grey distractor shape on a random walk,
per-frame noise, and random colours, sizes, positions and speeds.

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

from .._progress import progress as progress_bar

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


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dim, low-contrast textured background ``(size, size, 3)``: tinted blotches and stripes."""
    low = rng.uniform(-18, 18, size=(4, 4, 3))
    reps = -(-size // 4)
    img = rng.uniform(40, 80, size=3) + np.kron(low, np.ones((reps, reps, 1)))[:size, :size]
    yy, xx = np.mgrid[0:size, 0:size]
    angle, freq = rng.uniform(0, math.pi), rng.uniform(0.2, 0.5)
    return img + 10 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)))[..., None]


def _polygon_mask(size: int, cx: float, cy: float, radius: float, angle: float, sides: int) -> np.ndarray:
    """Filled regular polygon as a boolean (size, size) mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) - angle
    sector = 2 * math.pi / sides
    edge = radius * math.cos(math.pi / sides) / np.cos((theta % sector) - sector / 2)
    return r <= edge


def _polar(radius: float, angle: float) -> np.ndarray:
    return np.array([radius * math.cos(angle), radius * math.sin(angle)])


def render_clip(
    label: str, frames: int, size: int, rng: np.random.Generator, masks: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One ``(frames, size, size, 3)`` uint8 clip of class ``label``.

    Three bright shapes move together over a dim textured background (translate, scale about the
    centre, or rotate about the centre); a grey distractor wanders on its own; every frame gets noise.
    The second class of each pair is the first played backwards. With ``masks=True`` also the
    ``(frames, size, size)`` boolean mask of the three shapes whose motion is the label (not the
    distractor), frame by frame: ``(clip, masks)``. The random draws are the same either way.
    """
    base = label if label in PAIRS else next(k for k, v in PAIRS.items() if v == label)
    reverse = label not in PAIRS
    bg = _background(rng, size)
    centre = (size - 1) / 2
    shapes = [
        dict(
            pos=_polar(rng.uniform(0.18, 0.32) * size, rng.uniform(0, 2 * math.pi)),  # from the centre
            radius=rng.uniform(0.08, 0.13) * size,
            angle=rng.uniform(0, 2 * math.pi),
            sides=int(rng.integers(3, 5)),
            colour=rng.uniform(170, 255, size=3),
        )
        for _ in range(3)
    ]
    pan = rng.uniform(0.35, 0.5) * size  # pixels of travel over the clip
    zoom = rng.uniform(1.6, 2.0)  # scale change over the clip
    turn = rng.uniform(1.2, 1.6)  # radians over the clip
    d_colour = rng.uniform(100, 140, size=3)
    d_pos = rng.uniform(0.2, 0.8, size=2) * size
    d_walk = rng.normal(0, 0.02 * size, size=(frames, 2)).cumsum(0)
    clip = np.empty((frames, size, size, 3), dtype=np.float32)
    mask = np.zeros((frames, size, size), dtype=bool)
    for t in range(frames):
        s = t / max(frames - 1, 1) - 0.5  # -0.5 -> 0.5 over the clip
        img = bg.copy()
        px, py = d_pos + d_walk[t]
        img[_polygon_mask(size, px % size, py % size, 0.07 * size, 0.0, 8)] = d_colour
        for sh in shapes:
            (x, y), radius, angle = sh["pos"], sh["radius"], sh["angle"]
            if base == "move_left":
                x = x - pan * s
            elif base == "move_up":
                y = y - pan * s
            elif base == "grow":
                k = zoom**s
                x, y, radius = x * k, y * k, radius * k
            elif base == "rotate_cw":  # about the centre, image y pointing down: positive angle is clockwise
                a = turn * s
                x, y = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
                angle = angle + a
            shape = _polygon_mask(size, x + centre, y + centre, radius, angle, sh["sides"])
            img[shape] = sh["colour"]
            mask[t] |= shape
        clip[t] = img + rng.normal(0, 4, size=img.shape)
    clip = np.clip(clip, 0, 255).astype(np.uint8)
    if reverse:
        clip, mask = clip[::-1].copy(), mask[::-1].copy()
    return (clip, mask) if masks else clip


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
    progress: bool = False,
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
        written = pool.map(_write_one, jobs, chunksize=4)
        list(progress_bar(written, total=len(jobs), desc="writing videos", enabled=progress, unit="video"))
    result = {"root": out, "classes": classes}
    for split, items in rows.items():
        path = out / f"{split}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(items)
        result[split] = path
    return result
