"""Learned position embeddings and their resampling to other frame counts and crop sizes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resample_1d(embed: Tensor, length: int) -> Tensor:
    """``(1, L, C)`` -> ``(1, length, C)`` by linear interpolation (temporal position embeddings)."""
    if embed.shape[1] == length:
        return embed
    x = embed.transpose(1, 2)  # (1, C, L)
    x = F.interpolate(x.float(), size=length, mode="linear", align_corners=False)
    return x.transpose(1, 2).to(embed.dtype)


def resample_2d(embed: Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """``(1, gh*gw, C)`` -> ``(1, nh*nw, C)`` by bicubic interpolation (spatial position embeddings)."""
    if tuple(grid) == tuple(new_grid):
        return embed
    C = embed.shape[-1]
    x = embed.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    x = F.interpolate(x.float(), size=new_grid, mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], C).to(embed.dtype)
