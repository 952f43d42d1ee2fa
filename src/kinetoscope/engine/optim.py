"""Optimisers with the papers' parameter groups, and the learning-rate schedule as a pure function."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Four groups: {backbone, head} x {decay, no decay}.

    No weight decay on norms, biases (every 1-D parameter) and on the names the model lists in
    ``no_weight_decay()`` (position embeddings, class tokens, relative-position bias tables). The
    backbone's learning rate is ``lr * backbone_lr_mult`` (0.1 when fine-tuning from ImageNet, as
    DualFormer and PST do); ``lr_scale`` is read by the training loop.
    """
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith("head.")
        decay = p.ndim > 1 and name not in skip
        groups[(is_head, decay)].append(p)
    out = []
    for (is_head, decay), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "weight_decay": weight_decay if decay else 0.0,
                    "lr_scale": 1.0 if is_head else backbone_lr_mult,
                    "name": f"{'head' if is_head else 'backbone'}_{'decay' if decay else 'no_decay'}",
                }
            )
    return out


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """Layer-wise learning-rate decay (BEiT): ``lr_scale = layer_decay ** (depth - layer)``, the head at
    scale 1, built by timm's ``param_groups_layer_decay`` from the model's ``group_matcher()``; no weight
    decay on 1-D parameters and the names in ``no_weight_decay()``, as :func:`param_groups`."""
    from timm.optim import param_groups_layer_decay

    if not hasattr(model, "group_matcher"):
        raise ValueError(
            f"layer_decay needs the model's group_matcher() (which parameters form which layer); "
            f"{type(model).__name__} has none"
        )
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=sorted(skip), layer_decay=layer_decay)


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    backbone_lr_mult: float = 1.0,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    if layer_decay is not None:
        groups = layer_decay_groups(model, weight_decay, layer_decay)
    else:
        groups = param_groups(model, weight_decay, backbone_lr_mult)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=False)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    schedule: str = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Learning rate at optimiser step ``step`` (0-based).

    Linear warmup from ``base_lr / warmup_steps`` to ``base_lr``; then ``"cosine"`` decay to ``min_lr`` at
    ``total_steps``, or ``"step"`` decay by ``gamma`` at each milestone step (CSTransformer).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * gamma ** sum(step >= m for m in milestones)
    raise ValueError(f"schedule must be 'cosine' or 'step', got {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
