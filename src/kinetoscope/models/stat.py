"""STAT: Shrinking Temporal Attention Transformer.

Li, Xiong, Han, Guo. "Shrinking Temporal Attention in Transformers for Video Action Recognition",
AAAI 2022. Trained from scratch; no public code exists and the appendix with the network table is
not in our copy, so the skeleton below is a reconstruction (every choice is listed, with the FLOP
arithmetic that fixed it).

The model (paper Fig. 2):

* Token embedding: three plain 3D convolutions, kernels 3x3x3, strides (2,2,2), (1,2,2), (1,2,2)
  (Table 5) -> ``n_t x n_h x n_w x n_c = T/2 x H/8 x W/8 x 192``; one learnable spatial class token per
  frame; a spatial and a temporal position embedding (separate, resampled when the input differs).
* 15 STA blocks in 3 stages, ``X_a = X + STA(LN(X))``, ``X_out = X_a + MLP(LN(X_a))`` (Eq. 9-10).
* Shrinking Temporal Attention (Eq. 1-8), per frame ``i`` and for its ``1 + h w`` queries:

  - current attention (CA): the frame's patch keys/values pooled by a learned conv ``P_CA`` (Eq. 2);
    queries are pooled only at the blocks that halve the resolution;
  - short-term attention (SA): ``K_SA = AvgPool2d(K_CA)`` (Eq. 3) of the ``t_o - 1`` neighbouring
    frames ``i - t_o//2 .. i + t_o//2`` without frame ``i`` itself;
  - long-term attention (LA): the class-token keys/values of all ``n_t`` frames (Eq. 4-6);
  - one softmax over the concatenation ``[K_CA, K_SA, K_LA]`` (Eq. 7-8): a single
    ``scaled_dot_product_attention`` call over all frames at once, the neighbour frames gathered by
    an index table (no loop over frames).

* Temporal aggregation: a video class token attends over the frames' class tokens in ``l_ta``
  transformer layers (``l_ta = 0``: average of the class tokens, Table 4); LayerNorm, dropout, linear.

Reconstruction (where the paper is silent) -- MViT-B 16x4 (Fan et al. 2021) with its first stage
(patch embedding + 1 block at 56x56, dim 96) replaced by the conv stem. The paper's own words fit it:
15 blocks in 3 stages, "expand the dimension 2x through MLP and pool the resolution 4x between
stages" is MViT-v1's transition, pooling "implemented with convolution", MViT's training recipe and
test views, and Table 5's one-conv stem (kernel (3,7,7), stride (2,4,4)) is exactly MViT-B's patch
embedding. Choices:

* Stages ``(depth, dim, heads) = (2, 192, 2), (11, 384, 4), (2, 768, 8)`` (MViT-B's stages 2-4,
  head dim 96). The last block of a stage widens in its MLP (``fc2: 4C -> 2C``) with a linear
  projection on the skip path; the first block of the next stage pools Q with stride (1, 2, 2)
  (class token kept apart), and its skip path with max-pooling (1,3,3)/(1,2,2), as MViT-v1.
* ``P_CA``: depthwise conv, kernel (1, 3, 3) shared by the heads, then LayerNorm over the head dim
  (MViT-v1's pooling, but 2D: the paper keeps CA within a frame and says "the clip length remains the
  same"). K/V stride 4, 2, 1 in the three stages (MViT's adaptive KV stride; ``kv_stride`` /
  ``kv_pool_size`` set it): 7x7 = 49 CA keys per frame at 224. As in MViT-v1 the stride is halved at
  the block that pools Q and applied to that block's input grid, so the first block of stages 2 and 3
  pools K/V from 28x28 (stride 2) and 14x14 (stride 1) to 14x14: 196 CA keys in both (measured), 49 in
  every other block. The class-token keys
  pass through the same LayerNorm (MViT normalises the pooled sequence with its class token).
* ``P_SA``: ``avg_pool2d`` kernel = stride = 2 with ``ceil_mode``: 4x4 = 16 keys per neighbour frame
  from a 7x7 CA map (7x7 = 49 at the first block of stages 2 and 3, whose CA map is 14x14). The paper only says
  "2D-Avgpooling". Arithmetic: SA costs ``2 * n_t * sum_blocks(N_q * C * n_SA)`` MACs per neighbour
  frame; ``N_q * C`` summed over the blocks is ``2*785*192 + 11*197*384 + 2*50*768 = 1.21 M`` and
  ``n_t = 8``: ``~19.4 M * n_SA`` (plus the two transition blocks' 33 extra keys). Table 1's SA delta
  (+0.8 G for 2 neighbours at T=16) asks for ``n_SA ~ 21``, Table 2's slope (+1.45 G per 2 more
  neighbours at T=32) for ``~19``; 3x3 = 9 (floor) or 5x5 = 25 (kernel 3, stride 1) are further off
  than 4x4 = 16. Measured: +0.74 G (T=16) and +1.48 G per step of Table 2.
* Class token in CA: without LA (ablations ``"CA"``, ``"CA+SA"``) a frame's queries also see their own
  class-token key (MViT keeps the class token among the pooled keys); with LA that key is part of
  ``K_LA``, so it is never counted twice.
* Boundary frames of the short-term window (``sa_boundary``): ``"skip"`` (default) leaves the missing
  neighbours out (their keys get the additive key mask, so the softmax is over the frames that exist,
  as zero padding would not be); ``"clamp"`` replicates the edge frames (the first frame's left
  neighbour is the first frame itself); ``"cyclic"`` wraps around the clip.
* Stem: conv -> BatchNorm3d -> ReLU for all but the last conv, which is a plain conv with bias (the
  token projection). Hidden widths 64 and 96 (unknown in the paper), chosen to land the FLOPs
  (see below). Table 5 ablation (``stem_convs``): ``1`` = MViT-B's patch embedding (3,7,7)/(2,4,4)
  to 56x56x96, followed by MViT-B's first-stage block (1 block, dim 96, 1 head): the transformer block
  the three convs replaced. ``5`` as printed (a second temporal stride 2 and a total spatial stride 32)
  contradicts ``n_t = T/2`` and the paper's "computational overhead approximately the same"; we read it
  as three convs plus two more (3x3x3 stride 1, 192 -> 192; stride (1,2,2), 192 -> 384) that replace
  stage 1's two STA blocks and hand the 14x14 grid to stage 2 (9.4 vs 7.4 GMACs replaced).
* Position embeddings: MViT's separate embeddings, ``pos_embed_spatial (h w, C)`` added to the patches,
  ``pos_embed_class (1, C)`` to every frame's class token, ``pos_embed_temporal (n_t, C)`` to all tokens
  of a frame (class token included, so LA's keys know their frame).
* Global embedding ablation (Table 3, ``global_embed="avgpool"``): no class tokens; LA's keys/values of a
  frame are the spatial mean of its keys/values; the temporal aggregation takes each frame's mean token.
* Temporal aggregation layer: a pre-norm transformer layer (MHSA + 4x MLP, 8 heads at 768; 7.1 M
  parameters, ``ta_mlp_ratio=0`` keeps only the MHSA, 2.4 M) over ``[x_cls, cls_1 .. cls_nt]``; final
  LayerNorm; head dropout 0.5 and drop path 0.2 as MViT-B.

FLOPs (MACs, fvcore convention as MViT, whose numbers the paper quotes; ``count_macs`` on meta), per
view at 224, T=16 -> ``n_t = 8``: stem 7.80 G (``8*112^2*64*81 + 8*56^2*96*64*27 + 8*28^2*192*96*27``),
stage 1 7.38 G, stage 2 35.64 G, stage 3 8.01 G (all attention matmuls together 2.11 G), temporal
aggregation 0.06 G, head 0.0003 G: 58.89 G vs 59.2. The stem widths 64 and 96 are the free knob that
set this: 64/128 (10.2 G) gave 61.3 / 124.4 / 253.1 G for T = 16 / 32 / 64, i.e. +4.9 % at T=64,
because the paper's T=64 number is ~4 G below a linear extrapolation of its T=16/32 numbers.

=========  ==========  ==========  =====================================================
variant    ours GMACs  paper       ablations (ours / paper)
=========  ==========  ==========  =====================================================
stat_16    58.89       59.2        CA 58.02/58.2, +SA 58.76/59.0, +LA 58.16/58.4
stat_32    119.57      120.2       t_o 3/5/7/9: 118.09/119.57/121.05/122.53 vs
                                   118.6/120.1/121.5/123.0
stat_64    243.34      241.3       stem_convs 1 / 5 at T=16: 59.36 / 58.53 G
=========  ==========  ==========  =====================================================

Parameters are not reported by the paper; ours: 43.9 M with a 400-class head (stem 0.67 M, STA
blocks 35.7 M as MViT-B's stages 2-4, temporal aggregation 7.1 M). The GMACs are held to the paper's
within 5 % (a reconstruction: the stem widths are the one free knob, see above).

``stat_nano`` (our small configuration for from-scratch runs at 64 px, e.g. ``kinetoscope synth``'s
time-reversal pairs; not a paper variant): the 3-conv stem at 16/32/48 channels, stages
``(1, 48, 1), (2, 96, 2), (1, 192, 4)``, all of STA on (CA+SA+LA, ``t_o = 3``), with Table 3's
``global_embed="avgpool"`` and Table 4's ``l_ta = 0``, position embeddings started at trunc-normal(0.2)
(``pos_embed_std``; 0.02 in the paper variants, as MViT), and lr 5e-4 in its recipe. Measured on the 8
synthetic classes (in-memory trainer mirroring the engine, 15 epochs, batch 8, one run each):

* With class tokens and ``l_ta = 1`` (the paper's default) the features collapse to a constant in the
  first ~30 AdamW steps at lr 1e-3: the last block's class tokens gain a component shared by every clip
  (norm 3 -> 15) while their spread across clips falls 1.9 -> 0.3 and every block's gradient falls
  ~100x; the run stays at 12.5 % (one class for every clip). In 50-step probes the collapse also happens
  with the aggregation's MLP removed (``ta_mlp_ratio=0``), with a zero-initialised head and with frozen
  biases, and still partly at lr 2e-4; on a clip-order toy (tests/test_temporal_learning.py) lr 1e-3
  stays at ln 2 where 3e-4 fits it in 10 steps. A 15-epoch run at lr 2e-4 was still at 12.5 % after 5.
* Class tokens: all frames' class tokens are the same learned vector at the input, so in the first
  block LA adds ``n_t`` copies of one clip-independent key and value to every query; with
  ``global_embed="avgpool"`` LA's keys are each frame's spatial mean, content from the first block on.
  It also removes a dead parameter: with class tokens the head reads only the last block's class
  tokens, so the Q-pooling conv of a one-block last stage (``blocks.3.attn.pool_q``) got no gradient.
* ``avgpool`` + ``l_ta = 0``: 93.8 % at lr 1e-3 (collapsed for 5 epochs, then learned), 87.5 % at 3e-4,
  86.3 % at 5e-4, the rotation pair the weakest (50-80 %).
* Position embeddings at 0.02 are ~2 % of a token: the moving shapes' place in the frame and the frame's
  place in the clip are nearly invisible at init. With 0.2 (lr 5e-4) the training loss was 0.67 after
  4.5 epochs against 2.1 with 0.02 (same lr).
* The registered ``stat_nano`` through ``kinetoscope train --frames 16 --size 64 --sampling uniform:16
  --epochs 15``: 100 % top-1 (2x1 views, every class 100 %; 93.8 % after 6 epochs); the same run with the
  frames of every clip permuted (the order-blind control): 50.0 %.

Features and head: ``forward_features`` returns the last STA block's tokens ``(B, n_t, 1 + h w, C)``;
the temporal aggregation over the frames' class tokens, its LayerNorm and the classifier are the head
(an attention-pooling head, as timm's).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..layers import (
    Attention,
    PreNormBlock,
    attention,
    check_video_input,
    conv_stem,
    drop_path_schedule,
    geometry_buffer,
    key_padding_bias,
    resample_1d,
    resample_2d,
)
from ._base import FeatureTaps, VideoModel, init_weights_trunc_normal
from ._config import NANO_RECIPE, ModelConfig, PaperReference
from ._registry import Variant, register_variants

Boundary = Literal["skip", "clamp", "cyclic"]
GlobalEmbed = Literal["cls_token", "avgpool"]
COMPONENTS = ("CA", "CA+SA", "CA+LA", "CA+SA+LA")

CITATION = "Li, Xiong, Han, Guo, Shrinking Temporal Attention in Transformers for Video Action Recognition, AAAI 2022"


def neighbour_frames(num_frames: int, t_o: int, boundary: Boundary, device=None) -> tuple[Tensor, Tensor | None]:
    """Short-term window of every frame: ``(idx (T, t_o - 1), valid (T, t_o - 1) or None)``.

    Row ``i`` lists frames ``i - t_o//2 .. i + t_o//2`` without ``i`` (paper, Short-Term Attention),
    mapped into the clip by ``boundary``; ``valid`` marks the neighbours that exist (``"skip"`` only).
    """
    check_window(t_o, boundary)
    r = t_o // 2
    rows = [[i + o for o in range(-r, r + 1) if o != 0] for i in range(num_frames)]  # (T, t_o - 1)
    if boundary == "cyclic":
        rows = [[j % num_frames for j in row] for row in rows]
    valid = None
    if boundary == "skip" and t_o > 1:
        valid = torch.tensor([[0 <= j < num_frames for j in row] for row in rows], device=device)
    rows = [[min(max(j, 0), num_frames - 1) for j in row] for row in rows]  # "clamp" (and skip's fill)
    return torch.tensor(rows, dtype=torch.long, device=device).reshape(num_frames, t_o - 1), valid


def check_window(t_o: int, boundary: str) -> None:
    if t_o < 1 or t_o % 2 == 0:
        raise ValueError(f"t_o must be an odd window size >= 1 (3, 5, 7 in the paper), got {t_o}")
    if boundary not in ("skip", "clamp", "cyclic"):
        raise ValueError(f"sa_boundary must be 'skip', 'clamp' or 'cyclic', got {boundary!r}")


def parse_components(components: str) -> tuple[bool, bool]:
    """``"CA+SA+LA"`` -> ``(short_term, long_term)``; current attention is always on (Table 1)."""
    parts = set(components.replace(" ", "").upper().split("+"))
    if "CA" not in parts or not parts <= {"CA", "SA", "LA"}:
        raise ValueError(f"attention must be one of {COMPONENTS}, got {components!r}")
    return "SA" in parts, "LA" in parts


# ------------------------------------------------------------------------------------------- blocks
class AttentionPool(nn.Module):
    """MViT-style pooling of per-head tokens within each frame: depthwise conv (1 x k x k, stride s),
    shared by the heads, then LayerNorm over the head dim. The prefix (class) token skips the conv.

    ``(BT, heads, prefix + h*w, d) -> (BT, heads, prefix + h'*w', d)``.
    """

    def __init__(self, head_dim: int, stride: int, kernel: int = 3) -> None:
        super().__init__()
        self.stride = stride
        self.pool = nn.Conv2d(head_dim, head_dim, kernel, stride, kernel // 2, groups=head_dim, bias=False)
        self.norm = nn.LayerNorm(head_dim)

    def forward(self, x: Tensor, grid: tuple[int, int], prefix: int) -> tuple[Tensor, tuple[int, int]]:
        heads = x.shape[1]
        cls, patches = x[:, :, :prefix], x[:, :, prefix:]
        patches = rearrange(patches, "b n (h w) d -> (b n) d h w", h=grid[0], w=grid[1])
        patches = self.pool(patches)  # (BT*heads, d, h', w')
        grid = (patches.shape[-2], patches.shape[-1])
        patches = rearrange(patches, "(b n) d h w -> b n (h w) d", n=heads)
        return self.norm(torch.cat([cls, patches], dim=2)), grid


class ShrinkingTemporalAttention(Attention):
    """STA (Eq. 1-8) on ``(B, T, prefix + h*w, C)`` tokens; ``prefix`` is 1 (class token) or 0 (avgpool).

    Returns ``(B, T, prefix + h'*w', C)`` with ``(h', w')`` the grid after Q pooling (``q_stride``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_stride: int = 1,
        q_stride: int = 1,
        t_o: int = 3,
        short_term: bool = True,
        long_term: bool = True,
        sa_pool: int = 2,
        sa_boundary: Boundary = "skip",
        global_embed: GlobalEmbed = "cls_token",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        check_window(t_o, sa_boundary)
        if global_embed not in ("cls_token", "avgpool"):
            raise ValueError(f"global_embed must be 'cls_token' or 'avgpool', got {global_embed!r}")
        self.t_o, self.short_term, self.long_term = t_o, short_term and t_o > 1, long_term
        self.sa_pool, self.sa_boundary, self.global_embed = sa_pool, sa_boundary, global_embed
        self.pool_q = AttentionPool(self.head_dim, q_stride) if q_stride > 1 else None
        self.pool_k = AttentionPool(self.head_dim, kv_stride)
        self.pool_v = AttentionPool(self.head_dim, kv_stride)

    @property
    def prefix(self) -> int:
        return 1 if self.global_embed == "cls_token" else 0

    def project(
        self, x: Tensor, grid: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int], tuple[int, int]]:
        """Eq. 1-2: ``q (BT, h, prefix + Nq, d)``, ``k, v (BT, h, 1 + N_CA, d)`` -- the first key/value
        of every frame is its global embedding (class token or spatial mean) -- the query grid and
        the CA grid (``N_CA = h_ca * w_ca``)."""
        q, k, v = self.split_heads(rearrange(x, "b t n c -> (b t) n c"))  # (BT, heads, prefix + h*w, d)
        if self.prefix == 0:  # global embedding of the keys/values = their spatial mean (Table 3)
            k, v = torch.cat([k.mean(2, keepdim=True), k], 2), torch.cat([v.mean(2, keepdim=True), v], 2)
        q_grid = grid
        if self.pool_q is not None:
            q, q_grid = self.pool_q(q, grid, self.prefix)
        k, kv_grid = self.pool_k(k, grid, 1)
        v, _ = self.pool_v(v, grid, 1)
        return q, k, v, q_grid, kv_grid

    def short_term_pool(self, x: Tensor, kv_grid: tuple[int, int]) -> Tensor:
        """Eq. 3: ``(BT, h, N_CA, d) -> (BT, h, N_SA, d)`` by 2D average pooling."""
        heads = x.shape[1]
        x = rearrange(x, "b n (h w) d -> (b n) d h w", h=kv_grid[0], w=kv_grid[1])
        x = F.avg_pool2d(x, self.sa_pool, self.sa_pool, ceil_mode=True)
        return rearrange(x, "(b n) d h w -> b n (h w) d", n=heads)

    def gather_keys(
        self, k: Tensor, kv_grid: tuple[int, int], T: int, window: tuple[Tensor, Tensor | None] | None
    ) -> tuple[Tensor, Tensor | None]:
        """Eq. 4-7 for keys or values ``(BT, h, 1 + N_CA, d)`` -> ``(BT, h, M, d)`` and the additive bias
        ``(BT, 1, 1, M)`` that removes missing short-term frames (``None`` when none is missing).
        ``window`` is :func:`neighbour_frames` of the clip (``None`` without short-term attention)."""
        g, k_ca = k[:, :, :1], k[:, :, 1:]  # global embedding (BT, h, 1, d); CA keys (BT, h, N_CA, d)
        parts = [k_ca]
        bias = None
        if window is not None:
            k_sa = rearrange(self.short_term_pool(k_ca, kv_grid), "(b t) h n d -> b t h n d", t=T)
            idx, valid = window
            k_sa = k_sa[:, idx]  # (B, T, t_o - 1, h, N_SA, d): neighbours of every frame
            parts.append(rearrange(k_sa, "b t w h n d -> (b t) h (w n) d"))
            if valid is not None:
                n_sa = k_sa.shape[-2]
                bias = key_padding_bias(valid).to(k.dtype).repeat_interleave(n_sa, dim=1)  # (T, (t_o - 1) * N_SA)
        if self.long_term:
            g = rearrange(g, "(b t) h one d -> b one h t d", t=T)  # every frame sees all T class tokens
            parts.append(rearrange(g.expand(-1, T, -1, -1, -1), "b t h s d -> (b t) h s d"))
        else:
            parts.append(g)  # a frame's own global key only (CA with the class token, as MViT)
        keys = torch.cat(parts, dim=2)
        if bias is not None:
            n_ca, n_rest = k_ca.shape[2], keys.shape[2] - k_ca.shape[2] - bias.shape[1]
            bias = F.pad(bias, (n_ca, n_rest))  # zeros for CA and LA keys: (T, M)
            bias = bias[None].expand(keys.shape[0] // T, -1, -1).reshape(keys.shape[0], 1, 1, -1)
        return keys, bias

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The query grid after Q pooling (kernel 3, padding 1, stride ``q_stride``)."""
        s = self.pool_q.stride if self.pool_q is not None else 1
        return ((grid[0] - 1) // s + 1, (grid[1] - 1) // s + 1)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        B, T = x.shape[:2]
        q, k, v, q_grid, kv_grid = self.project(x, grid)
        window = None
        if self.short_term:
            idx = geometry_buffer(
                self, f"neighbours_{T}", lambda: neighbour_frames(T, self.t_o, self.sa_boundary)[0], x.device
            )
            valid = geometry_buffer(
                self, f"neighbours_valid_{T}", lambda: neighbour_frames(T, self.t_o, self.sa_boundary)[1], x.device
            )
            window = (idx, valid)
        k, bias = self.gather_keys(k, kv_grid, T, window)
        v, _ = self.gather_keys(v, kv_grid, T, window)
        drop = self.attn_drop if self.training else 0.0
        out, _ = attention(q, k, v, bias, drop, False, self.scale)  # Eq. 8: one softmax over [CA, SA, LA]
        return rearrange(self.merge_heads(out), "(b t) n c -> b t n c", t=T)


class SkipPool(nn.Module):
    """MViT-v1's pooled skip path at a block that pools its queries: max-pooling (s+1)x(s+1), stride s,
    over each frame's patch tokens, the prefix (class) token passed through.
    ``(B, T, prefix + h*w, C) -> (B, T, prefix + h'*w', C)``."""

    def __init__(self, stride: int, prefix: int) -> None:
        super().__init__()
        self.stride, self.prefix = stride, prefix

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        T = x.shape[1]
        cls, patches = x[:, :, : self.prefix], x[:, :, self.prefix :]
        patches = rearrange(patches, "b t (h w) c -> (b t) c h w", h=grid[0], w=grid[1])
        s = self.stride
        patches = F.max_pool2d(patches, s + 1, s, (s + 1) // 2)  # (BT, C, h', w')
        return torch.cat([cls, rearrange(patches, "(b t) c h w -> b t (h w) c", t=T)], dim=2)


def sta_block(
    dim: int, dim_out: int, num_heads: int, *, kv_stride: int, q_stride: int = 1, mlp_ratio: float = 4.0,
    drop_path: float = 0.0, **sta_kwargs,
) -> PreNormBlock:  # fmt: skip
    """Eq. 9-10 with MViT-v1's stage transitions: ``dim_out != dim`` widens in the MLP (skip through a
    linear), ``q_stride > 1`` pools the queries and max-pools the skip path."""
    attn = ShrinkingTemporalAttention(dim, num_heads, kv_stride, q_stride, **sta_kwargs)
    return PreNormBlock(
        dim, attn, mlp_ratio=mlp_ratio, out_dim=dim_out, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        drop_path=drop_path, shortcut=SkipPool(q_stride, attn.prefix) if q_stride > 1 else None,
    )  # fmt: skip


class TemporalAggregation(nn.Module):
    """A video class token and ``depth`` pre-norm transformer layers over ``[x_cls, cls_1 .. cls_T]``
    (``mlp_ratio=0``: attention-only layers)."""

    no_weight_decay_names = ("cls_token",)

    def __init__(self, dim: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(
            PreNormBlock(
                dim,
                Attention(dim, num_heads, qkv_bias),
                mlp_ratio=mlp_ratio,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
            )
            for _ in range(depth)
        )
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C) -> (B, 1 + T, C)`` with the video class token first."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x


# Table 5: the token-embedding block with 1, 3 or 5 convolutions (channels, kernel, stride), and the
# STA stages ``(depth, dim, heads)`` that follow it (see the module docstring for 1 and 5).
STEMS = {
    1: ([(96, (3, 7, 7), (2, 4, 4))], ((1, 96, 1), (2, 192, 2), (11, 384, 4), (2, 768, 8))),
    3: (
        [(64, (3, 3, 3), (2, 2, 2)), (96, (3, 3, 3), (1, 2, 2)), (192, (3, 3, 3), (1, 2, 2))],
        ((2, 192, 2), (11, 384, 4), (2, 768, 8)),
    ),
    5: (
        [
            (64, (3, 3, 3), (2, 2, 2)),
            (96, (3, 3, 3), (1, 2, 2)),
            (192, (3, 3, 3), (1, 2, 2)),
            (192, (3, 3, 3), (1, 1, 1)),
            (384, (3, 3, 3), (1, 2, 2)),
        ],
        ((11, 384, 4), (2, 768, 8)),
    ),
}


class STAT(VideoModel):
    """Shrinking Temporal Attention Transformer: conv stem, STA stages, temporal aggregation, head.

    Ablation arguments: ``attention`` (Table 1), ``t_o`` (Table 2), ``global_embed`` (Table 3), ``l_ta``
    (Table 4), ``stem_convs`` (Table 5); ``sa_boundary``, ``sa_pool``, ``kv_stride`` / ``kv_pool_size`` and
    ``ta_mlp_ratio`` are our choices (module docstring).
    ``stem`` / ``stages`` override the Table 5 presets (``stat_nano`` uses them); ``pos_embed_std`` is the
    init std of the spatial and temporal position embeddings (module docstring, ``stat_nano``).
    """

    no_weight_decay_names = ("cls_token", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class")

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 16,
        img_size: int = 224,
        in_chans: int = 3,
        t_o: int = 3,
        attention: str = "CA+SA+LA",
        global_embed: GlobalEmbed = "cls_token",
        l_ta: int = 1,
        ta_mlp_ratio: float = 4.0,
        stem_convs: int = 3,
        stem: Sequence[tuple[int, Sequence[int], Sequence[int]]] | None = None,
        stages: Sequence[tuple[int, int, int]] | None = None,
        kv_pool_size: int = 7,
        kv_stride: int | None = None,
        sa_pool: int = 2,
        sa_boundary: Boundary = "skip",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        head_drop_rate: float = 0.5,
        pos_embed_std: float = 0.02,
    ) -> None:
        super().__init__()
        if stem_convs not in STEMS:
            raise ValueError(f"stem_convs must be 1, 3 or 5 (Table 5), got {stem_convs}")
        if l_ta < 0:
            raise ValueError(f"l_ta must be >= 0, got {l_ta}")
        short_term, long_term = parse_components(attention)
        stem = list(stem or STEMS[stem_convs][0])
        stages = list(stages or STEMS[stem_convs][1])
        if stem[-1][0] != stages[0][1]:
            raise ValueError(f"the stem ends at {stem[-1][0]} channels but the first stage is {stages[0][1]} wide")
        self.in_chans, self.global_embed, self.l_ta = in_chans, global_embed, l_ta
        self.stem = conv_stem(in_chans, stem)
        st = [1, 1, 1]
        for _, _, stride in stem:
            st = [a * b for a, b in zip(st, stride)]
        self.stem_stride = tuple(st)
        self.grid = (img_size // st[1], img_size // st[2])  # token grid of the built size
        self.num_tokens_t = -(-num_frames // st[0])
        dim0 = stages[0][1]
        self.prefix = 1 if global_embed == "cls_token" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 1, dim0)) if self.prefix else None
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim0))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.num_tokens_t, dim0))
        self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim0)) if self.prefix else None
        self.pos_drop = nn.Dropout(drop_rate)

        # K/V stride of the first stage brings the built grid to kv_pool_size (MViT's adaptive KV stride:
        # 4 for 28x28, 8 for 56x56 at 224), halved at every stage that halves the grid.
        if kv_stride is None:
            kv_stride = max(1, self.grid[0] // kv_pool_size)
        depth = sum(d for d, _, _ in stages)
        dpr = drop_path_schedule(drop_path_rate, depth)
        sta = dict(
            t_o=t_o, short_term=short_term, long_term=long_term, sa_pool=sa_pool, sa_boundary=sa_boundary,
            global_embed=global_embed, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, proj_drop=drop_rate,
        )  # fmt: skip
        blocks = []
        for s, (d, dim, heads) in enumerate(stages):
            for j in range(d):
                q_stride = 2 if (s > 0 and j == 0) else 1
                if q_stride > 1:
                    kv_stride = max(1, kv_stride // 2)
                dim_out = stages[s + 1][1] if (j == d - 1 and s + 1 < len(stages)) else dim
                blocks.append(
                    sta_block(
                        dim, dim_out, heads, kv_stride=kv_stride, q_stride=q_stride, mlp_ratio=mlp_ratio,
                        drop_path=dpr[len(blocks)], **sta,
                    )
                )  # fmt: skip
        self.blocks = nn.ModuleList(blocks)
        self.stage_ends = [sum(d for d, _, _ in stages[: i + 1]) - 1 for i in range(len(stages))]
        self.num_intermediates = len(stages)
        width = stages[-1][1]
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.temporal_agg = TemporalAggregation(width, stages[-1][2], l_ta, ta_mlp_ratio) if l_ta else None
        self.init_head(width, num_classes, head_drop_rate)
        for p in (self.cls_token, self.pos_embed_class):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for p in (self.pos_embed_spatial, self.pos_embed_temporal):
            nn.init.trunc_normal_(p, std=pos_embed_std)
        self.apply(init_weights_trunc_normal)

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Token embedding block: ``(B, 3, T, H, W) -> (B, n_t, prefix + n_h n_w, C)`` with position
        embeddings (resampled when the input is not the built size)."""
        x = self.stem(x)  # (B, C, n_t, n_h, n_w)
        B, C, T, H, W = x.shape
        x = rearrange(x, "b c t h w -> b t (h w) c")
        x = x + resample_2d(self.pos_embed_spatial, self.grid, (H, W))[:, None]
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed_class[:, None]).expand(B, T, -1, -1)  # (B, T, 1, C)
            x = torch.cat([cls, x], dim=2)
        x = x + resample_1d(self.pos_embed_temporal, T)[:, :, None]  # (1, T, 1, C) over all tokens
        return self.pos_drop(x), (H, W)

    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """Stage outputs; the features are the last STA block's tokens ``(B, n_t, prefix + h w, C)``."""
        check_video_input(x, self.in_chans, type(self).__name__)
        x, grid = self._embed(x)
        for i, blk in enumerate(self.blocks):
            x = self.checkpointed(blk, x, grid)
            grid = blk.attn.output_grid(grid)
            if i in self.stage_ends:
                x = self.tap(taps, self.stage_ends.index(i), x, "b t (h w) c", prefix=self.prefix, h=grid[0])
                if x is None:
                    return None
        return x

    def pool(self, x: Tensor) -> Tensor:
        """The temporal aggregation (Table 4) over the frames' class (or mean) tokens, then the LayerNorm."""
        frames = x[:, :, 0] if self.prefix else x.mean(dim=2)  # (B, n_t, C)
        if self.temporal_agg is None:  # l_ta = 0: average of the frames' tokens
            return self.norm(frames).mean(dim=1)
        return self.norm(self.checkpointed(self.temporal_agg, frames))[:, 0]  # the video class token

    @property
    def frames_per_image(self) -> int:
        return self.stem_stride[0]

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "pos_embed_temporal":  # (1, n_t, C)
            return resample_1d(value, target.shape[1])
        if key == "pos_embed_spatial":  # (1, h w, C) of a square grid
            return resample_2d(value, None, self.grid)
        return super().resample_tensor(key, value, target)

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^cls_token|pos_embed|stem",
            blocks=[(r"^blocks\.(\d+)", None)],
            aggregation=r"^temporal_agg|norm",
        )


