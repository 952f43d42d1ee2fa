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
* Shift RPE: every token carries the coordinates of the frame it came from; the bias between two
  tokens reads the table at their true offset ``(dt, dh, dw)``. The released code instead indexes
  every frame against frame 0 (a quirk); its table size, ``(2D - 1)(2 wh - 1)(2 ww - 1)`` rows for
  ``D`` token frames, is kept so parameter counts and checkpoints match. Offsets beyond the table
  (inputs longer than the built ``num_frames``) are clamped.
* ``PST-T†/B†`` "double the temporal attention window to 2": windows of (2, 7, 7) over two
  consecutive shifted frames (matches the paper's 74 / 252 GFLOPs; params unchanged).
* DeiT-S-TPS: the paper says only "a TPS module in every two blocks". We shift patches with pattern C
  tiled over the 14x14 grid in odd blocks, leave the class token in place, and share the 2D position
  embedding over frames (a per-frame embedding as in the released ``.pyc`` would add 1.2 M parameters
  at 16 frames and miss the paper's 22 M; ``temporal_pos_embed=True`` adds one). 16 frames match
  the paper's 74 GFLOPs (8 frames give 37).
* Head: final LayerNorm, average over (T, H, W) (Swin) or over the frames' class tokens (DeiT),
  dropout, linear, as the released I3D head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed3d,
    attention,
    check_video_input,
    drop_path_schedule,
    effective_window,
    pad_to_multiple,
    resample_2d,
    shifted_window_mask,
    to_3tuple,
)
from ..layers.temporal_shift import cell_offsets, channel_shift, patch_shift, source_frames
from ._base import VideoModel, init_weights_trunc_normal
from ._config import ModelConfig, PaperReference, ReleasedWeights
from ._registry import register_model
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
class ShiftWindowAttention(Attention):
    """Window attention on ``(B, D, nW, M, C)`` tokens (``M`` cells of a spatial window) with an
    optional temporal shift and the shift-RPE bias table.

    Windows span ``wt`` consecutive token frames, so attention runs over ``N = wt * M`` tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Sequence[int],
        shift: ShiftKind = None,
        pattern: str | Sequence[Sequence[int]] = "C",
        table_frames: int = 1,
        shift_back: bool = True,
        shift_rpe: bool = True,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.window = to_3tuple(window)
        self.shift = shift
        self.pattern = pattern
        self.shift_back = shift_back
        self.shift_rpe = shift_rpe
        self.table_frames = table_frames
        _, wh, ww = self.window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * table_frames - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, num_frames: int, window: Sequence[int], device: torch.device) -> Tensor:
        """``(G, heads, N, N)`` bias for the ``G = D / wt`` temporal window groups (``G = 1`` when it
        is the same for all).

        Each token's coordinate is ``(source frame, h, w)``; with shift RPE the source frame is where
        the patch came from, so the bias travels with the patch.
        """
        wt, wh, ww = window
        D = num_frames
        hh, ww_ = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
        if self.shift == "patch" and self.shift_rpe:
            frames = source_frames(self.offsets(window, device), D).to(device)  # (D, M)
        else:  # every window group sees the same offsets: compute one and broadcast over G
            frames = torch.arange(wt, device=device)[:, None].expand(wt, wh * ww)  # (wt, M)
        t = rearrange(frames, "(g wt) m -> g (wt m)", wt=wt)  # (G, N)
        h = hh.reshape(1, -1).repeat(1, wt).expand_as(t)
        w = ww_.reshape(1, -1).repeat(1, wt).expand_as(t)
        coords = torch.stack([t, h, w], dim=-1)  # (G, N, 3)
        rel = coords[:, :, None, :] - coords[:, None, :, :]  # (G, N, N, 3) query minus key
        Tt, (_, Wh, Ww) = self.table_frames, self.window
        dt = rel[..., 0].clamp(-(Tt - 1), Tt - 1)
        index = (
            (dt + Tt - 1) * (2 * Wh - 1) * (2 * Ww - 1) + (rel[..., 1] + Wh - 1) * (2 * Ww - 1) + rel[..., 2] + Ww - 1
        )
        bias = self.relative_position_bias_table[index]  # (G, N, N, heads)
        return bias.permute(0, 3, 1, 2)

    def offsets(self, window: Sequence[int], device: torch.device | None = None) -> Tensor:
        return cell_offsets(self.pattern, window[1:]).to(device)

    def forward(self, x: Tensor, window: Sequence[int], mask: Tensor | None = None) -> Tensor:
        """``x (B, D, nW, M, C)``, ``window`` the effective (wt, wh, ww), ``mask (nW, N, N)`` or None."""
        B, D, nW, M, C = x.shape
        wt = window[0]
        if self.shift == "patch":
            offsets = self.offsets(window, x.device)
            x = patch_shift(x, offsets, time_dim=1, cell_dim=3)
        elif self.shift == "channel":
            x = channel_shift(x, self.num_heads, time_dim=1)
        x = rearrange(x, "b (g wt) n m c -> b g n (wt m) c", wt=wt)  # (B, G, nW, N, C)
        G, N = D // wt, wt * M
        qkv = self.qkv(x).reshape(B, G, nW, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(4, 0, 1, 2, 5, 3, 6).unbind(0)  # each (B, G, nW, heads, N, d)
        bias = self.position_bias(D, window, x.device)[:, None]  # (G, 1, heads, N, N)
        if mask is not None:
            bias = bias + mask[None, :, None]  # (G, nW, heads, N, N)
        out, _ = attention(q, k, v, bias, self.attn_drop if self.training else 0.0, scale=self.scale)
        out = rearrange(out, "b g n h (wt m) d -> b (g wt) n m (h d)", wt=wt)  # (B, D, nW, M, C)
        if self.shift == "patch" and self.shift_back:
            out = patch_shift(out, offsets, time_dim=1, cell_dim=3, inverse=True)
        return self.proj_drop(self.proj(out))


class SwinTPSBlock(nn.Module):
    """Swin block on channels-last ``(B, D, H, W, C)``: (S)W-MSA with a temporal shift, then MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Sequence[int] = (1, 7, 7),
        shifted: bool = False,
        shift: ShiftKind = None,
        pattern: str | Sequence[Sequence[int]] = "C",
        table_frames: int = 1,
        shift_back: bool = True,
        shift_rpe: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window = to_3tuple(window)
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowAttention(
            dim, num_heads, self.window, shift, pattern, table_frames, shift_back, shift_rpe, qkv_bias, attn_drop, drop
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attn(self, x: Tensor) -> Tensor:
        B, D, H, W, C = x.shape
        wt = self.window[0]
        spatial_shift = (0, self.window[1] // 2, self.window[2] // 2) if self.shifted else (0, 0, 0)
        window, shift = effective_window((wt, H, W), self.window, spatial_shift)
        window = (wt, *window[1:])  # the temporal window never shrinks: D % wt is checked by the model
        x = pad_to_multiple(x, window[1:], dims=(2, 3))  # (B, D, Hp, Wp, C)
        Hp, Wp = x.shape[2:4]
        if any(shift):
            x = torch.roll(x, shifts=(-shift[1], -shift[2]), dims=(2, 3))
            mask = shifted_window_mask((1, Hp, Wp), (1, *window[1:]), shift, x.device)  # (nW, M, M)
            if wt > 1:
                mask = mask.repeat(1, wt, wt)  # same spatial regions in every frame of the window
        else:
            mask = None
        xw = rearrange(x, "b d (h wh) (w ww) c -> b d (h w) (wh ww) c", wh=window[1], ww=window[2])
        xw = self.attn(xw, window, mask)
        x = rearrange(xw, "b d (h w) (wh ww) c -> b d (h wh) (w ww) c", h=Hp // window[1], wh=window[1])
        if any(shift):
            x = torch.roll(x, shifts=(shift[1], shift[2]), dims=(2, 3))
        return x[:, :, :H, :W].contiguous()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


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
    def __init__(self, dim: int, out_dim: int, depth: int, downsample: bool, **block_kwargs) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        shifts: list[ShiftKind] = block_kwargs.pop("shifts")
        drop_paths: list[float] = block_kwargs.pop("drop_paths")
        self.blocks = nn.ModuleList(
            SwinTPSBlock(out_dim, shifted=i % 2 == 1, shift=shifts[i], drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)
        )


# -------------------------------------------------------------------------------------------- models
class PatchShiftSwin(VideoModel):
    """PST: Swin Transformer with temporal patch shift (paper Fig. 4), on ``(B, 3, T, H, W)`` clips.

    Args:
        tps: ``"pst"`` (channel/patch alternating, the paper's model), ``"patch"``, ``"channel"`` or
            ``None`` (2D Swin frame by frame).
        pattern: shift pattern ``"A" | "B" | "C" | "D"`` or a table of frame offsets (ablation (b)).
        tps_stages: per-stage switch for the shift (ablation (c)); default all stages.
        alternate, shift_back, shift_rpe: ablation (d) switches.
        window: attention window ``(wt, wh, ww)``; ``wt = 2`` gives PST†.
    """

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
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
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
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(
                SwinTPSStage(
                    dims[max(i - 1, 0)],
                    dims[i],
                    depth,
                    downsample=i > 0,
                    shifts=block_shift_kinds(depth, tps if tps_stages[i] else None, alternate),
                    drop_paths=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    num_heads=num_heads[i],
                    window=self.window,
                    pattern=pattern,
                    table_frames=table_frames,
                    shift_back=shift_back,
                    shift_rpe=shift_rpe,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                )
            )
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights_trunc_normal)

    def _check_frames(self, token_frames: int) -> None:
        wt = self.window[0]
        if token_frames % wt:
            valid = ", ".join(str(self.patch_size[0] * wt * k) for k in range(1, 6))
            raise ValueError(
                f"{token_frames} token frames do not divide by the temporal window {wt}; "
                f"use a frame count that is a multiple of {self.patch_size[0] * wt} (e.g. {valid})"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, D, H/32, W/32, C)`` channels-last tokens after the final norm."""
        check_video_input(x, self.in_chans, type(self).__name__)
        self._check_frames(-(-x.shape[2] // self.patch_size[0]))
        x = self.patch_embed(x)  # (B, C, D, H/4, W/4)
        x = self.pos_drop(x.permute(0, 2, 3, 4, 1))  # (B, D, H, W, C)
        for stage in self.layers:
            x = stage.downsample(x)
            x = self.run_blocks(stage.blocks, x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(1, 2, 3))  # average over (D, H, W) -> (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    # 2D checkpoint hooks for load_pretrained_2d
    def convert_2d_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k, v in sd.items():
            if k.endswith(("attn_mask", "relative_position_index")):
                continue
            out[k.replace("head.fc.", "head.")] = v
        return out

    def resize_2d_tensor(self, key: str, v: Tensor, target: Tensor) -> Tensor | None:
        if key.endswith("relative_position_bias_table") and target.shape[0] % v.shape[0] == 0:
            return v.repeat(target.shape[0] // v.shape[0], 1)  # same 2D bias at every frame offset
        return None


class TPSViTBlock(nn.Module):
    """Pre-norm ViT block whose attention sees temporally shifted patch tokens (class token fixed).

    Works on ``(B * T, 1 + P, C)`` with frames of a clip contiguous; ``grid`` is the patch grid.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        shift: ShiftKind = None,
        pattern: str | Sequence[Sequence[int]] = "C",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.shift = shift
        self.pattern = pattern
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _shift(self, x: Tensor, T: int, grid: tuple[int, int], inverse: bool = False) -> Tensor:
        x = rearrange(x, "(b t) n c -> b t n c", t=T)
        cls, patches = x[:, :, :1], x[:, :, 1:]
        if self.shift == "patch":
            patches = patch_shift(patches, cell_offsets(self.pattern, grid), time_dim=1, cell_dim=2, inverse=inverse)
        else:
            patches = channel_shift(patches, self.attn.num_heads, time_dim=1)
        return rearrange(torch.cat([cls, patches], dim=2), "b t n c -> (b t) n c")

    def forward(self, x: Tensor, T: int, grid: tuple[int, int]) -> Tensor:
        y = self.norm1(x)
        if self.shift is not None:
            y = self._shift(y, T, grid)
        y = self.attn(y)
        if self.shift == "patch":
            y = self._shift(y, T, grid, inverse=True)  # the projection is per token, so back-shift after it
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchShiftViT(VideoModel):
    """DeiT with TPS in every second block (paper Table 7), frames as a batch of images."""

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
        self.num_classes = num_classes
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
            TPSViTBlock(
                embed_dim, num_heads, shifts[i], pattern, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i]
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights_trunc_normal)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, T, C)``: each frame's class token after the final norm."""
        check_video_input(x, self.in_chans, type(self).__name__)
        B, _, T, H, W = x.shape
        x = self.patch_embed(x)  # (B, C, T, H/16, W/16); raises if H, W do not divide by 16
        grid = (x.shape[3], x.shape[4])
        x = rearrange(x, "b c t h w -> (b t) (h w) c")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B*T, 1+P, C)
        pos = self.pos_embed
        if grid != self.grid:
            pos = torch.cat([pos[:, :1], resample_2d(pos[:, 1:], self.grid, grid)], dim=1)
        x = x + pos
        if self.time_embed is not None:
            time = F.interpolate(self.time_embed[:, :, 0].transpose(1, 2), size=T, mode="linear").transpose(1, 2)
            x = rearrange(rearrange(x, "(b t) n c -> b t n c", t=T) + time[:, :, None], "b t n c -> (b t) n c")
        x = self.pos_drop(x)
        x = self.run_blocks(self.blocks, x, T, grid)
        x = self.norm(x[:, 0])  # class tokens (B*T, C)
        return rearrange(x, "(b t) c -> b t c", t=T)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x.mean(dim=1))  # average the frames' class tokens
        return x if pre_logits else self.head(x)

    def convert_2d_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k.replace("head.fc.", "head."): v for k, v in sd.items()}

    def resize_2d_tensor(self, key: str, v: Tensor, target: Tensor) -> Tensor | None:
        if key == "pos_embed":
            n = int(round((v.shape[1] - 1) ** 0.5))
            return torch.cat([v[:, :1], resample_2d(v[:, 1:], (n, n), self.grid)], dim=1)
        return None


