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

:class:`TemporalShiftAttention` puts either shift around an attention module (ours or timm's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .windows import geometry_buffer

ShiftKind = Literal["patch", "channel"]

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


def gather_frames(x: Tensor, sources: Tensor, time_dim: int = 1, cell_dim: int = -2) -> Tensor:
    """Cell ``n`` of frame ``t`` of ``x`` replaced by cell ``n`` of frame ``sources[t, n]``: one gather.

    ``x`` has a time axis and a cell axis (e.g. ``(B, T, nW, N, C)``); ``sources`` is ``(T, N)``.
    """
    T = x.shape[time_dim]
    time_dim, cell_dim = time_dim % x.dim(), cell_dim % x.dim()
    view = [1] * x.dim()
    view[time_dim], view[cell_dim] = T, sources.shape[1]
    index = sources.to(x.device).reshape(view).expand(x.shape)
    return x.gather(time_dim, index)


def patch_shift(x: Tensor, offsets: Tensor, time_dim: int = 1, cell_dim: int = -2, inverse: bool = False) -> Tensor:
    """Move each cell ``n`` of ``x`` by ``offsets[n]`` frames along ``time_dim`` (cyclic).

    ``x`` has a time axis and a cell axis (e.g. ``(B, T, nW, N, C)``); ``inverse=True`` is ShiftBack.
    """
    return gather_frames(x, source_frames(-offsets if inverse else offsets, x.shape[time_dim]), time_dim, cell_dim)


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


class TemporalShiftAttention(nn.Module):
    """A temporal shift around an attention: shift the tokens over time, attend, shift the output back.

    Tokens arrive as rows ``(B * T * W, prefix + N, C)``, clip-major: the ``T`` frames of a clip, then
    the ``W`` windows of a frame (``W = 1`` for a ViT frame); the ``N`` cells of a row lie on ``grid``
    (the window, or the patch grid) and the ``prefix`` leading tokens (class tokens) stay in place.

    * ``kind="patch"``: TPS (Eq. 2): cell ``n`` of frame ``t`` reads frame ``t - offset[n]`` (cyclic),
      the pattern tiled on ``grid`` from its top-left cell; the attention output is moved back
      (ShiftBack; ``shift_back=False`` is ablation (d)).
    * ``kind="channel"``: TSM inside attention, per head (``num_heads``); not moved back (released PST).

    The wrapped attention is either owned (``attn``: the timm plug-in, whose attention is a child
    ``attn``) or passed to ``forward`` by an attention that wraps itself, so its parameters keep their
    own names (``forward(x, *args, attn=self.attend, ...)``: PST's blocks). The geometry (``num_frames``,
    ``windows``, ``grid``) is fixed here or given per call; nothing is carried from one call to the next.
    Other arguments go to the attention unchanged.
    """

    def __init__(
        self,
        attn: nn.Module | None = None,
        *,
        kind: ShiftKind,
        num_heads: int,
        pattern: str | Sequence[Sequence[int]] = "C",
        grid: Sequence[int] | None = None,
        prefix: int = 0,
        num_frames: int | None = None,
        windows: int = 1,
        shift_back: bool = True,
        fold_div: int = 8,
    ) -> None:
        super().__init__()
        if kind not in ("patch", "channel"):
            raise ValueError(f"a temporal shift is 'patch' or 'channel', got {kind!r}")
        pattern_table(pattern)  # a bad pattern fails here, not at the first forward
        self.attn = attn
        self.kind, self.num_heads, self.pattern, self.fold_div = kind, num_heads, pattern, fold_div
        self.grid = tuple(grid) if grid is not None else None
        self.prefix, self.num_frames, self.windows, self.shift_back = prefix, num_frames, windows, shift_back

    def shift(self, x: Tensor, grid: Sequence[int], inverse: bool = False) -> Tensor:
        """Shift (or, ``inverse=True``, shift back) ``x (B, T, W, prefix + N, C)`` along ``T``."""
        prefix, cells = x[:, :, :, : self.prefix], x[:, :, :, self.prefix :]
        if self.kind == "patch":
            T = x.shape[1]
            name = f"shift_src_{T}_{'x'.join(map(str, grid))}{'_back' if inverse else ''}"
            src = geometry_buffer(self, name, lambda: self._sources(T, grid, inverse), x.device)  # (T, N)
            cells = gather_frames(cells, src, time_dim=1, cell_dim=3)
        elif not inverse:
            cells = channel_shift(cells, self.num_heads, self.fold_div, time_dim=1)
        return torch.cat([prefix, cells], dim=3) if self.prefix else cells

    def _sources(self, num_frames: int, grid: Sequence[int], inverse: bool) -> Tensor:
        offsets = cell_offsets(self.pattern, grid)
        return source_frames(-offsets if inverse else offsets, num_frames)

    def forward(
        self,
        x: Tensor,
        *args,
        attn: Callable[..., Tensor] | None = None,
        num_frames: int | None = None,
        windows: int | None = None,
        grid: Sequence[int] | None = None,
        **kwargs,
    ) -> Tensor:
        attn = attn if attn is not None else self.attn
        T, W = num_frames or self.num_frames, windows or self.windows
        grid = grid if grid is not None else self.grid
        if attn is None or T is None or grid is None:
            raise ValueError("TemporalShiftAttention needs an attention, the frame count and the cell grid")
        if x.shape[0] % (T * W):
            raise ValueError(
                f"{x.shape[0]} token rows are not whole clips of {T} frames x {W} windows: feed the frames "
                "of each clip together, (B * T, C, H, W), at the size the model was built for"
            )
        out = attn(self.shift(x.unflatten(0, (-1, T, W)), grid).flatten(0, 2), *args, **kwargs)
        if self.kind == "patch" and self.shift_back:
            out = self.shift(out.unflatten(0, (-1, T, W)), grid, inverse=True).flatten(0, 2)
        return out
