"""CSTransformer: cross-stage self-attention and feature aggregation on a divided ViT-B.

"Cross-Stage Transformer for Video Learning" (anonymous ICLR 2022 submission).

Every frame is cut into ``P`` 16x16 patches and embedded; a zero-initialised class token is put in
front of each frame's patches, with a spatial position embedding ``P_s`` (1+P rows, Eq. 1) and a
temporal one ``P_t`` (T rows) added as Eq. 2-4::

    V_cls = V_cls + P_s^cls;   V = V + P_s^V + P_t;   V_0 = Concat[V_cls, V]     (B*T, 1+P, C)

Then a stack of spatial blocks (STB: attention over the 1+P tokens of a frame, MLP ratio 4) and a
stack of temporal blocks (TTB: attention over the T tokens at each of the 1+P positions, MLP ratio 1)
run one after the other, pre-norm ViT blocks (Eq. 5-6). Two cross-stage mechanisms join the blocks:

* CSSA (Eq. 8 / 13-14): block ``i`` attends with ``softmax(A_i + alpha_i * A_{i-1})`` where
  ``A = Q K^T / sqrt(d)`` are the pre-softmax logits of the previous block of the same kind. The first
  STB and the first TTB (whose ``A_{i-1}`` has another shape) use plain attention.
* FAM (Eq. 9): ``Y = sum_{i<L} LN_i(beta_i * V_i) + V_L`` over all ``L`` blocks' outputs, then a head
  of LayerNorm + Linear on the class token.

With ``cross_stage=False, aggregate=False`` the model is the paper's baseline (Table 2b): ViT-B on
every frame followed by temporal ViT blocks. Variants (Table 5): V1 10 STB + 10 TTB, V2 12 + 6 (the
paper's default), V3 12 + 8, all at ViT-B width (768, 12 heads).

Choices where the paper is silent (no official code exists):

* ``alpha``: one learnable scalar per block (the paper: "a learnable ratio of the i-th block"),
  initialised to 0 so that a model loaded from an image ViT starts as the baseline and CSSA is
  learned from there (the gradient of the loss w.r.t. ``alpha`` is not zero at 0).
  ``alpha_mode="head"`` gives one ratio per head (as an unofficial third-party port does);
  ``alpha_init`` sets the start value. The first STB and first TTB have no ``alpha``: it would never
  get a gradient (which also breaks DDP without ``find_unused_parameters``).
* Logits passed on (``cssa_logits``): ``"raw"`` (default) passes ``A_i`` itself, as Eq. 13-14 write
  it; ``"mixed"`` passes ``A_i + alpha_i * A_{i-1}`` so the mixing accumulates over the stack
  (RealFormer-style residual attention; the unofficial port does this).
* FAM sums the outputs of *all* blocks, STBs and TTBs (Fig. 1b, 3). STB outputs ``(B*T, 1+P, C)`` and
  TTB outputs ``(B*(1+P), T, C)`` hold the same tokens, summed as ``(B, T, 1+P, C)``; ``Y`` is the
  model's feature map (``forward_features``), of which the head reads the class tokens. A running sum
  keeps one extra full-size tensor (not a copy of every block's output); each block's ``LN_i`` input
  is kept for the backward pass (about 5 % more activation memory than FAM at the class tokens alone).
  ``beta_i`` is a scalar per block, initialised to 1; each ``LN_i`` is an ordinary LayerNorm (weight 1, bias 0;
  ``fam_norm_init=0`` starts FAM at ``Y = V_L`` instead). Note that ``LN(beta * V) = sign(beta) LN(V)``
  up to LN's epsilon: Eq. 9 is implemented literally, so ``beta`` barely acts; the learned LN weight
  carries the scale.
* Reading the class token after the temporal stack: the TTB at position 0 is attention among the T
  class tokens, so each frame keeps its own class token. The head applies its LayerNorm to each of
  the T class tokens of ``Y`` and averages them (symmetric in time; equals timm ViT for T = 1), then
  the Linear classifier.
* What the head reads of ``Y`` (the paper: "the aggregated feature Y from FAM will go through a MLP head";
  silent on how ``Y`` is reduced). ``global_pool="cls"`` (the default, above) reads the class tokens,
  and then the TTBs at the patch positions and the last STB's patch outputs never reach the score: the
  temporal blocks keep positions apart and nothing mixes the patches back into the class tokens after
  the last STB (their gradient is exactly 0; tests/test_deploy.py). ``"cls_moments"`` (``cst_nano``; not
  in the paper) reads the class tokens' average and the first moments of ``Y``'s patch tokens (their
  average and their averages weighted by column and row, :func:`~kinetoscope.models._base.moment_pool`,
  ``4 C`` numbers), so every block reaches the score and a turn about the centre (the curl of a motion
  field, which averages to nothing) is a linear read-out. Both are symmetric in time. In the 15-epoch
  screens of docs/benchmarks/temporal_truth.md (in-memory copy of the loop, lr 5e-4, batch 4)
  ``cst_nano`` went from 85.0 % (one seed) to 90.0 / 87.5 % (seeds 0, 1), the rotation pair (ccw/cw) from
  60/30 to 70/50 and 60/40; every other class at 100 %.
* ``P_s`` is one ``(1, 1+P, C)`` tensor named ``pos_embed`` as in timm (its row 0 is ``P_s^cls``,
  Eq. 1), so image checkpoints load as they are; ``P_t`` (``time_embed``, ``(1, T, 1, C)``) is added to
  patch tokens only (Eq. 3) and starts at 0, so a static clip through the STBs of a loaded model
  gives the image ViT's tokens. Both are resampled (bicubic / linear) for other sizes / frame counts.
  With ``P_t = 0`` the class tokens of all frames are equal, TTBs are permutation-equivariant and the head
  averages over frames, so the initialised model is exactly blind to frame order (``cst_nano``: reversing
  a clip moved the logits by 7e-8); trained from scratch, order can only enter through ``P_t``'s gradient.
  ``time_embed_std`` starts ``P_t`` at trunc-normal(std) instead. ``cst_nano`` (from scratch) uses 0.5:
  on a clip-order toy (two clips per pair with the same frames, forward and reversed;
  tests/test_temporal_learning.py) it stayed at ln 2 for 30 AdamW steps at lr 3e-4 with 0.02 (as
  ``P_s``) and with 0, and fitted it with 0.5 (loss 0.15 at lr 3e-4, 0.02 at lr 1e-3, the recipe's lr then;
  ``P_s`` at 0.2 as well put it back at ln 2).
* ``tubelet_size`` (not in the paper, whose patches are 2D; default 1): patches of ``tubelet x p x p``
  pixels (ViViT's tubelet embedding), ``T / tubelet`` token frames. ``cst_nano`` uses tubelets of 2 frames
  and 8 px patches (an 8 x 8 grid at 64 px). Trained from scratch on ``kinetoscope synth``'s eight classes,
  the paper's embedding (16 px patches of single frames, a 4 x 4 grid) stays at chance: the per-frame
  stack has nothing to learn from before the temporal stack has learned something, and the temporal
  stack has no motion to read (17.5 % through the CLI, training loss flat at ln 8 for 15 epochs; flat in
  6-epoch screens as well: lr 3e-4, ``P_t`` at 0.1, 5x the patch-embedding scale, average pooling,
  fan-in query/key init in the TTBs). Measured with an in-memory copy of the training loop (6 epochs
  unless said, 1 thread):
  8 px patches alone stay flat (loss 2.09 at epoch 4), tubelets of 2 alone stay flat (12.5 %), both
  together learn (loss 1.25 at epoch 6; 71.2 % after 15 epochs, translations 90-100 %, rotation at
  chance). A tubelet's linear embedding sees a frame difference at its first layer, as STAT's 3D-conv
  stem does; the cross-stage attention, FAM and ``P_t`` then act on features that already move. The
  CLI row is in docs/benchmarks/temporal_truth.md.
* ``stem`` (not in the paper; default None, the linear embedding): 3D convolutions in place of the
  tubelet's one linear map, with the same strides in total, so the token grid and everything after it
  are unchanged. ``cst_nano`` uses STAT's three-conv stem (conv-BN-ReLU, 3x3x3 kernels, strides
  ``(2,2,2), (1,2,2), (1,2,2)``, 16 and 32 channels, then ``embed_dim``;
  :func:`~kinetoscope.layers.conv_stem`). With tubelets alone the nano learned every pair but the turn
  about the centre (cw/ccw near chance), and on the turn pair alone (80 videos, 300 steps) its training
  loss stayed at ln 2 with any embedding, grid, depth split, block order or head we tried
  (docs/benchmarks/temporal_truth.md): the TTBs compare a place only with the same place in other
  frames and nothing mixes places after the last STB, so a motion that depends on *where* it is (a
  turn moves nothing on average) must already be in the tokens. The stem's tokens see neighbouring
  places in three frames (each conv reaches one step further): on the turn pair alone it fits
  (loss 0.01 / 0.03, 100 % on seeds 0 / 1), and on the eight classes (15 epochs, lr 5e-4, batch 4)
  95.0 / 92.5 % against 90.0 / 87.5 % for the tubelets alone (cw/ccw 90/70 and 80/60). Its recipe draws
  the train short side from 1-1.25x the crop (``train_short_side``, as ``dualformer_nano``): the nano fits
  its training set (loss 0.01-0.02 at the end) and the default 1.14-1.43x shows the shapes larger than
  the full-frame validation does; seed 0 went from 95.0 to 98.8 % (cw/ccw 100/90).
* TTBs start from trunc-normal weights (the paper says only that ViT-B is the pre-trained base; its
  TTB MLP has another shape than ViT's). ``load_pretrained_2d`` fills the STBs with ViT blocks
  ``0..n_stb-1``, the patch embedding, class token, ``pos_embed`` and the final norm (as the head
  norm); V1 leaves ViT blocks 10-11 unused.
* Dropout/drop-path (not given): stochastic depth 0.1 linearly over all blocks, no head dropout.

FLOPs: the paper counts multiply and add separately (GFLOPs = 2 x GMACs; see docs/flops.md).
Counted here (meta device, 8x224): V1 2 x 173.2, V2 2 x 174.1, V3 2 x 185.3 GMACs = 346.4, 348.2,
370.6 vs the paper's 345.2, 339.6, 365.6 GFLOPs (+0.3 %, +2.5 %, +1.4 %); TTB MLP ratio 2 / 4 (Table 1d):
370.5 / 415.1 vs 359.9 / 400.7 (+2.9 %, +3.6 %). Params are not reported; ours: V1/V2 107.4 M, V3 114.5 M
with a 400-class head. CSSA needs the logits, so every block that passes them on runs the explicit
(non-fused) attention; the last block of each stack and the baseline use the fused SDPA kernel.
GFLOPs are held to the paper's within 5 % (our FLOP convention reading, 2 x MAC, fits within 2.5 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from ..layers import (
    Attention,
    PatchEmbed3d,
    PreNormBlock,
    check_divisible,
    check_video_input,
    drop_path_schedule,
    resample_1d,
    resample_2d,
)
from ._base import FeatureTaps, VideoModel, init_weights_trunc_normal, moment_pool
from ._config import INCEPTION_MEAN, INCEPTION_STD, NANO_RECIPE_FULL_FRAME, ModelConfig, PaperReference
from ._registry import Variant, register_variants

AlphaMode = Literal["scalar", "head"]
LogitsMode = Literal["raw", "mixed"]

CITATION = "Cross-Stage Transformer for Video Learning, ICLR 2022 submission (OpenReview, anonymous)"


class CrossStageAttention(Attention):
    """MHSA that adds a bias (``alpha_i * A_{i-1}``, Eq. 8) inside the softmax and returns the logits the next
    block mixes in: ``forward(x, bias) -> (out, logits)``, ``logits`` ``None`` when ``pass_logits`` is off
    (then the fused SDPA path runs). ``cssa_logits="mixed"`` passes ``A_i + bias`` instead of ``A_i``."""

    def __init__(
        self, dim: int, num_heads: int, *, pass_logits: bool = False, cssa_logits: LogitsMode = "raw", **kwargs
    ) -> None:
        super().__init__(dim, num_heads, **kwargs)
        if cssa_logits not in ("raw", "mixed"):
            raise ValueError(f"cssa_logits must be 'raw' or 'mixed', got {cssa_logits!r}")
        self.pass_logits, self.cssa_logits = pass_logits, cssa_logits

    def forward(self, x: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
        if not self.pass_logits:
            return super().forward(x, attn_bias=bias), None
        out, logits = super().forward(x, attn_bias=bias, return_logits=True)  # logits A_i exclude the bias
        if self.cssa_logits == "mixed" and bias is not None:
            logits = logits + bias
        return out, logits


class CrossStageBlock(PreNormBlock):
    """Pre-norm ViT block whose attention can mix in the previous block's logits (CSSA, Eq. 5, 6, 8).

    ``forward(x, prev) -> (x, logits)``: ``x`` is ``(rows, N, C)`` (frames for an STB, positions for
    a TTB); ``prev`` the previous block's logits ``(rows, heads, N, N)`` or ``None`` (plain attention).
    ``logits`` is what the next block mixes in (``None`` when ``pass_logits`` is off).
    """

    no_weight_decay_names = ("alpha",)

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        cross_stage: bool = False,
        pass_logits: bool = False,
        alpha_mode: AlphaMode = "scalar",
        alpha_init: float = 0.0,
        cssa_logits: LogitsMode = "raw",
    ) -> None:
        if alpha_mode not in ("scalar", "head"):
            raise ValueError(f"alpha_mode must be 'scalar' or 'head', got {alpha_mode!r}")
        attn = CrossStageAttention(
            dim, num_heads, pass_logits=pass_logits, cssa_logits=cssa_logits, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=drop,
        )  # fmt: skip
        super().__init__(
            dim, attn, mlp_ratio=mlp_ratio, norm_layer=partial(nn.LayerNorm, eps=1e-6), proj_drop=drop,
            drop_path=drop_path,
        )  # fmt: skip
        shape = (num_heads, 1, 1) if alpha_mode == "head" else (1,)
        # alpha_i of Eq. 8; absent where the block has no previous logits to mix in
        self.alpha = nn.Parameter(torch.full(shape, float(alpha_init))) if cross_stage else None

    def forward(self, x: Tensor, prev: Tensor | None = None) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
        bias = None
        if self.alpha is not None and prev is not None:
            bias = self.alpha.to(prev.dtype) * prev  # alpha_i * A_{i-1}: (rows, heads, N, N)
        return super().forward(x, bias)


class FeatureAggregation(nn.Module):
    """FAM, Eq. 9: ``Y = sum_{i=1}^{L-1} LN_i(beta_i * V_i) + V_L``, accumulated block by block."""

    no_weight_decay_names = ("beta",)

    def __init__(self, dim: int, num_blocks: int, norm_init: float = 1.0) -> None:
        super().__init__()
        n = max(num_blocks - 1, 0)
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(n))
        self.beta = nn.Parameter(torch.ones(n))
        self.norm_init = norm_init
        self.reset_norms()

    def reset_norms(self) -> None:
        for norm in self.norms:
            nn.init.constant_(norm.weight, self.norm_init)
            nn.init.zeros_(norm.bias)

    def term(self, i: int, v: Tensor) -> Tensor:
        """``LN_i(beta_i * V_i)`` for block ``i`` (0-based, ``i < L - 1``)."""
        return self.norms[i](self.beta[i] * v)


class CSTransformer(VideoModel):
    """Cross-stage transformer: STBs then TTBs with CSSA and FAM (paper Fig. 1, Eq. 1-9).

    Args:
        spatial_depth / temporal_depth: numbers of STBs / TTBs (Table 5); ``temporal_depth=0`` is an
            image ViT run on every frame.
        temporal_mlp_ratio: TTB MLP expansion (Table 1d: 1, 2, 4); ``mlp_ratio`` is the STB's.
        cross_stage: CSSA on (Eq. 8); ``aggregate``: FAM on (Eq. 9). Both off = the paper's baseline.
        alpha_mode / alpha_init / cssa_logits: CSSA details the paper leaves open (module docstring).
        spatial_pos_embed / temporal_pos_embed: Table 1b ablation (drop ``P_s`` / ``P_t``).
        fam_norm_init: initial weight of the FAM LayerNorms (1 = standard; 0 = start at ``Y = V_L``).
        time_embed_std: std of ``P_t``'s trunc-normal init; 0 (default) starts it at 0 (module docstring).
        global_pool: what the head reads of ``Y``: ``"cls"`` (default) the frames' class tokens, or
            ``"cls_moments"`` those and the first moments of the patch tokens (module docstring).
        tubelet_size: frames per patch (1, the paper's: 2D patches; ``cst_nano``: 2; module docstring).
        stem: conv layers ``(out_channels, kernel, stride)`` in place of the linear patch embedding (None, the
            paper's); their strides multiply to ``(tubelet_size, patch_size, patch_size)`` and the last gives
            ``embed_dim`` channels, so the token grid is the same (``cst_nano``; module docstring).
    """

    no_weight_decay_names = ("cls_token", "pos_embed", "time_embed")
    intermediate_norm = "all"

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 8,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 768,
        spatial_depth: int = 12,
        temporal_depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        temporal_mlp_ratio: float = 1.0,
        qkv_bias: bool = True,
        cross_stage: bool = True,
        aggregate: bool = True,
        alpha_mode: AlphaMode = "scalar",
        alpha_init: float = 0.0,
        cssa_logits: LogitsMode = "raw",
        spatial_pos_embed: bool = True,
        temporal_pos_embed: bool = True,
        fam_norm_init: float = 1.0,
        time_embed_std: float = 0.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.0,
        global_pool: Literal["cls", "cls_moments"] = "cls",
        stem: Sequence[tuple[int, int | Sequence[int], int | Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        if global_pool not in ("cls", "cls_moments"):
            raise ValueError(f"global_pool must be 'cls' or 'cls_moments', got {global_pool!r}")
        self.global_pool = global_pool
        if spatial_depth < 1 or temporal_depth < 0:
            raise ValueError(f"need spatial_depth >= 1 and temporal_depth >= 0, got {spatial_depth}, {temporal_depth}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch_size}")
        self.in_chans = in_chans
        self.num_frames = num_frames
        self.patch_size = patch_size
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.feature_grid = self.grid  # the patch grid of the latest features (forward_stages sets it)
        self.cross_stage, self.aggregate = cross_stage, aggregate
        self.tubelet_size = tubelet_size
        check_divisible((num_frames,), (tubelet_size,))  # the frames it is built for must make whole tubelets
        patch = (tubelet_size, patch_size, patch_size)
        self.patch_embed = PatchEmbed3d(patch, in_chans, embed_dim, pad=False, convs=stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # V_cls, initialised as 0
        num_patches = self.grid[0] * self.grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim)) if spatial_pos_embed else None
        time_tokens = max(num_frames // tubelet_size, 1)
        self.time_embed = nn.Parameter(torch.zeros(1, time_tokens, 1, embed_dim)) if temporal_pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = drop_path_schedule(drop_path_rate, spatial_depth + temporal_depth)

        def stack(depth: int, ratio: float, rates: list[float]) -> nn.ModuleList:
            return nn.ModuleList(
                CrossStageBlock(
                    embed_dim, num_heads, mlp_ratio=ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                    drop_path=rates[i], cross_stage=cross_stage and i > 0, pass_logits=cross_stage and i < depth - 1,
                    alpha_mode=alpha_mode, alpha_init=alpha_init, cssa_logits=cssa_logits,
                )
                for i in range(depth)
            )  # fmt: skip

        self.spatial_blocks = stack(spatial_depth, mlp_ratio, dpr[:spatial_depth])
        self.temporal_blocks = stack(temporal_depth, temporal_mlp_ratio, dpr[spatial_depth:])
        self.num_intermediates = spatial_depth + temporal_depth
        self.fam = FeatureAggregation(embed_dim, spatial_depth + temporal_depth, fam_norm_init) if aggregate else None
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # the head's LN
        self.init_head(embed_dim, num_classes, head_drop_rate)

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.time_embed is not None and time_embed_std > 0:
            nn.init.trunc_normal_(self.time_embed, std=time_embed_std)
        self.apply(init_weights_trunc_normal)
        if self.fam is not None:
            self.fam.reset_norms()

    # ------------------------------------------------------------------------------------- embedding
    def embed(self, x: Tensor) -> tuple[Tensor, int, tuple[int, int]]:
        """Eq. 1-4: ``(B, 3, T, H, W) -> V_0 (B*T', 1+P, C)``, ``T' = T / tubelet`` and the patch grid."""
        check_video_input(x, self.in_chans, type(self).__name__)
        x = self.patch_embed(x)  # (B, C, T/tubelet, H/p, W/p); raises if T, H, W do not divide
        T, grid = x.shape[2], (x.shape[3], x.shape[4])
        x = rearrange(x, "b c t h w -> b t (h w) c")
        cls = self.cls_token
        if self.pos_embed is not None:
            cls = cls + self.pos_embed[:, :1]  # Eq. 2: V_cls + P_s^cls
            x = x + resample_2d(self.pos_embed[:, 1:], self.grid, grid)[:, None]  # Eq. 3: + P_s^V
        if self.time_embed is not None:
            time = resample_1d(self.time_embed[:, :, 0], T)  # (1, T, C)
            x = x + time[:, :, None]  # Eq. 3: + P_t, patches only
        x = rearrange(x, "b t p c -> (b t) p c")
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # Eq. 4: (B*T, 1+P, C)
        return self.pos_drop(x), T, grid

    # ---------------------------------------------------------------------------------------- blocks
    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """STBs then TTBs with CSSA, FAM accumulated block by block; the features are ``Y (B, T, 1+P, C)``
        (Eq. 9) after the head's LayerNorm. Block ``i``'s grid is its output ``V_i`` at the patches."""
        B = x.shape[0]
        x, T, grid = self.embed(x)  # (B*T, N, C), N = 1 + P
        self.feature_grid = grid  # the patch grid of these features: "cls_moments" pooling places the tokens on it
        n_spatial, last = len(self.spatial_blocks), self.num_intermediates - 1
        y = prev = None
        for i, blk in enumerate([*self.spatial_blocks, *self.temporal_blocks]):
            if i == n_spatial:  # STBs attend within a frame, TTBs along time at each position
                x, prev = rearrange(x, "(b t) n c -> (b n) t c", b=B), None  # new shape: plain attention
            x, prev = self.checkpointed(blk, x, prev)
            rows = "(b t) n c" if i < n_spatial else "(b n) t c"
            tokens = self.tap(taps, i, rearrange(x, f"{rows} -> b t n c", b=B), "b t (h w) c", prefix=1, h=grid[0])
            if tokens is None:
                return None
            x = rearrange(tokens, f"b t n c -> {rows}")  # a view of x itself unless the stage was tapped
            if self.fam is not None and i < last:
                term = self.fam.term(i, tokens)  # LN_i(beta_i V_i), V_i as (B, T, N, C)
                y = term if y is None else y + term
        return self.norm(tokens if y is None else tokens + y)  # Eq. 9: Y = sum LN_i(beta_i V_i) + V_L

    def pool(self, x: Tensor) -> Tensor:
        """``Y (B, T, 1+P, C) -> (B, C)``: the frames' class tokens averaged (``"cls"``), or ``(B, 4 C)``:
        with the first moments of the patch tokens on their grid appended (``"cls_moments"``)."""
        if self.global_pool == "cls":
            return super().pool(x)
        h, w = self.feature_grid
        if h * w != x.shape[2] - 1:
            raise ValueError(f"features of {x.shape[2] - 1} patch tokens do not fill the last forward's {h}x{w} "
                             "grid: pool the features of the latest forward_features")  # fmt: skip
        grid = rearrange(x[:, :, 1:], "b t (h w) c -> b t h w c", h=h, w=w)
        return torch.cat([x[:, :, 0].mean(dim=1), moment_pool(grid)], dim=-1)

    @property
    def frames_per_image(self) -> int:
        return self.tubelet_size

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^cls_token|pos_embed|time_embed|patch_embed",
            spatial=[(r"^spatial_blocks\.(\d+)", None)],
            temporal=[(r"^temporal_blocks\.(\d+)", None), (r"^fam|^norm", (99999,))],
        )

    # ---------------------------------------------------------------------------------- 2D weights
    def convert_2d_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm ViT names -> ours: ``blocks.i`` -> ``spatial_blocks.i``, ``head.fc`` -> ``head``."""
        renamed = {("spatial_" + k if k.startswith("blocks.") else k): v for k, v in state_dict.items()}
        return super().convert_2d_state_dict(renamed)

    def resize_2d_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "pos_embed" and value.dim() == 3:
            return resample_2d(value, None, self.grid, num_prefix_tokens=1)  # the image grid -> ours
        return None

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "time_embed":  # (1, T, 1, C)
            return resample_1d(value[:, :, 0], target.shape[1])[:, :, None]
        return super().resample_tensor(key, value, target)


# ------------------------------------------------------------------------------------------ variants
def _k400(name: str, *, gflops: float, top1: float, note: str = "") -> ModelConfig:
    """A Table 5 variant: 8 frames (stride 32) at 224, 1 clip x 3 crops (Sec. 4.2), ViT-B (IN-21K) normalisation;
    params not reported, GFLOPs (2 x MAC) held to 5 %."""
    return ModelConfig(
        name=name, num_frames=8, img_size=224, mean=INCEPTION_MEAN, std=INCEPTION_STD, test_views="1x3",
        sampling="dense:8x32", min_input=(2, 32),
        paper=PaperReference(
            params_m=None, gflops=gflops, flop_convention="flop", views="1x3", top1=top1, dataset="Kinetics-400",
            pretrain="IN-21K", citation=CITATION, note=note, tolerance=0.05,
        ),
    )  # fmt: skip


_BASELINE = "Baseline-V2 (Table 2b): V2 without CSSA and FAM; GFLOPs are V2's"

register_variants(
    CSTransformer,
    [
        Variant(_k400("cst_v1", gflops=345.2, top1=76.3), dict(spatial_depth=10, temporal_depth=10)),
        Variant(_k400("cst_v2", gflops=339.6, top1=78.7), dict(spatial_depth=12, temporal_depth=6)),
        Variant(_k400("cst_v3", gflops=365.6, top1=78.9), dict(spatial_depth=12, temporal_depth=8)),
        Variant(_k400("cst_v2_baseline", gflops=339.6, top1=77.8, note=_BASELINE),
                dict(spatial_depth=12, temporal_depth=6, cross_stage=False, aggregate=False)),
        # lr 5e-4 and batch 4 (1200 steps in 15 epochs): 85.0 % against 71.2 % at lr 1e-3 and batch 8 in
        # the 15-epoch screens of docs/benchmarks/temporal_truth.md; STAT's conv stem and train crops from a
        # short side of 1-1.25x the crop (module docstring, "stem")
        Variant(ModelConfig(name="cst_nano", num_frames=16, img_size=64, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                            test_views="2x1", sampling="uniform:16", min_input=(4, 32),
                            recipe={**NANO_RECIPE_FULL_FRAME, "lr": 5e-4, "batch_size": 4}),
                dict(patch_size=8, tubelet_size=2, spatial_depth=4, temporal_depth=2, embed_dim=192, num_heads=3,
                     drop_path_rate=0.0, time_embed_std=0.5, global_pool="cls_moments",
                     stem=((16, 3, (2, 2, 2)), (32, 3, (1, 2, 2)), (192, 3, (1, 2, 2))))),
    ],
)  # fmt: skip