# ------------------------------------------------------------------------------------- plug and play
class _ShiftedTimmAttention(nn.Module):
    """Wraps a timm attention module: shift its input over time, shift its output back.

    Rows of ``x`` are ``(clip, frame, window)``-major: ``(B * T * nW, N, C)`` for Swin windows (``nW``
    read from the image batch recorded by a pre-hook on the block), ``(B * T, prefix + P, C)`` for ViT.
    """

    def __init__(self, attn: nn.Module, num_frames: int, shift: ShiftKind, pattern, grid, prefix: int) -> None:
        super().__init__()
        self.attn = attn
        self.num_frames, self.shift, self.pattern, self.grid, self.prefix = num_frames, shift, pattern, grid, prefix
        self.images: int | None = None  # B * T, set by the block's pre-hook (Swin only)

    def _move(self, x: Tensor, inverse: bool) -> Tensor:
        T = self.num_frames
        rows, N, C = x.shape
        windows = rows // self.images if self.images else 1
        x = x.reshape(-1, T, windows, N, C)  # (B, T, nW, N, C)
        prefix, cells = x[:, :, :, : self.prefix], x[:, :, :, self.prefix :]
        grid = self.grid or getattr(self.attn, "window_size", None)
        if self.shift == "patch":
            cells = patch_shift(cells, cell_offsets(self.pattern, grid), time_dim=1, cell_dim=3, inverse=inverse)
        elif not inverse:
            cells = channel_shift(cells, self.attn.num_heads, time_dim=1)
        return torch.cat([prefix, cells], dim=3).reshape(rows, N, C)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        out = self.attn(self._move(x, inverse=False), *args, **kwargs)
        return self._move(out, inverse=True) if self.shift == "patch" else out


