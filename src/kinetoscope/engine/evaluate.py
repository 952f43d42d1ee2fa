"""Multi-view evaluation: softmax averaged over a video's views, then top-k and per-class accuracy.

Under ``torchrun`` every rank evaluates a strided share of the videos (all views of a video on one
rank, no padding) and rank 0 merges the shares, so each video is counted exactly once.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .distributed import DistInfo, all_gather_objects, eval_shard


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
def predict_views(model: nn.Module, video: torch.Tensor, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(B, V, C, T, H, W)`` -> softmax probabilities averaged over the ``V`` views, ``(B, K)``."""
    B, V = video.shape[:2]
    ctx = torch.autocast(video.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with ctx:
        logits = model(video.flatten(0, 1))  # (B*V, K)
    return logits.float().softmax(-1).view(B, V, -1).mean(1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    info: DistInfo | None = None,
    batch_size: int = 4,
    workers: int = 2,
    amp_dtype: torch.dtype | None = None,
) -> dict:
    """Evaluate ``dataset`` (which yields all views of a video per item) with ``model``.

    Returns the metrics of :func:`compute_metrics` plus ``per_video`` rows ``{index, path, label,
    pred, probs}`` on rank 0 (other ranks get the same dict).
    """
    info = info or DistInfo()
    model.eval()
    shard = Subset(dataset, eval_shard(len(dataset), info.rank, info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, persistent_workers=False)
    indices, probs, labels = [], [], []
    t0 = time.perf_counter()
    for batch in loader:
        video = batch["video"].to(info.device, non_blocking=True)
        if video.dim() == 5:  # a dataset without a views axis
            video = video.unsqueeze(1)
        probs.append(predict_views(model, video, amp_dtype).cpu())
        labels.append(batch["label"])
        indices.append(batch["index"])
    local = (
        torch.cat(indices).tolist() if indices else [],
        torch.cat(probs).numpy() if probs else np.zeros((0, getattr(dataset, "num_classes", 0))),
        torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64),
    )
    parts = all_gather_objects(local, info)
    idx = [i for part in parts for i in part[0]]
    all_probs = np.concatenate([part[1] for part in parts]) if idx else np.zeros((0, dataset.num_classes))
    all_labels = np.concatenate([part[2] for part in parts]).astype(np.int64)
    order = np.argsort(idx, kind="stable")
    idx = [idx[i] for i in order]
    all_probs, all_labels = all_probs[order], all_labels[order]
    if len(set(idx)) != len(idx) or len(idx) != len(dataset):
        raise RuntimeError(f"evaluation covered {len(set(idx))} of {len(dataset)} videos ({len(idx)} results)")
    metrics = compute_metrics(all_probs, all_labels, dataset.num_classes)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["per_video"] = [
        {
            "index": int(i),
            "path": dataset.samples[i][0],
            "label": int(lab),
            "pred": int(p.argmax()),
            "probs": [round(float(x), 6) for x in p],
        }
        for i, lab, p in zip(idx, all_labels, all_probs)
    ]
    return metrics


def load_trained(checkpoint: str, device: str | torch.device = "cpu", **model_overrides):
    """``(model, classes, config)`` from a training checkpoint or an exported ``.safetensors`` file."""
    from ..models import create_model
    from .checkpoint import load_model_weights
    from .config import TrainConfig
    from .train import resolve_inputs

    weights, meta = load_model_weights(checkpoint)
    cfg = meta.get("config") or {}
    classes = meta.get("classes")
    if not cfg.get("model") or not classes:
        raise ValueError(f"{checkpoint}: no model name or class list inside; was it written by kinetoscope train?")
    tcfg = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    inputs = resolve_inputs(tcfg)
    kwargs = dict(tcfg.model_kwargs or {}, **model_overrides)
    model = create_model(tcfg.model, num_classes=len(classes), num_frames=inputs["frames"], img_size=inputs["size"],
                         **kwargs)  # fmt: skip
    model.load_state_dict(weights)
    return model.to(device).eval(), classes, tcfg


def eval_dataset(cfg, annotations, classes: list[str], root=None, views: str | None = None, on_error="substitute"):
    """The multi-view evaluation dataset a trained run's config implies, over new annotations (or a
    list of ``(path, label)``)."""
    from ..data import VideoDataset
    from .train import resolve_inputs, with_frames

    inputs = resolve_inputs(cfg)
    return VideoDataset(
        annotations, root=root, sampling=with_frames(inputs["sampling"], inputs["frames"]),
        views=views or inputs["views"], train=False, crop_size=inputs["size"], short_side=cfg.short_side,
        mean=inputs["mean"], std=inputs["std"], classes=classes, backend=cfg.backend, on_error=on_error,
    )  # fmt: skip
