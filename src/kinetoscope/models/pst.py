"""Patch Shift Transformers: Swin and DeiT with Temporal Patch Shift (TPS).

Xiang, Li, Wang, Wei, Hua, Zhang. "Spatiotemporal Self-attention Modeling with Temporal Patch Shift
for Action Recognition", ECCV 2022.

A 2D transformer runs on every frame; before a block's attention each spatial cell is swapped for the
same cell of another frame (PatchShift), the attention runs as in 2D with the relative position bias
travelling with the shifted patches ("shift RPE"), and its output is moved back (ShiftBack):

    {i', Z'} = PatchShift(p, i, Z);  Q, K, V = W Z';  Z^ = ShiftBack(softmax(Q K^T / sqrt(d) + B(i')) V)

PST (the paper's model) alternates: blocks with an even index in each stage shift channels (TSM
inside attention), odd blocks (the shifted-window ones) shift patches with pattern C. Everything is
parameter-free, so ``tps=None`` is exactly 2D Swin/DeiT run frame by frame.

Choices where the paper or the released code (MartinXM/TPS) is silent or specialised:

* The released code is hard-wired to 16 token frames and 7x7 windows. Here any frame count and size
  work: spatial sizes are zero-padded to the window as Swin does; with a temporal window ``wt > 1``
  (the † variants) the token frames must divide by ``wt`` (a ``ValueError`` names valid counts).
* Relative position bias (``rel_pos_index``). Every block owns a table of ``(2D - 1)(2 wh - 1)(2 ww - 1)``
  rows, ``D`` the built token frames (the released size: 5239 rows for 16 token frames and 7x7 windows),
  and reads it at the offset ``(dt, dh, dw)`` between a query and a key. Patch-shift blocks give every
  token the frame it came from, ``src(t, n) = (t - P[n]) mod D`` for cell ``n`` of frame ``t`` ("shift
  RPE": the coordinates travel with the patches; ``shift_rpe=False`` keeps the frame ``t``).

  - ``"released"`` (default of every ``pst_*`` variant) is what MartinXM/TPS computes, so released
    weights compute the function they were trained with: the release builds the index over a
    (16, 7, 7) window and slices it ``[::16]``, i.e. the window of frame ``f`` reads the table at
    (query frame ``f``, key frame 0). Channel-shift blocks get ``dt = f`` (a bias of the absolute
    frame), patch-shift blocks ``dt = src(f, q) - src(0, k)``. Example: frame 1, query cell (1, 1),
    key cell (0, 0): ``dt = 1 - 4 = -3``.
  - ``"shift"`` (an ablation; our first reading of the paper's shift RPE): the true offset of the
    frames the two patches came from, ``src(f, q) - src(f, k)`` (-4 in the example; 0 in channel-shift
    blocks). With a table that is constant over ``dt`` (a start inflated from 2D Swin) both agree.

  Other token-frame counts: ``"released"`` is the same construction over a ``(D, wh, ww)`` window with
  ``D`` the token frames of the input (sources taken mod ``D``), so it is the release's function at 16
  token frames and the same rule elsewhere, for a model built for another ``num_frames`` as for an
  input with another frame count than built. Offsets beyond the built table (more token frames than
  built) are clamped to its edge. With a temporal window ``wt > 1`` (the † variants; not released) a
  key's frame is counted from the start of its window and a query's from the start of the clip, which
  is the release's rule at ``wt = 1``. The index (and the shifted-window mask) of each input geometry
  is built once and kept as a non-persistent buffer.
* ``PST-T†/B†`` "double the temporal attention window to 2": windows of (2, 7, 7) over two
  consecutive shifted frames (matches the paper's 74 / 252 GFLOPs; params unchanged).
* DeiT-S-TPS: the paper says only "a TPS module in every two blocks". We shift patches with pattern C
  tiled over the 14x14 grid in odd blocks, leave the class token in place, and share the 2D position
  embedding over frames (a per-frame embedding as in the released ``.pyc`` would add 1.2 M parameters
  at 16 frames and miss the paper's 22 M; ``temporal_pos_embed=True`` adds one). 16 frames match
  the paper's 74 GFLOPs (8 frames give 37).
* Head: final LayerNorm, average over (T, H, W) (Swin) or over the frames' class tokens (DeiT),
  dropout, linear, as the released I3D head.
* Paper numbers: params and GMACs match the paper within 2 % (PST-T/B measured on the release: 28.5 M
  with a 400-class head, 88.8 M with a 174-class head; 72 / 247 GMACs; † 74 / 252), DeiT-S-TPS within
  3 % (the released wrapper is a stale ``.pyc``; see above).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from ..layers import (
    Attention,
    PatchEmbed3d,
    PreNormBlock,
    TemporalShiftAttention,
    attention,
    check_video_input,
    drop_path_schedule,
    effective_window,
    geometry_buffer,
    pad_to_multiple,
    relative_position_index,
    resample_1d,
    resample_2d,
    shifted_window_mask,
    to_3tuple,
    window_coords,
)
from ..layers.temporal_shift import cell_offsets, source_frames
from ._base import FeatureTaps, VideoModel, check_grid_pool, init_weights_trunc_normal, stage_group_matcher
from ._config import NANO_RECIPE, ModelConfig, PaperReference, ReleasedWeights
from ._registry import Variant, register_variants
from ._weights import (
    CheckpointFormat,
    Recognised,
    blocks_per_stage,
    head_size,
    mmaction2_head_to_ours,
    ours_to_mmaction2,
    register_checkpoint_format,
    split_mmaction2,
)

ShiftKind = Literal["patch", "channel"] | None
TPSMode = Literal["pst", "patch", "channel"] | None
RelPosIndex = Literal["released", "shift"]

CITATION = "Xiang et al., Spatiotemporal Self-attention Modeling with Temporal Patch Shift, ECCV 2022"


def block_shift_kinds(depth: int, tps: TPSMode, alternate: bool = True) -> list[ShiftKind]:
    """Which temporal shift each block of a stage gets (paper Sec. 3.3, ablations (d) and (e)).

    ``"pst"``: channel shift in even blocks, patch shift in odd blocks. ``"patch"`` / ``"channel"``: that
    shift in odd blocks only ("alternative shift"), or in every block with ``alternate=False``.
    """
    if tps is None:
        return [None] * depth
    if tps not in ("pst", "patch", "channel"):
        raise ValueError(f"tps must be 'pst', 'patch', 'channel' or None, got {tps!r}")
    if tps == "pst":
        return ["channel" if i % 2 == 0 else "patch" for i in range(depth)]
    return [tps if (i % 2 == 1 or not alternate) else None for i in range(depth)]


# ------------------------------------------------------------------------------------------- blocks
def shift_rpe_index(
    num_frames: int,
    window: Sequence[int],
    table: Sequence[int],
    *,
    shift: ShiftKind,
    pattern: str | Sequence[Sequence[int]] = "C",
    shift_rpe: bool = True,
    mode: RelPosIndex = "released",
) -> Tensor:
    """Bias-table index ``(G, N, N)`` of the ``G = D / wt`` temporal window groups of ``D = num_frames``
    token frames (``G = 1`` when every group reads the same), ``N = wt * wh * ww`` (module docstring).

    ``table`` is the window the bias table is sized for, ``(table frames, Wh, Ww)``.
    """
    wt, wh, ww = window
    cells = window_coords((1, wh, ww))[:, 1:]  # (M, 2): (h, w) of the window's cells
    if shift == "patch" and shift_rpe:  # the frame each shifted patch came from
        frames = source_frames(cell_offsets(pattern, (wh, ww)), num_frames)  # (D, M)
    else:
        frames = torch.arange(num_frames)[:, None].expand(num_frames, wh * ww)
    query = torch.cat([frames[..., None], cells.expand(num_frames, -1, -1)], dim=-1)  # (D, M, 3)
    # released: a key carries the coordinates of the frame at its offset from its window's start
    key = query if mode == "shift" else query[torch.arange(num_frames) % wt]
    group = partial(rearrange, pattern="(g wt) m k -> g (wt m) k", wt=wt)
    index = relative_position_index(table, group(query), group(key))  # (G, N, N)
    return index[:1] if bool((index == index[:1]).all()) else index


def window_layout_index(
    size: Sequence[int],
    crop: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    pattern: str | Sequence[Sequence[int]] | None = None,
    shift_back: bool = True,
) -> tuple[Tensor, Tensor]:
    """Row indices that turn a ``size = (D, Hp, Wp)`` map into Swin's rolled windows and back, in one gather each.

    ``index_in`` (``D * Hp * Wp``): row ``(d, window, cell)`` of the attention's input is the map's row at the
    cell's place after rolling by ``-shift`` (Swin's cyclic shift), taken from frame ``src[d, cell]`` when
    ``pattern`` is given (the patch shift, :func:`~kinetoscope.layers.temporal_shift.source_frames`) else from
    frame ``d``. ``index_out`` (``D * H * W`` for ``crop = (H, W)``): map row ``(d, h, w)`` of the output is
    the attention output's row that rolling back by ``+shift`` puts there, from the frame the shift back reads
    (``shift_back``), with the zero padding cropped away.
    """
    D, Hp, Wp = size
    (wh, ww), (sh, sw) = window, shift
    cells = wh * ww
    a, b = torch.arange(wh).view(wh, 1), torch.arange(ww).view(1, ww)
    h = (torch.arange(Hp // wh).view(-1, 1, 1, 1) * wh + a.view(1, 1, wh, 1) + sh) % Hp  # (hi, 1, a, 1)
    w = (torch.arange(Wp // ww).view(1, -1, 1, 1) * ww + b.view(1, 1, 1, ww) + sw) % Wp  # (1, wi, 1, b)
    frames = torch.arange(D).view(D, 1)
    offsets = cell_offsets(pattern, (wh, ww)) if pattern is not None else torch.zeros(cells, dtype=torch.long)
    src = source_frames(offsets, D) if pattern is not None else frames.expand(D, cells)  # (D, cells)
    src = src.reshape(D, 1, 1, wh, ww)
    index_in = ((src * Hp + h) * Wp + w).flatten()  # rows in (d, hi, wi, a, b) order
    hr = (torch.arange(crop[0]) - sh) % Hp  # where map row h sits in the rolled map
    wr = (torch.arange(crop[1]) - sw) % Wp
    cell = (hr % wh).view(-1, 1) * ww + (wr % ww).view(1, -1)  # (H, W)
    win = (hr // wh).view(-1, 1) * (Wp // ww) + (wr // ww).view(1, -1)
    back = source_frames(-offsets, D) if pattern is not None and shift_back else frames.expand(D, cells)
    index_out = (back[:, cell] * (Hp // wh * (Wp // ww)) + win) * cells + cell  # (D, H, W)
    return index_in, index_out.flatten()


class ShiftWindowAttention(Attention):
    """PST's (S)W-MSA on a channels-last ``(B, D, H, W, C)`` map: Swin's windows (shifted by half a window
    when ``shifted``), a temporal shift around the attention, and the relative position bias table.

    Windows span ``wt`` consecutive token frames, so attention runs over ``N = wt * wh * ww`` tokens.
    """

    no_weight_decay_names = ("relative_position_bias_table",)

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window: Sequence[int],
        shifted: bool = False,
        shift: ShiftKind = None,
        pattern: str | Sequence[Sequence[int]] = "C",
        table_frames: int = 1,
        shift_back: bool = True,
        shift_rpe: bool = True,
        rel_pos_index: RelPosIndex = "released",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if rel_pos_index not in ("released", "shift"):
            raise ValueError(f"rel_pos_index must be 'released' or 'shift', got {rel_pos_index!r}")
        self.window, self.shifted = to_3tuple(window), shifted
        self.shift, self.pattern, self.shift_rpe, self.rel_pos_index = shift, pattern, shift_rpe, rel_pos_index
        self.table_frames = table_frames
        self.temporal_shift = (
            TemporalShiftAttention(kind=shift, num_heads=num_heads, pattern=pattern, shift_back=shift_back)
            if shift is not None
            else None
        )
        _, wh, ww = self.window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * table_frames - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, num_frames: int, window: Sequence[int]) -> Tensor:
        """``(G, heads, N, N)`` bias of the ``G`` temporal window groups (``G = 1`` when all are alike)."""
        table = self.relative_position_bias_table
        name = f"rel_index_{num_frames}_{'x'.join(map(str, window))}"
        index = geometry_buffer(self, name, lambda: self.relative_position_index(num_frames, window), table.device)
        return table[index].permute(0, 3, 1, 2)  # (G, N, N, heads) -> (G, heads, N, N)

    def relative_position_index(self, num_frames: int, window: Sequence[int]) -> Tensor:
        """This block's ``(G, N, N)`` index for ``num_frames`` token frames and an effective ``window``."""
        return shift_rpe_index(
            num_frames, window, (self.table_frames, *self.window[1:]), shift=self.shift, pattern=self.pattern,
            shift_rpe=self.shift_rpe, mode=self.rel_pos_index,
        )  # fmt: skip

    def window_mask(self, size: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> Tensor:
        """Swin's ``(nW, N, N)`` mask of a rolled ``(Hp, Wp)`` map, the same in every frame of a window."""
        mask = shifted_window_mask((1, *size), (1, *window[1:]), shift)  # (nW, M, M)
        return mask.repeat(1, window[0], window[0])  # (nW, N, N)

    # One gather in and one out (roll, window partition, patch shift and their inverses as a cached row index);
    # False runs the step-by-step reference path (the same numbers: both only move rows).
    fused_layout = True

    def forward(self, x: Tensor) -> Tensor:
        B, D, H, W, C = x.shape
        wt = self.window[0]
        spatial_shift = (0, self.window[1] // 2, self.window[2] // 2) if self.shifted else (0, 0, 0)
        window, shift = effective_window((wt, H, W), self.window, spatial_shift)
        window = (wt, *window[1:])  # the temporal window never shrinks: D % wt is checked by the model
        _, wh, ww = window
        x = pad_to_multiple(x, (wh, ww), dims=(2, 3))  # (B, D, Hp, Wp, C)
        Hp, Wp = x.shape[2:4]
        nW = (Hp // wh) * (Wp // ww)
        mask = None
        if any(shift):
            name = f"window_mask_{Hp}x{Wp}_{wt}x{wh}x{ww}_{shift[1]}x{shift[2]}"
            mask = geometry_buffer(self, name, lambda: self.window_mask((Hp, Wp), window, shift), x.device)
        if self.fused_layout:
            return self.forward_fused(x, (H, W), window, shift, mask)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[1], -shift[2]), dims=(2, 3))
        rows = rearrange(x, "b d (h wh) (w ww) c -> (b d h w) (wh ww) c", wh=wh, ww=ww)  # (B * D * nW, M, C)
        if self.temporal_shift is not None:
            rows = self.temporal_shift(
                rows, window, mask, D, nW, attn=self.attend, num_frames=D, windows=nW, grid=(wh, ww)
            )
        else:
            rows = self.attend(rows, window, mask, D, nW)
        x = rearrange(rows, "(b d h w) (wh ww) c -> b d (h wh) (w ww) c", d=D, h=Hp // wh, w=Wp // ww, wh=wh)
        if any(shift):
            x = torch.roll(x, shifts=(shift[1], shift[2]), dims=(2, 3))
        return x[:, :, :H, :W].contiguous()

    def forward_fused(
        self, x: Tensor, size: Sequence[int], window: Sequence[int], shift: Sequence[int], mask: Tensor | None
    ) -> Tensor:
        """:meth:`forward` from the padded ``x (B, D, Hp, Wp, C)`` with one row gather each way."""
        B, D, Hp, Wp, C = x.shape
        (H, W), (_, wh, ww) = size, window
        nW = (Hp // wh) * (Wp // ww)
        patch = self.temporal_shift is not None and self.temporal_shift.kind == "patch"
        back = patch and self.temporal_shift.shift_back
        key = f"{D}x{Hp}x{Wp}_{H}x{W}_{wh}x{ww}_{shift[1]}x{shift[2]}_{'p' if patch else ''}{'b' if back else ''}"
        pattern = self.temporal_shift.pattern if patch else None
        # both gathers in one buffer (built once per geometry): D*Hp*Wp rows in, then D*H*W rows out
        layout = geometry_buffer(
            self, f"layout_{key}",
            lambda: torch.cat(window_layout_index((D, Hp, Wp), (H, W), (wh, ww), shift[1:], pattern, back)),
            x.device,
        )  # fmt: skip
        index_in, index_out = layout[: D * Hp * Wp], layout[D * Hp * Wp :]
        rows = x.flatten(1, 3).index_select(1, index_in).view(B * D * nW, wh * ww, C)  # rolled, shifted windows
        if self.temporal_shift is not None and not patch:  # channel shift: no rows move, so the wrapper runs it
            rows = self.temporal_shift(
                rows, window, mask, D, nW, attn=self.attend, num_frames=D, windows=nW, grid=(wh, ww)
            )
        else:
            rows = self.attend(rows, window, mask, D, nW)
        return rows.view(B, D * nW * wh * ww, C).index_select(1, index_out).view(B, D, H, W, C)

    def attend(self, rows: Tensor, window: Sequence[int], mask: Tensor | None, num_frames: int, windows: int):
        """Attention inside windows of ``wt`` frames: ``(B * D * nW, M, C)`` rows -> the same rows."""
        D, nW, wt = num_frames, windows, window[0]
        x = rearrange(rows, "(b g wt n) m c -> b g n (wt m) c", g=D // wt, wt=wt, n=nW)  # (B, G, nW, N, C)
        B, G, _, N, C = x.shape
        qkv = self.qkv(x).reshape(B, G, nW, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(4, 0, 1, 2, 5, 3, 6).unbind(0)  # each (B, G, nW, heads, N, d)
        bias = self.position_bias(D, window)[:, None]  # (G, 1, heads, N, N)
        if mask is not None:
            bias = bias + mask[None, :, None]  # (G, nW, heads, N, N)
        out, _ = attention(q, k, v, bias, self.attn_drop if self.training else 0.0, scale=self.scale)
        out = self.proj_drop(self.proj(rearrange(out, "b g n h (wt m) d -> b g wt n m (h d)", wt=wt)))
        return rearrange(out, "b g wt n m c -> (b g wt n) m c")


class PatchMerging(nn.Module):
    """Swin's 2x2 spatial merge per frame: ``(B, D, H, W, C) -> (B, D, H/2, W/2, 2C)``.

    Channel order follows timm (neighbours ordered w-offset major), so timm weights load unchanged.
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, (2, 2), dims=(2, 3))
        x = rearrange(x, "b d (h h2) (w w2) c -> b d h w (w2 h2 c)", h2=2, w2=2)
        return self.reduction(self.norm(x))


class SwinTPSStage(nn.Module):
    """Patch merging at the start of the stage (timm's order), then its blocks."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class ShiftedFrameAttention(Attention):
    """ViT attention over the frames of clips, ``(B * T, 1 + P, C)`` rows with a clip's frames together,
    with an optional temporal shift around it (the class token stays in place)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        shift: ShiftKind = None,
        pattern: str | Sequence[Sequence[int]] = "C",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.temporal_shift = (
            TemporalShiftAttention(kind=shift, num_heads=num_heads, pattern=pattern, prefix=1) if shift else None
        )

    def forward(self, x: Tensor, num_frames: int, grid: Sequence[int]) -> Tensor:  # type: ignore[override]
        if self.temporal_shift is None:
            return super().forward(x)
        return self.temporal_shift(x, attn=super().forward, num_frames=num_frames, grid=grid)


# -------------------------------------------------------------------------------------------- models
class PatchShiftSwin(VideoModel):
    """PST: Swin Transformer with temporal patch shift (paper Fig. 4), on ``(B, 3, T, H, W)`` clips.

    Args:
        tps: ``"pst"`` (channel/patch alternating, the paper's model), ``"patch"``, ``"channel"`` or
            ``None`` (2D Swin frame by frame).
        pattern: shift pattern ``"A" | "B" | "C" | "D"`` or a table of frame offsets (ablation (b)).
        tps_stages: per-stage switch for the shift (ablation (c)); default all stages.
        alternate, shift_back, shift_rpe: ablation (d) switches.
        rel_pos_index: ``"released"`` (the released code's bias index) or ``"shift"`` (module docstring).
        window: attention window ``(wt, wh, ww)``; ``wt = 2`` gives PST†.
        global_pool: ``"avg"`` (the released I3D head) or ``"moments"`` (average and first moments over
            the frame, :func:`~kinetoscope.models._base.moment_pool`; not in the paper): ``pst_nano`` uses
            it, since with average pooling a clockwise turn about the frame centre looks like a
            counter-clockwise one to the head (docs/benchmarks/temporal_truth.md).
    """

    global_pool = "avg"  # over (D, H, W), as the released I3D head
    intermediate_norm = "last"

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 32,
        img_size: int = 224,
        patch_size: Sequence[int] = (2, 4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window: Sequence[int] = (1, 7, 7),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        tps: TPSMode = "pst",
        pattern: str | Sequence[Sequence[int]] = "C",
        tps_stages: Sequence[bool] | None = None,
        alternate: bool = True,
        shift_back: bool = True,
        shift_rpe: bool = True,
        rel_pos_index: RelPosIndex = "released",
        global_pool: Literal["avg", "moments"] = "avg",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.global_pool = check_grid_pool(global_pool)
        self.in_chans = in_chans
        self.patch_size = to_3tuple(patch_size)
        self.window = to_3tuple(window)
        self.num_frames = num_frames
        token_frames = -(-num_frames // self.patch_size[0])
        self._check_frames(token_frames)
        self.patch_embed = PatchEmbed3d(self.patch_size, in_chans, embed_dim, norm=True)
        self.pos_drop = nn.Dropout(drop_rate)
        tps_stages = tuple(tps_stages) if tps_stages is not None else (True,) * len(depths)
        if len(tps_stages) != len(depths):
            raise ValueError(f"tps_stages needs one flag per stage ({len(depths)}), got {tps_stages}")
        # The bias table spans the token frames a shifted patch can come from (the released model's size).
        table_frames = token_frames if (tps is not None or self.window[0] > 1) else 1
        dpr = iter(drop_path_schedule(drop_path_rate, sum(depths)))
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            shifts = block_shift_kinds(depth, tps if tps_stages[i] else None, alternate)
            blocks = [
                PreNormBlock(
                    dims[i],
                    ShiftWindowAttention(
                        dims[i], num_heads[i], window=self.window, shifted=j % 2 == 1, shift=shifts[j],
                        pattern=pattern, table_frames=table_frames, shift_back=shift_back, shift_rpe=shift_rpe,
                        rel_pos_index=rel_pos_index, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, proj_drop=drop_rate,
                    ),
                    mlp_ratio=mlp_ratio, proj_drop=drop_rate, drop_path=next(dpr),
                )
                for j in range(depth)
            ]  # fmt: skip
            downsample = PatchMerging(dims[i - 1], dims[i]) if i > 0 else nn.Identity()
            self.layers.append(SwinTPSStage(downsample, blocks))
        self.num_intermediates = len(depths)
        self.norm = nn.LayerNorm(dims[-1])
        self.init_head(dims[-1], num_classes, head_drop_rate)
        self.apply(init_weights_trunc_normal)

    def _check_frames(self, token_frames: int) -> None:
        wt = self.window[0]
        if token_frames % wt:
            valid = ", ".join(str(self.patch_size[0] * wt * k) for k in range(1, 6))
            raise ValueError(
                f"{token_frames} token frames do not divide by the temporal window {wt}; "
                f"use a frame count that is a multiple of {self.patch_size[0] * wt} (e.g. {valid})"
            )

    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """Stage outputs ``(B, D, H', W', C)`` channels-last; the features are the last one after the
        final LayerNorm, ``(B, D, H/32, W/32, C)`` for the 4-stage variants."""
        check_video_input(x, self.in_chans, type(self).__name__)
        self._check_frames(-(-x.shape[2] // self.patch_size[0]))
        x = self.patch_embed(x)  # (B, C, D, H/4, W/4)
        x = self.pos_drop(x.permute(0, 2, 3, 4, 1))  # (B, D, H, W, C)
        for s, stage in enumerate(self.layers):
            x = stage.downsample(x)
            x = self.run_blocks(stage.blocks, x)
            if (x := self.tap(taps, s, x)) is None:
                return None
        return self.norm(x)

    def group_matcher(self, coarse: bool = False) -> dict:
        return stage_group_matcher(r"^patch_embed", "layers", "downsample", coarse)

    def convert_2d_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm Swin: its buffers (masks, 2D indices) have no counterpart here; ``head.fc`` -> ``head``."""
        kept = {k: v for k, v in state_dict.items() if not k.endswith(("attn_mask", "relative_position_index"))}
        return super().convert_2d_state_dict(kept)

    def resize_2d_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key.endswith("relative_position_bias_table") and target.shape[0] % value.shape[0] == 0:
            return value.repeat(target.shape[0] // value.shape[0], 1)  # same 2D bias at every frame offset
        return None

    @property
    def frames_per_image(self) -> int:
        return self.patch_size[0] * self.window[0]  # one token frame per temporal window

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        """Bias tables of ``2 D - 1`` frame offsets -> the target's: offsets beyond the source table read
        its edge, as a model run on more token frames than built reads it (a one-offset table repeats)."""
        cells = (2 * self.window[1] - 1) * (2 * self.window[2] - 1)
        if key.endswith("relative_position_bias_table") and value.shape[0] % cells == target.shape[0] % cells == 0:
            src, dst = value.shape[0] // cells, target.shape[0] // cells  # 2 D - 1 offsets each
            rows = (torch.arange(dst) - dst // 2).clamp(-(src // 2), src // 2) + src // 2  # dt -> source row
            return value.view(src, cells, -1)[rows].reshape(target.shape)  # (2 D - 1, cells, heads)
        return super().resample_tensor(key, value, target)


class PatchShiftViT(VideoModel):
    """DeiT with TPS in every second block (paper Table 7), frames as a batch of images."""

    no_weight_decay_names = ("cls_token", "pos_embed", "time_embed")
    global_pool = "cls"  # average of the frames' class tokens
    intermediate_norm = "all"

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 16,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        tps: Literal["patch", "channel"] | None = "patch",
        pattern: str | Sequence[Sequence[int]] = "C",
        alternate: bool = True,
        temporal_pos_embed: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if tps == "pst":
            raise ValueError("DeiT-TPS supports tps='patch', 'channel' or None")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed3d((1, patch_size, patch_size), in_chans, embed_dim, pad=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, 1, embed_dim)) if temporal_pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_schedule(drop_path_rate, depth)
        shifts = block_shift_kinds(depth, tps, alternate)
        self.blocks = nn.ModuleList(
            PreNormBlock(
                embed_dim,
                ShiftedFrameAttention(
                    embed_dim, num_heads, shift=shifts[i], pattern=pattern, qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate, proj_drop=drop_rate,
                ),
                mlp_ratio=mlp_ratio, norm_layer=partial(nn.LayerNorm, eps=1e-6), proj_drop=drop_rate,
                drop_path=dpr[i],
            )
            for i in range(depth)
        )  # fmt: skip
        self.num_intermediates = depth
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.init_head(embed_dim, num_classes, head_drop_rate)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights_trunc_normal)

    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """Block outputs; the features are ``(B, T, 1 + P, C)`` (class token first) after the final norm."""
        check_video_input(x, self.in_chans, type(self).__name__)
        T = x.shape[2]
        x = self.patch_embed(x)  # (B, C, T, H/16, W/16); raises if H, W do not divide by 16
        grid = (x.shape[3], x.shape[4])
        x = rearrange(x, "b c t h w -> (b t) (h w) c")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B*T, 1+P, C)
        x = x + resample_2d(self.pos_embed, self.grid, grid, num_prefix_tokens=1)
        if self.time_embed is not None:
            time = resample_1d(self.time_embed[:, :, 0], T)  # (1, T, C), one row per frame
            x = rearrange(rearrange(x, "(b t) n c -> b t n c", t=T) + time[:, :, None], "b t n c -> (b t) n c")
        x = self.pos_drop(x)
        for i, blk in enumerate(self.blocks):
            x = self.checkpointed(blk, x, T, grid)
            if (x := self.tap(taps, i, x, "(b t) (h w) c", prefix=1, t=T, h=grid[0])) is None:
                return None
        return rearrange(self.norm(x), "(b t) n c -> b t n c", t=T)

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^cls_token|pos_embed|time_embed|patch_embed",
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    def resize_2d_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "pos_embed":
            return resample_2d(value, None, self.grid, num_prefix_tokens=1)  # the image grid -> ours
        return None

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "time_embed":  # (1, T, 1, C)
            return resample_1d(value[:, :, 0], target.shape[1])[:, :, None]
        return super().resample_tensor(key, value, target)


# ------------------------------------------------------------------------------------- plug and play
def add_temporal_patch_shift(
    model: nn.Module,
    num_frames: int,
    tps: Literal["patch", "channel"] = "patch",
    pattern: str | Sequence[Sequence[int]] = "C",
    alternate: bool = True,
) -> nn.Module:
    """Add TPS to a timm Swin or ViT/DeiT image model in place (the paper's plug-and-play promise).

    The model then takes frames as a batch, clip-major: ``(B * T, C, H, W)`` with the ``T`` frames of
    each clip contiguous (``rearrange(clip, "b c t h w -> (b t) c h w")``), at the size it was built
    for; average its per-frame outputs over ``T`` for clip logits. Odd blocks (or all with
    ``alternate=False``) shift: their ``attn`` becomes a :class:`TemporalShiftAttention` around the
    original (whose weights move to ``attn.attn``). The relative position bias of a timm Swin does not
    travel with the patches (no shift RPE): use :class:`PatchShiftSwin` for the paper's full model.
    Parameters and FLOPs are unchanged.
    """
    if tps not in ("patch", "channel"):
        raise ValueError("tps must be 'patch' or 'channel'")
    if hasattr(model, "layers") and hasattr(model.layers[0], "blocks"):  # timm SwinTransformer
        for stage in model.layers:
            for blk, kind in zip(stage.blocks, block_shift_kinds(len(stage.blocks), tps, alternate)):
                if kind is not None:
                    (H, W), (wh, ww) = blk.input_resolution, blk.window_size
                    blk.attn = TemporalShiftAttention(
                        blk.attn, kind=kind, num_heads=blk.attn.num_heads, pattern=pattern, grid=(wh, ww),
                        num_frames=num_frames, windows=math.ceil(H / wh) * math.ceil(W / ww),
                    )  # fmt: skip
    elif hasattr(model, "blocks") and hasattr(model, "patch_embed"):  # timm VisionTransformer / DeiT
        for blk, kind in zip(model.blocks, block_shift_kinds(len(model.blocks), tps, alternate)):
            if kind is not None:
                blk.attn = TemporalShiftAttention(
                    blk.attn, kind=kind, num_heads=blk.attn.num_heads, pattern=pattern,
                    grid=tuple(model.patch_embed.grid_size), prefix=model.num_prefix_tokens, num_frames=num_frames,
                )  # fmt: skip
    else:
        raise TypeError(
            f"add_temporal_patch_shift supports timm SwinTransformer and VisionTransformer, got {type(model).__name__}"
        )
    return model


# ------------------------------------------------------------------------------- released checkpoints
# MartinXM/TPS @ e913d2a: an mmaction2 Recognizer3D, `backbone.*` (SwinTransformer2D_TPS in
# mmaction/models/backbones/swin_transformer2d_tps.py) and `cls_head.fc_cls.*` (I3D head). Names and
# shapes are ours except that the release merges patches at the END of stage i (ours: at the start of
# stage i+1) and stores its bias index as buffers, which we rebuild. The release is built for 16 token
# frames and 7x7 windows (32 frames with patch (2, 4, 4)); the bias table has (2*16-1)*13*13 rows.
TPS_RELEASE = "MartinXM/TPS@e913d2a"
_RELEASE_TOKEN_FRAMES = 16
_RELEASE_LABELS = {"pst_t": "PST-T (Swin-T TPS)", "pst_b": "PST-B (Swin-B TPS)"}
_REBUILT_BUFFERS = ("relative_position_index", "relative_position_index_old", "attn_mask")


def identify_released_tps(sd: Mapping[str, Tensor]) -> Recognised | None:
    """A released TPS Swin checkpoint (mmaction2 layout or bare backbone), else ``None``.

    Recognised by a 3D patch embedding, patch merging at the end of stage 1 (``layers.0.downsample``)
    and the release's 16-frame bias table (or its ``relative_position_index_old`` buffers).
    """
    backbone, head, layout = split_mmaction2(sd)
    embed = backbone.get("patch_embed.proj.weight")
    table = backbone.get("layers.0.blocks.0.attn.relative_position_bias_table")
    if embed is None or embed.dim() != 5 or "layers.0.downsample.reduction.weight" not in backbone:
        return None
    release_rows = (2 * _RELEASE_TOKEN_FRAMES - 1) * 13 * 13
    if "layers.0.blocks.0.attn.relative_position_index_old" not in backbone and (
        table is None or table.shape[0] != release_rows
    ):
        return None
    arch = (int(embed.shape[0]), blocks_per_stage(backbone, r"layers\.(\d+)\.blocks\.(\d+)\."))
    variant = next(
        (n for n, a in (("pst_t", _SWIN_T), ("pst_b", _SWIN_B)) if (a["embed_dim"], a["depths"]) == arch), None
    )
    label = _RELEASE_LABELS.get(variant, f"TPS Swin (embed dim {arch[0]}, depths {arch[1]})")
    frames = _RELEASE_TOKEN_FRAMES * embed.shape[2]
    return Recognised(f"a released {label} checkpoint ({layout} layout, {frames}-frame clips)", variant, layout,
                      head_size(head))  # fmt: skip


def convert_released_tps(sd: Mapping[str, Tensor], model: PatchShiftSwin) -> dict[str, Tensor]:
    """Released TPS names -> ours (timm ``checkpoint_filter_fn`` style): ``layers.i.downsample`` ->
    ``layers.{i+1}.downsample``, the index buffers dropped, ``cls_head.fc_cls`` -> ``head``."""
    backbone, head, _ = split_mmaction2(sd)
    out = {}
    for k, v in backbone.items():
        if k.endswith(_REBUILT_BUFFERS):
            continue
        m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", k)
        out[f"layers.{int(m[1]) + 1}.downsample.{m[2]}" if m else k] = v
    out.update(mmaction2_head_to_ours(head))
    return out


def to_released_tps(sd: Mapping[str, Tensor], layout: str = "mmaction2") -> dict[str, Tensor]:
    """Ours -> the release's names (inverse of :func:`convert_released_tps`). The index buffers are
    not written: the released module builds them itself (mmcv's ``load_checkpoint`` loads with
    ``strict=False``). ``layout="backbone"`` leaves the classifier out."""
    backbone = {}
    for k, v in sd.items():
        if not k.startswith("head."):
            m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", k)
            backbone[f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else k] = v
    return ours_to_mmaction2(backbone, sd, layout)


register_checkpoint_format(CheckpointFormat(TPS_RELEASE, PatchShiftSwin, identify_released_tps, convert_released_tps))

# What the authors trained. MartinXM/TPS publishes configs (Swin-T TPS for K400, SSv2, SSv1, Diving48)
# but no checkpoint; its README points to ModelScope "damo/cv_pathshift_action-recognition" without
# naming the variant or dataset. Top-1 is the paper's (Tables 3-5, 7), for the views given.
_NOT_PUBLISHED = ("not published in MartinXM/TPS (configs only); the README points to the ModelScope model "
                  "damo/cv_pathshift_action-recognition (variant and dataset not stated)")  # fmt: skip
_SS_NOTE = ("paper Table 3, K400-pretrained, 3 crops x 1 clip; the table's rows are misaligned in our copy, read as "
            "IN-1K 1x1, IN-1K 3x1, K400 1x1, K400 3x1 per model")  # fmt: skip
_SS = dict(sampling="uniform:32", pretrain="Kinetics-400", note=f"{_SS_NOTE}; {_NOT_PUBLISHED}")
_NO_DAGGER_RELEASE = "not in the release"


def _paper(dataset, classes, top1, table, views, config=None, pretrain="IN-1K", note=_NOT_PUBLISHED, **kw):
    config = f"configs/recognition/tps/swin_tiny_2D_patch244_tps_{config}_1k.py" if config else None
    return ReleasedWeights(dataset, classes, top1, f"paper {table}", views, config=config, repository=TPS_RELEASE,
                           pretrain=pretrain, note=note, **kw)  # fmt: skip


RELEASED_WEIGHTS: dict[str, tuple[ReleasedWeights, ...]] = {
    "pst_t": (
        _paper("Kinetics-400", 400, 78.2, "Table 4", "4x3", "k400"),
        _paper("Something-Something V2", 174, 67.3, "Table 3", "1x3", "sthv2", **_SS),
        _paper("Something-Something V1", 174, 53.6, "Table 3", "1x3", "sthv1", **_SS),
        _paper("Diving-48 V2", 48, 79.2, "Table 5", "1x3", "diving48", sampling="uniform:32"),
    ),
    "pst_b": (_paper("Kinetics-400", 400, 81.8, "Table 4", "4x3", pretrain="IN-21K"),),
    "pst_t_dagger": (_paper("Kinetics-400", 400, 78.6, "Table 4", "4x3", note=_NO_DAGGER_RELEASE),),
    "pst_b_dagger": (_paper("Kinetics-400", 400, 82.5, "Table 4", "4x3", pretrain="IN-21K", note=_NO_DAGGER_RELEASE),),
    "deit_s_tps": (_paper("Kinetics-400", 400, 75.3, "Table 7", "not stated", num_frames=16, sampling="uniform:16",
                          note="the release has only a stale compiled DeiT wrapper; no weights"),),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ variants
def _k400(name: str, *, params_m: float, gflops: float, head: int, top1: float, pretrain: str, **paper) -> ModelConfig:
    """A paper variant on Kinetics-400: 32 frames at 224, 4 clips x 3 crops; params with a ``head``-class head
    (the paper reuses PST-T's with 400 classes and PST-B's with 174 in every table)."""
    return ModelConfig(
        name=name, num_frames=32, img_size=224, test_views="4x3", sampling="dense:32x2", min_input=(4, 64),
        weights=RELEASED_WEIGHTS[name], paper=PaperReference(
            params_m=params_m, gflops=gflops, params_head_classes=head, views="4x3", top1=top1, dataset="Kinetics-400",
            pretrain=pretrain, citation=CITATION, **paper,
        ),
    )  # fmt: skip


_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.2)
_DAGGER = "temporal attention window 2"

register_variants(
    PatchShiftSwin,
    [
        Variant(_k400("pst_t", params_m=28.5, gflops=72, head=400, top1=78.2, pretrain="IN-1K"), _SWIN_T),
        Variant(_k400("pst_b", params_m=88.8, gflops=247, head=174, top1=81.8, pretrain="IN-21K"), _SWIN_B),
        Variant(_k400("pst_t_dagger", params_m=28.5, gflops=74, head=400, top1=78.6, pretrain="IN-1K", note=_DAGGER),
                dict(_SWIN_T, window=(2, 7, 7))),
        Variant(_k400("pst_b_dagger", params_m=88.8, gflops=252, head=174, top1=82.5, pretrain="IN-21K", note=_DAGGER),
                dict(_SWIN_B, window=(2, 7, 7))),
        Variant(ModelConfig(name="pst_nano", num_frames=16, img_size=64, test_views="2x1", sampling="uniform:16",
                            min_input=(4, 32), recipe=NANO_RECIPE),
                dict(embed_dim=48, depths=(2, 2, 2), num_heads=(2, 4, 8), window=(1, 4, 4), drop_path_rate=0.0,
                     head_drop_rate=0.0, global_pool="moments")),
    ],
)  # fmt: skip

register_variants(
    PatchShiftViT,
    [
        Variant(ModelConfig(name="deit_s_tps", num_frames=16, img_size=224, test_views="4x3", sampling="uniform:16",
                            min_input=(4, 32), weights=RELEASED_WEIGHTS["deit_s_tps"],
                            paper=PaperReference(params_m=22, gflops=74, params_head_classes=400, top1=75.3,
                                                 dataset="Kinetics-400", pretrain="IN-1K", citation=CITATION,
                                                 tolerance=0.03, note="16 frames match the reported 74 GFLOPs (the "
                                                 "released wrapper is hard-wired to 8)"))),
    ],
)  # fmt: skip