def add_temporal_patch_shift(
    model: nn.Module,
    num_frames: int,
    tps: Literal["patch", "channel"] = "patch",
    pattern: str | Sequence[Sequence[int]] = "C",
    alternate: bool = True,
) -> nn.Module:
    """Add TPS to a timm Swin or ViT/DeiT image model in place (the paper's plug-and-play promise).

    The model then takes frames as a batch, clip-major: ``(B * T, C, H, W)`` with the ``T`` frames of
    each clip contiguous (``rearrange(clip, "b c t h w -> (b t) c h w")``); average its per-frame
    outputs over ``T`` for clip logits. Odd blocks (or all with ``alternate=False``) shift. The relative
    position bias of a timm Swin does not travel with the patches (no shift RPE): use
    :class:`PatchShiftSwin` for the paper's full model. Parameters and FLOPs are unchanged.
    """
    if tps not in ("patch", "channel"):
        raise ValueError("tps must be 'patch' or 'channel'")
    if hasattr(model, "layers") and hasattr(model.layers[0], "blocks"):  # timm SwinTransformer
        for stage in model.layers:
            kinds = block_shift_kinds(len(stage.blocks), tps, alternate)
            for blk, kind in zip(stage.blocks, kinds):
                if kind is None:
                    continue
                blk.attn = _ShiftedTimmAttention(blk.attn, num_frames, kind, pattern, None, 0)
                blk.register_forward_pre_hook(lambda m, args: setattr(m.attn, "images", args[0].shape[0]))
    elif hasattr(model, "blocks") and hasattr(model, "patch_embed"):  # timm VisionTransformer / DeiT
        grid = tuple(model.patch_embed.grid_size)
        prefix = getattr(model, "num_prefix_tokens", 1)
        for blk, kind in zip(model.blocks, block_shift_kinds(len(model.blocks), tps, alternate)):
            if kind is not None:
                blk.attn = _ShiftedTimmAttention(blk.attn, num_frames, kind, pattern, grid, prefix)
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
    variant = next((n for n, a in (("pst_t", SWIN_T), ("pst_b", SWIN_B)) if a[:2] == arch), None)
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
_DAGGER = "not in the release"


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
    "pst_t_dagger": (_paper("Kinetics-400", 400, 78.6, "Table 4", "4x3", note=_DAGGER),),
    "pst_b_dagger": (_paper("Kinetics-400", 400, 82.5, "Table 4", "4x3", pretrain="IN-21K", note=_DAGGER),),
    "deit_s_tps": (_paper("Kinetics-400", 400, 75.3, "Table 7", "not stated", num_frames=16, sampling="uniform:16",
                          note="the release has only a stale compiled DeiT wrapper; no weights"),),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ variants
