"""Each family learns the direction of time: a few optimiser steps on a clip-order task make the loss fall.

The task has no other cue: every clip appears twice, played forwards (class 0) and backwards (class 1),
so the two classes hold the same frames and a model blind to frame order stays at ``ln 2``. A falling
loss means the temporal pathway carries gradient from the head down to where frames meet.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from kinetoscope.models import create_model


def _windowed_order_clips(n: int = 4, frames: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips of a bright square gliding along a random straight line over a noise background, each
    forwards and backwards: ``(2 n, 3, frames, size, size)`` and labels ``(2 n,)``."""
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(n, 3, frames, size, size, generator=g) * 0.2
    for i in range(n):
        start, end = torch.rand(2, 2, generator=g) * (size - 8)
        for t in range(frames):
            y, x = (start + (end - start) * t / (frames - 1)).round().int().tolist()
            clips[i, :, t, y : y + 8, x : x + 8] = 1.5
    return torch.cat([clips, clips.flip(2)]), torch.arange(2 * n) // n


def _fit(model: torch.nn.Module, steps: int, lr: float) -> list[float]:
    x, y = _windowed_order_clips()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pst_nano", "dualformer_nano"])
def test_windowed_nano_learns_the_order_of_frames(name):
    model = create_model(name, num_classes=2, num_frames=8, img_size=32)
    losses = _fit(model, steps=40, lr=1e-3)
    assert losses[0] == pytest.approx(math.log(2), abs=0.15)  # starts at chance
    assert sum(losses[-5:]) / 5 < 0.2, losses  # both directions of every clip told apart


@pytest.mark.slow
def test_windowed_order_task_has_no_cue_but_order():
    # PST with no patch shift and a one-frame patch embedding is 2D Swin frame by frame: blind to order
    model = create_model("pst_nano", num_classes=2, num_frames=8, img_size=32, tps=None, patch_size=(1, 4, 4))
    losses = _fit(model, steps=40, lr=1e-3)
    assert sum(losses[-5:]) / 5 == pytest.approx(math.log(2), abs=0.02)
