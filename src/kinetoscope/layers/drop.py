"""Stochastic depth. ``DropPath`` comes from timm; the schedule is ours because every family needs the
same linear ramp and the papers state it as one."""

from __future__ import annotations

from timm.layers import DropPath

__all__ = ["DropPath", "drop_path_schedule"]


def drop_path_schedule(rate: float, depth: int) -> list[float]:
    """Linear ramp 0 -> ``rate`` over ``depth`` blocks (Swin, DeiT, MViT, DualFormer)."""
    if depth <= 1:
        return [0.0] * depth
    return [rate * i / (depth - 1) for i in range(depth)]
