"""Long videos: sliding windows classified in batches, from one sequential pass over the frames.

:func:`predict_timeline` cuts a video into windows of ``window`` seconds every ``stride`` seconds
(fractions allowed; converted to whole frames at the video's frame rate), picks each window's clip with
the run's sampling protocol inside the window (``uniform:16``: 16 segments of the window; ``dense:32x2``:
the centred dense clip, looped when the window is shorter), and classifies one centre-cropped clip per
window. The video is decoded once, start to end, without seeking; each decoded frame is resized and
cropped once (the eval preset applies frame by frame, so this equals transforming each clip), kept only
while a pending window still needs it, and clips go through the model ``batch_size`` at a time.

Windows start every stride while they fit in the video; one more window ends at the last frame when the
last regular one stops short of it, and a video shorter than a window is one window over the whole video.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from ._figures import pyplot, save_figure
from .checkpoint import load_trained
from .config import resolve_inputs
from .distributed import resolve_device
from .evaluate import predict_views


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frames of the windows (module docstring): every ``stride`` while a window fits, plus one
    ending at the last frame if the regular ones stop short of it."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def seconds_to_frames(seconds: float, fps: float, what: str) -> int:
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"--{what} must be a positive number of seconds, got {seconds}")
    return max(1, int(round(seconds * fps)))


def predict_timeline(
    checkpoint: str | Path,
    video: str | Path,
    window: float,
    stride: float | None = None,
    topk: int = 5,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Classify the windows of ``video`` (module docstring); ``stride`` defaults to half the window.

    Returns ``{"video", "fps", "num_frames", "window_frames", "stride_frames", "classes", "rows",
    "probs"}``: ``rows`` one ``{"start", "end", "top": [[class, probability], ...]}`` per window (seconds,
    ``end`` exclusive), ``probs`` the ``(windows, classes)`` softmax probabilities as a NumPy array.
    """
    from .._progress import progress as progress_bar
    from ..data import open_video, parse_protocol
    from ..data.transforms import apply_transform, build_transform

    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    dev = resolve_device(device)
    model, classes, cfg, _ = load_trained(checkpoint, dev)
    inputs = resolve_inputs(cfg)
    reader = open_video(video, cfg.backend)
    total, fps = reader.num_frames, reader.fps  # from the packets: nothing decoded yet
    window_frames = seconds_to_frames(window, fps, "window")
    stride_frames = seconds_to_frames(stride if stride is not None else window / 2, fps, "stride")
    sampler = parse_protocol(inputs["sampling"])
    starts = window_starts(total, window_frames, stride_frames)
    length = min(window_frames, total)
    clip_indices = [start + sampler.test(length)[0] for start in starts]  # frames each window's clip reads
    needed = np.zeros(total, dtype=bool)
    for idx in clip_indices:
        needed[idx] = True
    transform = build_transform(False, inputs["size"], cfg.short_side, inputs["mean"], inputs["std"], crops=1)
    batch = batch_size or cfg.batch_size
    kept: dict[int, torch.Tensor] = {}  # decoded, transformed frames a pending window still reads
    probs, pending, next_window = [], [], 0

    def run(clips: list[torch.Tensor]) -> None:  # one view per window: (B, 1, C, T, H, W)
        with torch.no_grad():
            probs.append(predict_views(model, torch.stack(clips)[:, None].to(dev)).cpu())

    bar = progress_bar(total=total, desc="decoding", enabled=progress, leave=False, unit="frame")
    decoded = 0
    for i, frame in enumerate(reader.iter_frames()):
        decoded = i + 1
        if i < total and needed[i]:
            kept[i] = apply_transform(transform, frame.permute(2, 0, 1)[None])[:, 0]  # (C, H, W)
        while next_window < len(starts) and clip_indices[next_window].max() <= i:  # every frame of it is here
            pending.append(torch.stack([kept[j] for j in clip_indices[next_window]], dim=1))  # (C, T, H, W)
            next_window += 1
            if len(pending) == batch:
                run(pending)
                pending = []
        if next_window < len(starts):  # frames before the next window's first are read by no pending one
            for j in [j for j in kept if j < clip_indices[next_window].min()]:
                del kept[j]
        bar.update(1)
    bar.close()
    close = getattr(reader, "close", None)
    if close is not None:
        close()
    if pending:
        run(pending)
    if next_window < len(starts):
        raise ValueError(
            f"{video}: decoding stopped after {decoded} of {total} frames; `kinetoscope check-videos` tells why"
        )
    all_probs = torch.cat(probs).numpy()
    k = min(topk, len(classes))
    rows = []
    for start, p in zip(starts, all_probs):
        best = np.argsort(-p, kind="stable")[:k]
        end = min(start + window_frames, total)
        rows.append({"start": start / fps, "end": end / fps, "top": [[classes[c], float(p[c])] for c in best]})
    return {"video": str(video), "fps": fps, "num_frames": total, "window_frames": window_frames,
            "stride_frames": stride_frames, "classes": classes, "rows": rows, "probs": all_probs}  # fmt: skip


def write_timeline_csv(result: dict, path: str | Path) -> Path:
    """One row per window: ``start,end`` in seconds, then ``label_1,score_1,...,label_k,score_k``."""
    k = len(result["rows"][0]["top"])
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start", "end", *[c for i in range(1, k + 1) for c in (f"label_{i}", f"score_{i}")]])
        for r in result["rows"]:
            w.writerow([f"{r['start']:.3f}", f"{r['end']:.3f}", *[v for lab, p in r["top"] for v in (lab, f"{p:.4f}")]])
    return Path(path)


def plot_timeline(result: dict, path: str | Path, max_classes: int = 8) -> Path:
    """A PNG: the top-1 class of every window as a coloured band, and below it the probability over time
    (at the windows' centres) of the classes that come first somewhere (at most ``max_classes``)."""
    plt = pyplot()
    probs, classes, rows = result["probs"], result["classes"], result["rows"]
    centres = np.array([(r["start"] + r["end"]) / 2 for r in rows])
    top1 = probs.argmax(1)
    shown = sorted(set(top1.tolist()), key=lambda c: -probs[:, c].max())[:max_classes]
    colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(shown)}
    fig, (band, curves) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, height_ratios=(1, 4))
    half = result["stride_frames"] / result["fps"] / 2
    for t, c in zip(centres, top1):
        band.axvspan(t - half, t + half, color=colours.get(int(c), "lightgrey"), lw=0)
    band.set_yticks([])
    band.set_title(f"{Path(result['video']).name}: top-1 class per window", fontsize=9)
    for c in shown:
        curves.plot(centres, probs[:, c], color=colours[c], label=classes[c], lw=1.5)
    curves.set_ylim(0, 1.02)
    curves.set_ylabel("probability")
    curves.set_xlabel("seconds (window centre)")
    curves.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    duration = result["num_frames"] / result["fps"]
    curves.set_xlim(0, max(duration, centres.max() + half))
    fig.tight_layout()
    return save_figure(fig, path)


def format_timeline(rows: Sequence[dict], k: int = 3) -> list[str]:
    """The timeline as text lines: ``  0.00-2.00 s  0.91 move_left  0.05 grow ...``."""
    return [
        f"{r['start']:7.2f}-{r['end']:7.2f} s  " + "  ".join(f"{p:.2f} {lab}" for lab, p in r["top"][:k]) for r in rows
    ]
