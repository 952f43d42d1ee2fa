"""Each family learns the direction of time: a few optimiser steps on a clip-order task make the loss fall.

The task has no other cue: every clip appears twice, played forwards (class 0) and backwards (class 1),
so the two classes hold the same frames and a model blind to frame order stays at ``ln 2``. A falling
loss means the temporal pathway carries gradient from the head down to where frames meet.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from kinetoscope import create_model
from kinetoscope.engine import TrainConfig
from kinetoscope.models import get_model_config


def clip_order_toy(pairs: int = 8, frames: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``2 * pairs`` clips ``(B, 3, T, H, W)``: a bright square sliding over noise, each motion once as
    rendered (label 0) and once played backwards (label 1)."""
    g = torch.Generator().manual_seed(seed)
    side = size // 4
    step = max(1, (size - side) // (2 * frames))
    clips = []
    for _ in range(pairs):
        clip = 0.3 * torch.randn(3, frames, size, size, generator=g)
        y0, x0 = torch.randint(0, size - side, (2,), generator=g).tolist()
        dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
        dx = 1 if dy == dx == 0 else dx
        for t in range(frames):
            y = min(max(y0 + dy * step * t, 0), size - side)
            x = min(max(x0 + dx * step * t, 0), size - side)
            clip[:, t, y : y + side, x : x + side] += 2.0
        clips += [clip, clip.flip(1)]
    return torch.stack(clips), torch.arange(2 * pairs) % 2


def fit_clip_order(
    model: torch.nn.Module, steps: int, lr: float, weight_decay: float = 0.05, warmup: int = 0
) -> list[float]:
    """Full-batch AdamW on :func:`clip_order_toy`, the learning rate rising linearly over the first
    ``warmup`` steps; the loss of every step."""
    x, y = clip_order_toy()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stat_nano", "sct_nano", "cst_nano"])
def test_factorised_nano_learns_clip_order(name):
    """The registered nano at its recipe's learning rate, warmed up over 10 steps as the recipe warms up,
    fits the toy well below the order-blind ln 2 in 30 full-batch steps. Before issue 15's fixes all three
    stayed at ln 2 (STAT: features collapsed at lr 1e-3; SCT / CST: frame order nearly / exactly invisible
    at init). (``cst_nano``'s tubelets made its first full-batch step at lr 1e-3, its recipe's lr then,
    overshoot without it.)"""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, num_frames=8, img_size=32).train()
    lr = get_model_config(name).recipe.get("lr", TrainConfig.lr)  # what `kinetoscope train --model name` uses
    losses = fit_clip_order(model, steps=30, lr=lr, warmup=10)
    assert losses[0] > 0.6  # starts at chance
    assert max(losses[-3:]) < 0.5 * math.log(2), f"{name}: {[round(v, 2) for v in losses]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pst_nano", "dualformer_nano"])
def test_windowed_nano_learns_the_order_of_frames(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, num_frames=8, img_size=32)
    losses = fit_clip_order(model, steps=40, lr=1e-3, weight_decay=0.0)
    assert losses[0] == pytest.approx(math.log(2), abs=0.15)  # starts at chance
    assert sum(losses[-5:]) / 5 < 0.2, losses  # both directions of every clip told apart


@pytest.mark.slow
def test_clip_order_toy_has_no_cue_but_order():
    # PST with no patch shift and a one-frame patch embedding is 2D Swin frame by frame: blind to order
    torch.manual_seed(0)
    model = create_model("pst_nano", num_classes=2, num_frames=8, img_size=32, tps=None, patch_size=(1, 4, 4))
    losses = fit_clip_order(model, steps=40, lr=1e-3, weight_decay=0.0)
    assert sum(losses[-5:]) / 5 == pytest.approx(math.log(2), abs=0.02)
