"""Learned position embeddings and their resampling to other frame counts and crop sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_1d(embed: Tensor, length: int, num_prefix_tokens: int = 0) -> Tensor:
    """``(1, prefix + L, C)`` -> ``(1, prefix + length, C)``: the ``L`` rows by linear interpolation
    (temporal position embeddings), the ``num_prefix_tokens`` leading rows (class tokens) unchanged."""
    prefix, rows = embed[:, :num_prefix_tokens], embed[:, num_prefix_tokens:]
    if rows.shape[1] == length:
        return embed
    x = rows.transpose(1, 2)  # (1, C, L)
    x = F.interpolate(x.float(), size=length, mode="linear", align_corners=False).transpose(1, 2).to(embed.dtype)
    return torch.cat([prefix, x], dim=1) if num_prefix_tokens else x


def resample_2d(
    embed: Tensor, grid: Sequence[int] | None, new_grid: Sequence[int], num_prefix_tokens: int = 0
) -> Tensor:
    """``(1, prefix + gh*gw, C)`` -> ``(1, prefix + nh*nw, C)``: the grid part by bicubic interpolation, the
    ``num_prefix_tokens`` leading rows (class tokens) unchanged. ``grid=None`` reads a square grid."""
    prefix, tokens = embed[:, :num_prefix_tokens], embed[:, num_prefix_tokens:]
    if grid is None:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"a position embedding of {tokens.shape[1]} grid tokens is not a square grid")
        grid = (side, side)
    if tuple(grid) == tuple(new_grid):
        return embed
    C = embed.shape[-1]
    x = tokens.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    x = F.interpolate(x.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    x = x.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], C).to(embed.dtype)
    return torch.cat([prefix, x], dim=1) if num_prefix_tokens else x
