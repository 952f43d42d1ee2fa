"""Embeddings for retrieval and downstream heads: pooled pre-logits per video, and per clip.

:func:`extract_features` runs the run's test views (sampling, clips x crops, as ``eval`` and ``predict``
use them) through ``forward_head(forward_features(x), pre_logits=True)``: one ``(num_features,)`` vector per
view, and per video their mean. A video that cannot be read is reported and left out, never replaced.
:func:`save_features` writes ``.npy`` (rows named by a JSON sidecar beside it) or ``.safetensors``
(names and settings in its metadata).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._files import atomic_write, check_output_file
from .checkpoint import load_trained
from .config import resolve_inputs
from .distributed import resolve_device
from .evaluate import eval_dataset, views_per_video

FEATURE_SUFFIXES = (".npy", ".safetensors")


@torch.no_grad()
def pooled_features(model: nn.Module, clips: torch.Tensor, max_clips: int | None = None) -> torch.Tensor:
    """``(N, C, T, H, W)`` clips -> pooled pre-logits ``(N, num_features)``, ``max_clips`` at a time."""
    return torch.cat(
        [model.forward_head(model.forward_features(c), pre_logits=True) for c in clips.split(max_clips or len(clips))]
    )


def feature_outputs(output: str | Path) -> list[Path]:
    """The files :func:`save_features` writes for ``output``: the ``.npy`` and its JSON sidecar, or the
    ``.safetensors``."""
    out = Path(output)
    if out.suffix not in FEATURE_SUFFIXES:
        raise ValueError(f"--output {out}: the suffix chooses the format, .npy or .safetensors")
    return [out, out.with_suffix(".json")] if out.suffix == ".npy" else [out]


def extract_features(
    checkpoint: str | Path,
    videos: Sequence[str | Path],
    views: str | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Features of ``videos`` with the run's test views (or ``views``), ``batch_size`` clips per pass.

    Returns ``{"videos", "features" (N, D), "clip_features" (N, V, D), "unreadable": [{"video",
    "error"}], "model", "checkpoint", "weights", "sampling", "views", "crop"}`` with the arrays in float32
    NumPy and the views of a video in the dataset's order (clip-major: clip 0 crop 0, clip 0 crop 1, ...).
    """
    from torch.utils.data import DataLoader

    from .._progress import progress as progress_bar
    from ..data import collate_valid

    dev = resolve_device(device)
    model, classes, cfg, weights = load_trained(checkpoint, dev)
    paths = [str(v) for v in videos]
    if not paths:
        raise ValueError("no videos given")
    ds = eval_dataset(cfg, [(p, 0) for p in paths], classes, views=views, on_error="exclude")
    clips = batch_size or cfg.batch_size
    loader = DataLoader(ds, batch_size=max(1, clips // views_per_video(ds)), num_workers=workers,
                        collate_fn=collate_valid)  # fmt: skip
    feats: dict[int, torch.Tensor] = {}
    errors: dict[int, str] = {}
    bar = progress_bar(total=len(paths), desc="features", enabled=progress, leave=False, unit="video")
    for batch in loader:
        errors.update({int(e["index"]): e["error"] for e in batch["errors"]})
        if "video" in batch:
            video = batch["video"]  # (B, V, C, T, H, W)
            out = pooled_features(model, video.flatten(0, 1).to(dev), clips).float().cpu()
            feats.update(zip(batch["index"].tolist(), out.view(*video.shape[:2], -1)))
        bar.update(len(batch["errors"]) + (len(batch["index"]) if "video" in batch else 0))
    bar.close()
    order = sorted(feats)
    if not order:
        raise ValueError(f"none of the {len(paths)} videos could be read (first: {paths[0]}: {errors[0]})")
    per_clip = torch.stack([feats[i] for i in order]).numpy()  # (N, V, D)
    inputs = resolve_inputs(cfg)
    return {
        "videos": [paths[i] for i in order],
        "features": per_clip.mean(1),
        "clip_features": per_clip,
        "unreadable": [{"video": paths[i], "error": errors[i]} for i in sorted(errors)],
        "model": cfg.model,
        "checkpoint": str(checkpoint),
        "weights": weights,
        "sampling": inputs["sampling"],
        "views": views or inputs["views"],
        "crop": inputs["size"],
    }


def save_features(result: dict, output: str | Path, per_clip: bool = False, overwrite: bool = False) -> list[Path]:
    """Write ``result`` of :func:`extract_features`: ``(N, D)`` per video, or ``(N, V, D)`` per clip with
    ``per_clip``. ``.npy`` gets a JSON sidecar (same name, ``.json``) naming the rows; ``.safetensors``
    holds ``features`` (and ``clip_features`` with ``per_clip``) with the same facts in its metadata."""
    files = feature_outputs(output)
    for f in files:
        check_output_file(f, overwrite, "--output" if f == files[0] else "features sidecar")
    array = result["clip_features"] if per_clip else result["features"]
    info = {k: result[k] for k in ("videos", "unreadable", "model", "checkpoint", "weights", "sampling", "views",
                                   "crop")}  # fmt: skip
    info |= {"per_clip": per_clip, "shape": list(array.shape),
             "rows": "videos, in order" + ("; then views, clip-major (clip 0 crop 0, clip 0 crop 1, ...)" if per_clip
                                             else "; each the mean of its views' features")}  # fmt: skip
    out = files[0]
    if out.suffix == ".npy":
        with atomic_write(out, "wb") as f:
            np.save(f, np.ascontiguousarray(array, dtype=np.float32))
        with atomic_write(files[1], "w") as f:
            json.dump(info, f, indent=1)
    else:
        from safetensors.numpy import save

        tensors = {"features": np.ascontiguousarray(result["features"], dtype=np.float32)}
        if per_clip:
            tensors["clip_features"] = np.ascontiguousarray(result["clip_features"], dtype=np.float32)
        with atomic_write(out, "wb") as f:
            f.write(save(tensors, metadata={"kinetoscope_features": json.dumps(info)}))
    return files
