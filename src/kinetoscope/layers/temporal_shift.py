"""Temporal Patch Shift (TPS) and channel shift, the zero-parameter temporal mixing of PST.

Xiang et al., "Spatiotemporal Self-attention Modeling with Temporal Patch Shift for Action
Recognition", ECCV 2022. Before self-attention, each spatial cell of a frame is replaced by the same
cell of another frame (``PatchShift``), so a 2D attention sees several frames at once at no cost; the
attention output is moved back to its own frame (``ShiftBack``). Shift patterns are small tables of
frame offsets tiled over each attention window from its top-left cell (paper Fig. 2 and the
"Shift Patterns" table):

* ``A`` (2x2, 3 frames), ``B`` (2x2, 4 frames), ``C`` (3x3, 9 frames, the paper's default) and
  ``D`` (4x4, 16 frames); any other 2D integer table works too.

Offset ``p`` means "the patch moves ``p`` frames forward": output frame ``t`` reads input frame
``(t - p) mod T`` (cyclic temporal padding, as in the paper).

Channel shift is TSM inside attention: per head, the first ``1/fold_div`` of the channels come from
frame ``t-1`` and the next ``1/fold_div`` from ``t+1``; at the clip's ends those channels keep their
own values (the released PST code; neither cyclic nor zero-padded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

SHIFT_PATTERNS: dict[str, tuple[tuple[int, ...], ...]] = {
    "A": ((0, 1), (-1, 0)),
    "B": ((0, 1), (-1, 2)),
    "C": ((-4, 1, 2), (-1, 0, 3), (-2, -3, 4)),
    "D": ((0, 1, 2, 3), (-1, -7, 4, 5), (-2, -4, 7, 6), (-3, -5, -6, 8)),
}


def pattern_table(pattern: str | Sequence[Sequence[int]]) -> Tensor:
    """The offset table of a named pattern (or a user table) as a ``(ph, pw)`` long tensor."""
    if isinstance(pattern, str):
        if pattern not in SHIFT_PATTERNS:
            raise ValueError(f"unknown shift pattern {pattern!r}; choose one of {sorted(SHIFT_PATTERNS)}")
        pattern = SHIFT_PATTERNS[pattern]
    table = torch.tensor(pattern, dtype=torch.long)
    if table.dim() != 2:
        raise ValueError(f"a shift pattern is a 2D table of frame offsets, got shape {tuple(table.shape)}")
    return table


def cell_offsets(pattern: str | Sequence[Sequence[int]], grid: Sequence[int]) -> Tensor:
    """Offsets ``(gh * gw,)`` of the cells of a ``grid = (gh, gw)`` window, the table tiled from (0, 0)."""
    table = pattern_table(pattern)
    ph, pw = table.shape
    rows = torch.arange(grid[0]) % ph
    cols = torch.arange(grid[1]) % pw
    return table[rows[:, None], cols[None, :]].reshape(-1)


def source_frames(offsets: Tensor, num_frames: int) -> Tensor:
    """``(T, N)``: the input frame that output frame ``t`` reads at cell ``n`` (cyclic)."""
    t = torch.arange(num_frames, device=offsets.device)[:, None]
    return (t - offsets[None, :]) % num_frames


def patch_shift(x: Tensor, offsets: Tensor, time_dim: int = 1, cell_dim: int = -2, inverse: bool = False) -> Tensor:
    """Move each cell ``n`` of ``x`` by ``offsets[n]`` frames along ``time_dim`` (cyclic).

    ``x`` has a time axis and a cell axis (e.g. ``(B, T, nW, N, C)``); ``inverse=True`` is ShiftBack.
    One gather, no loop over frames or cells.
    """
    T = x.shape[time_dim]
    src = source_frames(-offsets if inverse else offsets, T).to(x.device)  # (T, N)
    time_dim, cell_dim = time_dim % x.dim(), cell_dim % x.dim()
    view = [1] * x.dim()
    view[time_dim], view[cell_dim] = T, offsets.numel()
    index = src.reshape(view).expand(x.shape)
    return x.gather(time_dim, index)


def channel_shift(x: Tensor, num_heads: int, fold_div: int = 8, time_dim: int = 1) -> Tensor:
    """TSM-style shift of ``x (..., C)`` along ``time_dim``, applied within each head's channels.

    Per head of ``c = C / num_heads`` channels, ``fold = c // fold_div``: channels ``[0, fold)`` take
    frame ``t-1``, ``[fold, 2 fold)`` take ``t+1``; the clip's ends keep their own values.
    """
    C = x.shape[-1]
    c = C // num_heads
    fold = c // fold_div
    if fold == 0:
        return x
    xh = x.unflatten(-1, (num_heads, c))  # (..., heads, c)
    out = xh.clone()
    prev = xh.narrow(time_dim, 0, x.shape[time_dim] - 1)
    nxt = xh.narrow(time_dim, 1, x.shape[time_dim] - 1)
    out.narrow(time_dim, 1, x.shape[time_dim] - 1)[..., :fold] = prev[..., :fold]
    out.narrow(time_dim, 0, x.shape[time_dim] - 1)[..., fold : 2 * fold] = nxt[..., fold : 2 * fold]
    return out.flatten(-2)
