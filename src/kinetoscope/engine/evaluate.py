"""Multi-view evaluation: softmax averaged over a video's views, then top-k and per-class accuracy.

A video that cannot be read is never replaced by another one here: it is excluded, counted and listed
(``num_unreadable``, ``unreadable``), and the metrics are those of the readable videos; with
``on_error="raise"`` the first unreadable video stops the evaluation instead. Under ``torchrun`` every
rank evaluates a strided share of the videos (all views of a video on one rank, no padding) and the
shares are merged, so each video is counted exactly once.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .checkpoint import load_trained
from .config import TrainConfig, resolve_inputs
from .distributed import DistInfo, all_gather_objects, cleanup, eval_shard, init_distributed

EvalOnError = Literal["exclude", "raise"]


def compute_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int, topk: tuple[int, ...] = (1, 5)) -> dict:
    """Top-k accuracy (percent), mean class accuracy, per-class accuracy and the confusion matrix.

    ``probs`` is ``(N, K)`` (already averaged over views), ``labels`` ``(N,)``. Classes absent from
    ``labels`` are left out of the mean class accuracy (their per-class entry is ``None``).
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    ranked = np.argsort(-probs, axis=1, kind="stable")
    out: dict = {"num_videos": int(len(labels))}
    for k in topk:
        hit = (ranked[:, : min(k, probs.shape[1])] == labels[:, None]).any(1)
        out[f"top{k}"] = float(100.0 * hit.mean()) if len(labels) else 0.0
    pred = ranked[:, 0]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    per_class = [float(100.0 * confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    present = [a for a in per_class if a is not None]
    out["mean_class_accuracy"] = float(np.mean(present)) if present else 0.0
    out["per_class_accuracy"] = per_class
    out["confusion_matrix"] = confusion.tolist()
    return out


@torch.no_grad()
def predict_views(
    model: nn.Module, video: torch.Tensor, amp_dtype: torch.dtype | None = None, max_clips: int | None = None
) -> torch.Tensor:
    """``(B, V, C, T, H, W)`` -> softmax probabilities averaged over the ``V`` views, ``(B, K)``.

    The ``B * V`` clips go through the model ``max_clips`` at a time (all at once by default).
    """
    B, V = video.shape[:2]
    clips = video.flatten(0, 1)  # (B*V, C, T, H, W)
    ctx = torch.autocast(video.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with ctx:
        logits = torch.cat([model(c) for c in clips.split(max_clips or len(clips))])  # (B*V, K)
    return logits.float().softmax(-1).view(B, V, -1).mean(1)


def views_per_video(dataset) -> int:
    return getattr(dataset, "clips", 1) * getattr(dataset, "crops", 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    info: DistInfo | None = None,
    batch_size: int = 8,
    workers: int = 2,
    amp_dtype: torch.dtype | None = None,
    topk: int = 5,
    save_probs: bool = False,
    progress: bool = False,
) -> dict:
    """Evaluate ``dataset`` (all views of a video per item, ``on_error="skip"`` or ``"raise"``).

    ``batch_size`` counts clips per forward pass, a video's views included: a loader batch holds
    ``max(1, batch_size // views)`` videos and the clips go through the model ``batch_size`` at a time.
    Returns the metrics of :func:`compute_metrics` over the readable videos, plus ``num_total``,
    ``num_unreadable``, ``unreadable`` (``{index, path, reason}``), ``per_video`` rows ``{index,
    path, label, pred, top}`` (``top``: the ``topk`` best ``[class, probability]``; the full
    probability vector as ``probs`` only with ``save_probs``) and the one-line ``summary``. Every
    rank gets the same dict.
    """
    from .._progress import progress as progress_bar
    from ..data import collate_valid

    info = info or DistInfo()
    model.eval()
    shard = Subset(dataset, eval_shard(len(dataset), info.rank, info.world_size))
    videos_per_batch = max(1, batch_size // views_per_video(dataset))
    loader = DataLoader(
        shard,
        batch_size=videos_per_batch,
        num_workers=workers,
        collate_fn=collate_valid,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip  (no draw from the global RNG)
    indices, probs, labels, bad = [], [], [], []
    t0 = time.perf_counter()
    bar = progress_bar(total=len(shard), desc="evaluating", enabled=progress and info.is_main, leave=False,
                       unit="video")  # fmt: skip
    for batch in loader:
        bad += [(int(e["index"]), e["path"], e["error"]) for e in batch["errors"]]
        if "video" in batch:
            video = batch["video"].to(info.device, non_blocking=True)
            if video.dim() == 5:  # a dataset without a views axis
                video = video.unsqueeze(1)
            probs.append(predict_views(model, video, amp_dtype, max_clips=batch_size).cpu())
            labels.append(batch["label"])
            indices.append(batch["index"])
        bar.update(len(batch["errors"]) + (len(batch["index"]) if "video" in batch else 0))
    bar.close()
    num_classes = dataset.num_classes
    local = (
        torch.cat(indices).tolist() if indices else [],
        torch.cat(probs).numpy() if probs else np.zeros((0, num_classes)),
        torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64),
        bad,
    )
    parts = all_gather_objects(local, info)
    idx = [i for part in parts for i in part[0]]
    all_probs = np.concatenate([part[1] for part in parts]) if idx else np.zeros((0, num_classes))
    all_labels = np.concatenate([part[2] for part in parts]).astype(np.int64)
    unreadable = sorted((row for part in parts for row in part[3]), key=lambda r: r[0])
    covered = idx + [row[0] for row in unreadable]
    if len(set(covered)) != len(covered) or len(covered) != len(dataset):
        raise RuntimeError(f"evaluation covered {len(set(covered))} of {len(dataset)} videos ({len(covered)} results)")
    if not idx:
        raise ValueError(
            f"none of the {len(dataset)} evaluation videos could be read (first: {unreadable[0][1]}: "
            f"{unreadable[0][2]}); `kinetoscope check-videos` lists them all"
        )
    order = np.argsort(idx, kind="stable")
    idx = [idx[i] for i in order]
    all_probs, all_labels = all_probs[order], all_labels[order]
    metrics = compute_metrics(all_probs, all_labels, num_classes)
    metrics["num_total"] = len(dataset)
    metrics["num_unreadable"] = len(unreadable)
    metrics["unreadable"] = [{"index": i, "path": p, "reason": r} for i, p, r in unreadable]
    metrics["seconds"] = time.perf_counter() - t0
    k = min(topk, num_classes)
    rows = []
    for i, lab, p in zip(idx, all_labels, all_probs):
        best = np.argsort(-p, kind="stable")[:k]
        row = {"index": int(i), "path": dataset.samples[i][0], "label": int(lab), "pred": int(best[0]),
               "top": [[int(c), round(float(p[c]), 6)] for c in best]}  # fmt: skip
        if save_probs:
            row["probs"] = [round(float(x), 6) for x in p]
        rows.append(row)
    metrics["per_video"] = rows
    metrics["summary"] = summary(metrics)
    return metrics


def summary(metrics: dict) -> str:
    """One line: top-1/top-5/mean class accuracy over how many videos, and what was excluded."""
    line = (f"top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}  mean class accuracy "
            f"{metrics['mean_class_accuracy']:.2f}  over {metrics['num_videos']} videos")  # fmt: skip
    if metrics.get("num_unreadable"):
        line += f" ({metrics['num_unreadable']} of {metrics['num_total']} videos unreadable, excluded)"
    return line


def eval_dataset(
    cfg: TrainConfig,
    annotations,
    classes: list[str],
    root=None,
    views: str | None = None,
    on_error: EvalOnError = "exclude",
    report_dir: str | Path | None = None,
):
    """The multi-view evaluation dataset a run's config implies, over ``annotations`` (a file, or a list
    of ``(path, label)``). Unreadable videos are excluded (``on_error="exclude"``), never substituted."""
    if on_error not in ("exclude", "raise"):
        raise ValueError(f"evaluation on_error must be 'exclude' or 'raise', got {on_error!r}")
    inputs = resolve_inputs(cfg)
    return clip_dataset(
        inputs, annotations, views or inputs["views"], root=root, train=False, crop_size=inputs["size"],
        short_side=cfg.short_side, mean=inputs["mean"], std=inputs["std"], classes=classes, backend=cfg.backend,
        on_error="raise" if on_error == "raise" else "skip", report_dir=report_dir,
        format=cfg.format if not isinstance(annotations, list) else "auto", warn=False,
    )  # fmt: skip


def clip_dataset(inputs: dict, annotations, views: str, **kwargs):
    """The dataset of a run's resolved ``inputs``: a ``VideoDataset`` with their sampling and ``views``,
    or for an image run an ``ImageDataset`` (each image a clip of ``frames`` identical frames; one
    temporal view). Both yield the same ``{"video", "label", "index"}`` items."""
    from ..data import ImageDataset, VideoDataset, parse_views

    if not inputs["images"]:
        return VideoDataset(annotations, sampling=inputs["sampling"], views=views, **kwargs)
    clips, crops = parse_views(views)
    if clips != 1:
        raise ValueError(f"views {views}: an image has one temporal view; use 1x1 or 1x3")
    return ImageDataset(annotations, frames=inputs["frames"], crops=crops, **kwargs)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    root: str | Path | None = None,
    views: str | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    device: str = "auto",
    on_error: EvalOnError = "exclude",
    topk: int = 5,
    save_probs: bool = False,
    progress: bool = True,
) -> dict | None:
    """``kinetoscope eval`` as a function: the metrics of a checkpoint (EMA weights when it has them) on
    ``data`` (default: the run's validation set), with ``classes``, ``checkpoint`` and ``weights`` added.

    ``batch_size`` counts clips per forward pass (default: the run's training batch size). Under
    ``torchrun`` the videos are split across the processes; ranks other than 0 return ``None``.
    """
    info = init_distributed(device)
    try:
        model, classes, cfg, weights = load_trained(checkpoint, info.device)
        if not (data or cfg.val):
            raise ValueError("no evaluation data: pass --data ANNOTATIONS (the run has no validation set)")
        ds = eval_dataset(cfg, data or cfg.val, classes, root if data else (root or cfg.root), views, on_error)
        metrics = evaluate(model, ds, info, batch_size or cfg.batch_size, workers, topk=topk, save_probs=save_probs,
                           progress=progress)  # fmt: skip
    finally:
        cleanup()
    if not info.is_main:
        return None
    return dict(metrics, classes=classes, checkpoint=str(checkpoint), weights=weights)