def _swin_variant(dims_depths_heads, **defaults):
    embed_dim, depths, heads = dims_depths_heads

    def build(num_classes: int, num_frames: int, img_size: int, **kwargs) -> PatchShiftSwin:
        args = dict(embed_dim=embed_dim, depths=depths, num_heads=heads, **defaults)
        args.update(kwargs)
        return PatchShiftSwin(num_classes=num_classes, num_frames=num_frames, img_size=img_size, **args)

    return build


SWIN_T = (96, (2, 2, 6, 2), (3, 6, 12, 24))
SWIN_B = (128, (2, 2, 18, 2), (4, 8, 16, 32))
PST_NANO = (48, (2, 2, 2), (2, 4, 8))

_K400 = dict(dataset="Kinetics-400", citation=CITATION)
_PST = dict(num_frames=32, img_size=224, test_views="4x3", sampling="dense:32x2", min_input=(4, 64))

for _name, _arch, _defaults, _ref in [
    ("pst_t", SWIN_T, {}, PaperReference(28.5, 72, "mac", 400, "4x3", 78.2, pretrain="IN-1K", **_K400)),
    ("pst_b", SWIN_B, {"drop_path_rate": 0.2}, PaperReference(
        88.8, 247, "mac", 174, "4x3", 81.8, pretrain="IN-21K",
        note="params as reported with the 174-class Something-Something head", **_K400)),
    ("pst_t_dagger", SWIN_T, {"window": (2, 7, 7)}, PaperReference(
        28.5, 74, "mac", 400, "4x3", 78.6, pretrain="IN-1K", note="temporal attention window 2", **_K400)),
    ("pst_b_dagger", SWIN_B, {"window": (2, 7, 7), "drop_path_rate": 0.2}, PaperReference(
        88.8, 252, "mac", 174, "4x3", 82.5, pretrain="IN-21K", note="temporal attention window 2", **_K400)),
]:  # fmt: skip
    register_model(ModelConfig(name=_name, paper=_ref, weights=RELEASED_WEIGHTS[_name], **_PST))(
        _swin_variant(_arch, **_defaults)
    )

register_model(
    ModelConfig(
        name="pst_nano",
        num_frames=16,
        img_size=64,
        test_views="2x1",
        sampling="uniform:16",
        min_input=(4, 32),
        paper=None,
    )
)(_swin_variant(PST_NANO, window=(1, 4, 4), drop_path_rate=0.0, head_drop_rate=0.0))


@register_model(
    ModelConfig(
        name="deit_s_tps",
        num_frames=16,
        img_size=224,
        test_views="4x3",
        sampling="uniform:16",
        min_input=(4, 32),
        weights=RELEASED_WEIGHTS["deit_s_tps"],
        paper=PaperReference(
            22, 74, "mac", 400, None, 75.3, pretrain="IN-1K",
            note="16 frames match the reported 74 GFLOPs (the released wrapper is hard-wired to 8)", **_K400,
        ),
    )
)  # fmt: skip
def deit_s_tps(num_classes: int, num_frames: int, img_size: int, **kwargs) -> PatchShiftViT:
    return PatchShiftViT(num_classes=num_classes, num_frames=num_frames, img_size=img_size, **kwargs)