# ------------------------------------------------------------------------------------------ variants
def _k400(name: str, *, frames: int, views: str, gflops: float, top1: float) -> ModelConfig:
    """A paper variant: trained from scratch on Kinetics-400 at 224; params not reported, GMACs per view held to
    5 % (a reconstruction, module docstring)."""
    return ModelConfig(
        name=name, num_frames=frames, img_size=224, test_views=views, sampling=f"uniform:{frames}", min_input=(4, 32),
        paper=PaperReference(
            params_m=None, gflops=gflops, params_head_classes=None, views=views, top1=top1, dataset="Kinetics-400",
            citation=CITATION, note="params not reported; skeleton reconstructed from MViT-B (module docstring)",
            tolerance=0.05,
        ),
    )  # fmt: skip


register_variants(
    STAT,
    [
        Variant(_k400("stat_16", frames=16, views="5x1", gflops=59.2, top1=78.6), dict(t_o=3)),
        Variant(_k400("stat_32", frames=32, views="5x1", gflops=120.2, top1=80.4), dict(t_o=5)),
        Variant(_k400("stat_64", frames=64, views="3x3", gflops=241.3, top1=81.3), dict(t_o=7)),
        Variant(ModelConfig(name="stat_nano", num_frames=16, img_size=64, test_views="2x1", sampling="uniform:16",
                            min_input=(4, 32), recipe={**NANO_RECIPE, "lr": 5e-4}),
                dict(stem=[(16, (3, 3, 3), (2, 2, 2)), (32, (3, 3, 3), (1, 2, 2)), (48, (3, 3, 3), (1, 2, 2))],
                     stages=((1, 48, 1), (2, 96, 2), (1, 192, 4)), kv_pool_size=4, t_o=3, global_embed="avgpool",
                     l_ta=0, pos_embed_std=0.2, drop_path_rate=0.0, head_drop_rate=0.0)),
    ],
)  # fmt: skip
