"""SCT: Shifted Chunk Transformer.

Zha, Zhu, Lv, Yang, Liu. "Shifted Chunk Transformer for Spatio-Temporal Representational Learning",
NeurIPS 2021. No public code exists; everything below follows the paper's text, and where it is
silent the choice is written here.

The model (paper Fig. 1), per frame and then per clip:

* Tiny patches: ``4 x 4 x 3 = 48`` values, one linear embedding ``E`` to ``D`` (Eq. 1).
* Frame encoder, ``N = 4`` blocks. Block ``b`` at width ``dims[b]``:

  - image local chunk self-attention (Eq. 1-2): the map is cut into ``7 x 7`` image chunks (zero-padded
    at the right/bottom border, the padding masked out as keys), a learnable 1D position embedding of
    length 49 shared by all chunks is added, and ``M`` pre-norm transformer layers run inside every chunk
    with weights shared across chunks;
  - one image LSH attention layer over all tokens of the frame (Eq. 3; :mod:`kinetoscope.layers.lsh_attention`);
  - linear pooling (Eq. 4): each ``2 x 2`` group of tokens is concatenated in the paper's order
    ``s(2i-1,2j-1), s(2i-1,2j), s(2i,2j-1), s(2i,2j)`` and projected by ``E_t`` (``4 dims[b] -> dims[b+1]``);
  - shifted MSA (Eq. 5-7): a [CLS] token per frame; queries and values from frame ``t``, keys from frame
    ``t - shift`` at the same position, cyclic (frame 0 takes its keys from frame ``T - shift``).

* Clip encoder (Eq. 8): the frames' [CLS] features -> ``E'`` to ``D' = 192`` -> a clip [CLS] and a
  learnable frame position embedding (``T + 1``) -> ``M' = 4`` pre-norm layers -> LayerNorm -> dropout ->
  linear classifier.

Choices where the paper is silent
---------------------------------
* **Stage widths** (``dims``). Table 3 gives ``D``, the MLP size (``4 D``), ``M`` and the heads, but not how
  the width evolves over the four blocks, and the literal reading (every linear pooling halves the
  concatenation, ``4c -> 2c``, so the width doubles four times) cannot meet the paper's own numbers: SCT-S
  would have 96 -> 1536 channels, ~90 M parameters and ~8.6 GMACs per frame instead of 18.72 M and
  88.18 / 24 = 3.67. No single width rule in ``D`` fits all three variants either: S and L have the same
  ``M`` and heads and ``D`` doubles, yet the parameters grow 3.2x (not 4x) and the GMACs 3.9x, and SCT-M's
  two extra chunk layers per block add 4.1 M parameters but only 0.25 GMACs per frame. We keep the
  paper's structure exactly (four blocks, each with ``M`` chunk layers, one LSH layer, one linear
  pooling and one shifted MSA layer; the last pooling halves the concatenation as Eq. 4 says) and choose
  the widths after the first pooling per variant, as Swin and MViT list theirs; each is a multiple of
  every head count that uses it:

  =======  ===========================  ===================  =====================
  variant  dims (b0 .. b3, after b3)    params M, ours/paper  GMACs/view, ours/paper
  =======  ===========================  ===================  =====================
  sct_s    96, 144, 144, 312, 624       18.51 / 18.72         87.97 / 88.18
  sct_m    128, 128, 128, 416, 832      33.53 / 33.48         164.58 / 162.90
  sct_l    192, 288, 288, 576, 1152     60.50 / 59.89         344.84 / 342.58
  =======  ===========================  ===================  =====================

  Arithmetic (SCT-S, per frame at 224, linear layers only, ``c^2`` per token for ``c x c`` weights):
  block 0 runs 3136 tokens at 96: ``3136 * (4 * 12 + 11) * 96^2 = 1.71 G`` (chunk layers ``12 c^2``, the
  shared-QK LSH layer ``11 c^2``); blocks 1-3 at 144, 144, 312 on 784, 196, 49 tokens add 0.96, 0.24 and
  0.28 G; the four shifted MSA layers (``12 c^2`` on ``1 + N/4`` tokens) 0.38 G; poolings and the
  embedding 0.09 G: 3.67 G x 24 frames = 87.97 G (the clip encoder on 25 tokens adds 0.01 G). Of the
  18.51 M parameters the last block holds 11.4 M (chunk and LSH layers at 312: 5.8 M; its shifted layer
  on 4 x 4 + 1 tokens at 624: 4.7 M) for 0.37 G per frame: parameters that cost little compute, which is
  what the paper's ratio of 18.72 M to 3.67 G asks for. The clip encoder holds 1.8 M, the head 0.08 M.
  The widths of SCT-M and SCT-L were found the same way (a grid over multiples of ``D / 4``, keeping
  ``dims[1] == dims[2]``, the closest match in both numbers). SCT-M's four blocks at 128 except the last
  (416) are forced by its cheap extra chunk layers: with ``M = 6`` in block 0 alone, 3136 tokens at 128
  already cost 4.3 of its 6.8 GMACs per frame.
* **MLP**: 4x the width of its layer everywhere (Table 3's MLP size is ``4 D``, the first block's width).
* **FLOP convention**: SCT's ViT rows in Table 4 are reproduced exactly by multiply-adds of the linear
  layers only (24 x 16.9 G = 405.06 for ViT-B/16), so its GFLOPs are compared with ``gmacs_no_attn``.
* **Position embedding**: Eq. 1's shared 49-long embedding is added at the start of every block's chunk
  attention (each block's chunks get their own, at that block's width).
* **Residuals**: Eq. 7 writes the shifted MSA without the skip around the attention; we keep the usual
  pre-norm residual ``x + MSA(LN(x))`` as in Eq. 2, 3 and 8.
* **Frame [CLS]**: one learnable token enters the first shifted MSA; it is carried to the next blocks and
  projected to the new width by a linear layer at each pooling (as PiT does for its class token).
* **Shifted keys**: ``k_t = (LN(x_{t-s}) W_K)`` equals the key projection of the shifted frame, so the
  three projections are one ``qkv`` linear and the keys are rolled along time afterwards.
* **LSH**: bucket size 64 (Reformer's default; 49 buckets at 56 x 56), 4 hash rounds, shared-QK, rotations
  shared by heads; fresh per forward in training, fixed by ``seed`` in eval. At 7 x 7 (block 3) there is
  one bucket and one chunk, i.e. exact full attention.
* **Linear pooling** has no normalisation (Eq. 4); maps with an odd side are zero-padded first.
* **Init**: trunc-normal(0.02) as ViT/Swin for the layers inside residual branches, but fan-in scaled
  (``std = 1 / sqrt(fan_in)``) for the linear layers on the main path that no norm surrounds: ``E``, the
  poolings ``E_t``, the [CLS] projections and ``E'``. With 0.02 each of them shrinks the signal (``E`` by
  0.14x) and, trained from scratch, the features collapsed to a constant within a dozen AdamW steps:
  ``sct_nano`` could not fit 8 clips (loss stuck at the label entropy); with the fan-in scale it fits them
  in 20 steps, as a ViT patch-embedding conv's default init keeps the variance.
* **Clip position embedding** (``clip_pos_embed_std``, default 0.02 as ViT): the frame features reach the
  clip encoder through the fan-in ``E'`` at unit scale, so a 0.02 embedding is ~2 % of each token and
  the frame order (in the frame encoder only the shifted MSA's attention weights carry it, nearly
  uniform at init) is close to invisible: trained from scratch on a clip-order toy (the two clips of a
  pair hold the same frames, forward and reversed; tests/test_temporal_learning.py) ``sct_nano`` stayed
  at ln 2 for 40 AdamW steps at lr 1e-4 or 3e-4; with 0.2 (or 0.5) it fitted the toy in 30 steps.
  ``sct_nano`` uses 0.2 and lr 3e-4 (at 1e-3 the nanos' features collapse to a constant in the first
  steps); the paper variants keep 0.02.
* **Shifted MSA query/key init** (``shifted_qk_init``, default ``"trunc_normal"`` as above): Eq. 6 lets
  frame ``t - 1`` into frame ``t`` only through the attention weights (values come from frame ``t``). At
  0.02 and the nano's widths (48-192) the logits are 10-50x smaller than at the fan-in scale and the
  weights are uniform to a few 1e-4, so the temporal pathway starts switched off: changing frame 0
  moves frame 1's features by 4e-4 of frame 0's own change (57x more with ``"fan_in"``, which draws the
  query and key projections at ``1 / sqrt(fan_in)``; tests/test_sct.py). ``sct_nano`` uses ``"fan_in"``.
* **Tubelets** (``tubelet_size``, default 1 = the paper's ``p x p x 3`` patches of one frame): ``E``
  embeds ``tubelet x p x p x 3`` values and the frame encoder runs on ``T / tubelet`` token frames.
  ``sct_nano`` uses 2, which also halves its cost.
* **From scratch at nano size** (``kinetoscope synth``'s eight classes, an in-memory copy of the
  training loop, 1 thread, lr 3e-4 unless said): the registered nano before these two knobs stayed at
  ln 8 (12.5 % after 3 epochs through the CLI, flat for 6 epochs in the loop). Probing the initialised
  model on 32 clips: the frame [CLS] varies across clips by 0.002-0.03 per element against 0.3 for the
  tokens (it gathers content only through 0.02-init attention), and the clip encoder's output varies by
  1 % of its mean. Flat for 6 epochs: an absolute position embedding on the tiny patches, tubelets of 2,
  tubelets with the clip encoder fed the [CLS] plus the tokens' average. The first change that moved it
  was the fan-in query/key init of the shifted MSA (loss 1.93 after 6 epochs, left/right learned); with
  tubelets of 2 as well, 47.5 % after 15 epochs (three of the four translation classes at 90-100 %,
  grow/shrink and rotation not); lr 5e-4 27.5 %, lr 1e-3 flat, full attention in place of LSH
  (``lsh=False``) 26.2 %, fan-in init in the clip encoder as well slower. The clip encoder was the next
  bottleneck: at ``D' = 64`` and one layer the features the head reads varied across clips by 1 % of
  their size; at the paper's ``D' = 192`` with two layers (``sct_nano`` now) 66.3 / 66.3 / 65.0 % over
  three seeds (128 wide and 2 deep: 56.2 / 32.5 %; the paper's four layers stayed at ln 8 for 7 epochs
  at lr 3e-4). The turn needed more (see "Motion stem"); the CLI row is in docs/benchmarks/temporal_truth.md.
* **Motion stem** (``stem``, not in the paper; default None, ``E``): 3D convolutions ``(out_channels, kernel,
  stride)`` whose strides multiply to ``(tubelet, p, p)`` and whose last layer gives ``dims[0]`` channels: the
  same token grid, each token seeing its neighbours in three frames (:func:`~kinetoscope.layers.conv_stem`,
  as STAT and ``cst_nano``). **Frame feature** (``frame_feature``, not in the paper; default ``"cls"``,
  Eq. 8): ``"cls+tokens"`` feeds the clip encoder each frame's [CLS] plus the mean of its tokens.
  ``sct_nano`` takes both, for the turn: a clockwise turn about the centre differs from a counter-clockwise
  one only in motion that depends on where it happens, and here frames meet only through the shifted MSA's
  attention weights and the clip encoder. On the turn alone (the rotation pair of ``kinetoscope synth``,
  80 training clips, 150 steps; chance ln 2 = 0.69) the nano with ``E`` stayed at 0.69 (also for 450
  steps, with 2-pixel patches, an absolute position embedding, or keys *and* values from frame ``t - 1``),
  and so did the clip encoder fed an 8 x 8 grey image of each frame in place of the frame encoder (90 %
  only after 600 steps): the frames must reach it carrying the motion. On the eight classes (in-memory
  copy of the training loop, 15 epochs, lr 3e-4, batch 8; seeds 0 / 1): ``E`` 66.3 / 66.3 %; STAT's
  two-conv stem 68.8 %; with ``"cls+tokens"`` 76.2 %; three convs (16, 32, 32 channels, strides
  ``(2, 2, 2), 1, (1, 2, 2)``) with ``"cls+tokens"`` **92.5 / 80.0 %** (``sct_nano``); the same with an
  absolute position embedding on the patch grid 87.5 / 82.5 %, and with the [CLS] alone 45.0 %; its
  stem 24 and 48 wide 83.7 %; lr 6e-4 or batch 4 lower. Its training loss still ended at 0.2-0.7 with
  gradient norms of 5-20: clipped at norm 1 (``sct_nano``'s recipe, as ``dualformer_nano``'s) seed 1 went
  from 80.0 to **97.5 %** (loss 0.14; lr 5e-4 with clipping 83.7 %). Over three seeds the registered nano
  gives 85.0 / 97.5 / 87.5 % (seeds 0 / 1 / 2; batch 4 with clipping 85.0 / - / 87.5 %): SCT is still the
  slowest of the five nanos to fit (loss 0.14-0.32 at the end) and seeds differ by 10 points. Its recipe
  draws the train short side from 1-1.25x the crop (``train_short_side``, as ``dualformer_nano``; the
  default 1.14-1.43x shows the shapes larger than the full-frame validation does): seeds 0 / 2 went from
  85.0 / 87.5 % to 93.8 / 95.0 % (loss 0.15 / 0.10 at the end). It hashes in the family's 4 rounds
  (``n_hashes``; the nano had 2): with 4, seeds 0 / 2 reached 97.5 / 96.2 % (loss 0.04 / 0.08 at the
  end). Our reading: training draws fresh rotations every step, and with 2 rounds the attention a token
  gets changes more from one step to the next. Full attention (``lsh=False``) gave 95.0 % (seed 0, loss 0.09).
  At evaluation the rotations are fixed by ``seed``: six seeds of them gave the trained nano the same
  top-1.
* **Head**: ``c = MLP(LN(b))`` with "dropout for the second last layer" is read as ViT's fine-tuning head,
  LayerNorm -> dropout -> linear.
* **Clip encoder cost**: the appendix's "two fewer clip layers save 1.05 M / 2.04 G" cannot hold for a
  192-wide layer on the ``T + 1`` tokens of Eq. 8 (0.44 M, 0.011 G each); we follow Eq. 8 and Table 3.
* **Ablations** (Table 5 and Sec. 4): ``shift_frames=0`` is the standard MSA, ``shift_layers`` the number
  of shifted MSA layers per block, ``clip_depth`` the clip encoder's layers, ``lsh=False`` replaces the
  hashing by full attention with the same projections.
* **Paper numbers**: params and GMACs (linear layers only) are held to Table 3 within 5 %: a
  reconstruction whose per-block widths are our choice (see "Stage widths").
* **Other clip lengths**: the frame rows of the clip encoder's position embedding are resampled
  linearly, its [CLS] row is kept. A 1-frame clip runs the frame encoder on one image (the shifted MSA's
  keys come from the frame itself), which is how image pretraining (ImageNet-21K in the paper) trains it.
* **Features and head**: ``forward_features`` returns the frame encoder's tokens ``(B, T, 1 + h w, C)``
  ([CLS] first); the clip encoder (Eq. 8) over the frames' [CLS] is the head's pooling, as timm's
  attention-pooling heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from ..layers import (
    Attention,
    LSHAttention,
    PatchEmbed3d,
    PreNormBlock,
    attention,
    check_divisible,
    check_video_input,
    drop_path_schedule,
    geometry_buffer,
    pad_to_multiple,
    resample_1d,
    window_padding_bias,
    window_partition,
    window_reverse,
)
from ._base import FeatureTaps, VideoModel, init_weights_trunc_normal
from ._config import INCEPTION_MEAN, INCEPTION_STD, NANO_RECIPE_FULL_FRAME, ModelConfig, PaperReference
from ._registry import Variant, register_variants

CITATION = (
    "Zha, Zhu, Lv, Yang, Liu, Shifted Chunk Transformer for Spatio-Temporal Representational Learning, NeurIPS 2021"
)


class ShiftedAttention(Attention):
    """Shifted MSA (Eq. 6-7) over ``(B, T, N, C)``: keys of frame ``t`` come from frame ``t - shift``, cyclic.

    ``shift=0`` is standard per-frame MSA (Table 5's "#Shifted frame 0").
    """

    def __init__(self, dim: int, num_heads: int, shift: int = 1, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        B, T, N, C = x.shape
        q, k, v = self.split_heads(x.reshape(B * T, N, C))  # each (B*T, h, N, d)
        if self.shift:
            k = k.unflatten(0, (B, T)).roll(self.shift, dims=1).flatten(0, 1)  # k[t] <- k[t - shift]
        drop = self.attn_drop if self.training else 0.0
        out, _ = attention(q, k, v, None, drop, False, self.scale)
        return self.merge_heads(out).reshape(B, T, N, C)


class ImageChunkAttention(nn.Module):
    """``M`` transformer layers inside every ``chunk x chunk`` image chunk, weights shared (Eq. 1-2).

    ``(B, H, W, C) -> (B, H, W, C)``; sizes the chunk does not divide are zero-padded and the padding
    is masked out as keys.
    """

    no_weight_decay_names = ("pos_embed",)

    def __init__(
        self, dim: int, *, depth: int, num_heads: int, chunk: int, mlp_ratio: float, dpr: Sequence[float]
    ) -> None:
        super().__init__()
        self.chunk = chunk
        self.pos_embed = nn.Parameter(torch.zeros(1, chunk * chunk, dim))  # shared by all chunks (Eq. 1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            PreNormBlock(dim, Attention(dim, num_heads), mlp_ratio=mlp_ratio, drop_path=dpr[i]) for i in range(depth)
        )

    def forward(self, x: Tensor, run_blocks) -> Tensor:
        B, H, W, C = x.shape
        c = self.chunk
        x = pad_to_multiple(x, (c, c), (1, 2)).unsqueeze(1)  # (B, 1, H', W', C)
        size = x.shape[1:4]
        chunks = window_partition(x, (1, c, c)) + self.pos_embed  # (B*nC, L, C)
        # additive key mask of zero-padded border chunks, (nC, 1, 1, L) -> (B*nC, 1, 1, L); None if unpadded
        bias = geometry_buffer(self, f"pad_bias_{H}x{W}", lambda: window_padding_bias((1, H, W), (1, c, c)), x.device)
        chunks = run_blocks(self.blocks, chunks, bias.repeat(B, 1, 1, 1) if bias is not None else None)
        return window_reverse(chunks, (1, c, c), size)[:, 0, :H, :W]


class LinearPooling(nn.Module):
    """Eq. 4: concatenate each 2x2 group (``(B, H, W, C) -> (B, H/2, W/2, 4C)``), then ``E_t: 4C -> C_out``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, (2, 2), (1, 2))
        return self.reduction(rearrange(x, "b (h p1) (w p2) c -> b h w (p1 p2 c)", p1=2, p2=2))


class FrameEncoderBlock(nn.Module):
    """Image chunk self-attention (M chunk layers, image LSH layer, linear pooling), then shifted MSA."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        *,
        depth: int,
        heads: Sequence[int],
        chunk: int,
        mlp_ratio: float,
        dpr: Sequence[float],
        shift_frames: int,
        shift_layers: int,
        bucket_size: int,
        n_hashes: int,
        lsh: bool,
        seed: int,
        cls_in_dim: int | None,
    ) -> None:
        super().__init__()
        chunk_heads, lsh_heads, shift_heads = heads
        self.chunk_attn = ImageChunkAttention(
            dim, depth=depth, num_heads=chunk_heads, chunk=chunk, mlp_ratio=mlp_ratio, dpr=dpr[:depth]
        )
        lsh_attn = LSHAttention(dim, lsh_heads, bucket_size, n_hashes, seed=seed, full_attention=not lsh)
        self.lsh = PreNormBlock(dim, lsh_attn, mlp_ratio=mlp_ratio, drop_path=dpr[depth])
        self.pool = LinearPooling(dim, out_dim)
        # the frame [CLS] of the previous block, projected to this width (None: block 0 brings its own)
        self.cls_proj = nn.Linear(cls_in_dim, out_dim) if cls_in_dim is not None else None
        self.shifted = nn.ModuleList(
            PreNormBlock(
                out_dim, ShiftedAttention(out_dim, shift_heads, shift_frames), mlp_ratio=mlp_ratio,
                drop_path=dpr[depth + 1 + i],
            )
            for i in range(shift_layers)
        )  # fmt: skip

    def forward(self, x: Tensor, cls: Tensor, num_frames: int, run_blocks) -> tuple[Tensor, Tensor]:
        """``x (B*T, H, W, C)``, ``cls (B*T or 1, C_cls)`` -> ``(B*T, H/2, W/2, C_out)``, ``(B*T, C_out)``."""
        x = self.chunk_attn(x, run_blocks)
        BT, H, W, C = x.shape
        x = run_blocks([self.lsh], x.reshape(BT, H * W, C)).reshape(BT, H, W, C)
        x = self.pool(x)
        BT, H, W, C = x.shape
        if self.cls_proj is not None:
            cls = self.cls_proj(cls)
        tokens = torch.cat([cls.expand(BT, -1)[:, None], x.reshape(BT, H * W, C)], dim=1)  # Eq. 5
        tokens = run_blocks(self.shifted, tokens.unflatten(0, (BT // num_frames, num_frames))).flatten(0, 1)
        return tokens[:, 1:].reshape(BT, H, W, C), tokens[:, 0]


class ShiftedChunkTransformer(VideoModel):
    """SCT for ``(B, 3, T, H, W)`` clips; any ``T >= 1`` and any ``H, W`` (zero-padded to whole chunks).

    ``dims``: the token width entering each block and after the last pooling (5 values);
    ``heads``: (chunk attention, LSH, shifted MSA, clip encoder) as Table 3.
    """

    no_weight_decay_names = ("cls_token", "clip_cls_token", "clip_pos_embed")

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 24,
        img_size: int = 224,
        in_chans: int = 3,
        patch_size: int = 4,
        tubelet_size: int = 1,
        chunk_size: int = 7,
        dims: Sequence[int] = (96, 144, 144, 312, 624),
        depth: int = 4,
        heads: Sequence[int] = (4, 6, 8, 8),
        mlp_ratio: float = 4.0,
        clip_dim: int = 192,
        clip_depth: int = 4,
        clip_mlp_ratio: float = 4.0,
        clip_pos_embed_std: float = 0.02,
        shifted_qk_init: Literal["trunc_normal", "fan_in"] = "trunc_normal",
        shift_frames: int = 1,
        shift_layers: int = 1,
        stem: Sequence[tuple[int, int | Sequence[int], int | Sequence[int]]] | None = None,
        frame_feature: Literal["cls", "cls+tokens"] = "cls",
        lsh: bool = True,
        bucket_size: int = 64,
        n_hashes: int = 4,
        lsh_seed: int = 0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if len(dims) != 5 or len(heads) != 4:
            raise ValueError(f"dims needs 5 widths (4 blocks + after the last pooling), heads 4; got {dims}, {heads}")
        if shift_layers < 1 or shift_frames < 0:
            raise ValueError(f"shift_layers must be >= 1 and shift_frames >= 0, got {shift_layers}, {shift_frames}")
        self.in_chans, self.num_frames = in_chans, num_frames
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        check_divisible((num_frames,), (tubelet_size,))  # the frames it is built for must make whole tubelets
        if frame_feature not in ("cls", "cls+tokens"):
            raise ValueError(f"frame_feature must be 'cls' or 'cls+tokens', got {frame_feature!r}")
        self.frame_feature = frame_feature
        if stem is None:  # E (Eq. 1) on flattened tiny patches
            self.patch_embed = nn.Linear(in_chans * tubelet_size * patch_size * patch_size, dims[0])
        else:  # module docstring, "Motion stem": the same token grid from overlapping 3D convolutions
            patch = (tubelet_size, patch_size, patch_size)
            self.patch_embed = PatchEmbed3d(patch, in_chans, dims[0], pad=False, convs=stem)
        per_block = depth + 1 + shift_layers
        dpr = drop_path_schedule(drop_path_rate, 4 * per_block + clip_depth)
        self.cls_token = nn.Parameter(torch.zeros(1, dims[1]))
        self.blocks = nn.ModuleList(
            FrameEncoderBlock(
                dims[b], dims[b + 1], depth=depth, heads=heads[:3], chunk=chunk_size, mlp_ratio=mlp_ratio,
                dpr=dpr[b * per_block : (b + 1) * per_block], shift_frames=shift_frames, shift_layers=shift_layers,
                bucket_size=bucket_size, n_hashes=n_hashes, lsh=lsh, seed=lsh_seed + b,
                cls_in_dim=dims[b] if b > 0 else None,
            )
            for b in range(4)
        )  # fmt: skip
        self.num_intermediates = len(self.blocks)
        self.frame_embed = nn.Linear(dims[4], clip_dim)  # E' (Eq. 8)
        self.clip_cls_token = nn.Parameter(torch.zeros(1, 1, clip_dim))
        self.clip_pos_embed = nn.Parameter(torch.zeros(1, max(num_frames // tubelet_size, 1) + 1, clip_dim))
        self.clip_blocks = nn.ModuleList(
            PreNormBlock(
                clip_dim, Attention(clip_dim, heads[3]), mlp_ratio=clip_mlp_ratio, drop_path=dpr[4 * per_block + i]
            )
            for i in range(clip_depth)
        )
        self.norm = nn.LayerNorm(clip_dim)
        self.init_head(clip_dim, num_classes, head_drop_rate)
        for p in (self.cls_token, self.clip_cls_token):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.trunc_normal_(self.clip_pos_embed, std=clip_pos_embed_std)  # module docstring, "Init"
        self.apply(init_weights_trunc_normal)
        # un-normalised main-path linears keep the signal's variance (module docstring, "Init")
        main_path = [self.frame_embed] + ([self.patch_embed] if stem is None else [])
        for blk in self.blocks:
            main_path += [blk.pool.reduction] + ([blk.cls_proj] if blk.cls_proj is not None else [])
        for layer in main_path:
            nn.init.trunc_normal_(layer.weight, std=layer.in_features**-0.5)
        if shifted_qk_init not in ("trunc_normal", "fan_in"):
            raise ValueError(f"shifted_qk_init must be 'trunc_normal' or 'fan_in', got {shifted_qk_init!r}")
        if shifted_qk_init == "fan_in":  # module docstring, "Shifted MSA query/key init"
            for blk in self.blocks:
                for layer in blk.shifted:
                    layer.attn.init_qk_fan_in()

    def embed_patches(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W) -> (B*T', H/p, W/p, D)``: flattened ``tubelet x p x p x C`` tiny patches through
        ``E`` (``T' = T / tubelet``; with ``tubelet_size=1``, the paper's, a patch is ``p x p x C`` of one frame),
        or the conv stem on the same grid."""
        p, pt = self.patch_size, self.tubelet_size
        check_divisible(x.shape[2:], (pt, 1, 1))  # frames are not padded: a zero frame would be a motion
        x = pad_to_multiple(x, (p, p), (3, 4))
        if isinstance(self.patch_embed, PatchEmbed3d):
            return rearrange(self.patch_embed(x), "b c t h w -> (b t) h w c")
        return self.patch_embed(rearrange(x, "b c (t pt) (h p1) (w p2) -> (b t) h w (pt p1 p2 c)", p1=p, p2=p, pt=pt))

    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """Frame encoder: block outputs; the features are the last block's ``(B, T, 1 + h w, dims[4])``,
        every frame's [CLS] first."""
        check_video_input(x, self.in_chans, type(self).__name__)
        T = x.shape[2] // self.tubelet_size
        x = self.embed_patches(x)  # (B*T, H/4, W/4, D)
        cls = self.cls_token  # (1, C), broadcast to every frame by the first block
        for b, blk in enumerate(self.blocks):
            x, cls = blk(x, cls, T, self.run_blocks)
            if (x := self.tap(taps, b, x, "(b t) h w c", t=T)) is None:
                return None
        tokens = torch.cat([cls[:, None], x.flatten(1, 2)], dim=1)  # (B*T, 1 + h*w, C)
        return rearrange(tokens, "(b t) n c -> b t n c", t=T)

    def pool(self, x: Tensor) -> Tensor:
        """Clip encoder (Eq. 8) over the frames' [CLS] (plus their tokens' mean with ``frame_feature="cls+tokens"``):
        ``(B, T, 1 + h w, C) -> (B, clip_dim)``."""
        frame = x[:, :, 0] if self.frame_feature == "cls" else x[:, :, 0] + x[:, :, 1:].mean(2)
        frames = self.frame_embed(frame)  # (B, T, D')
        B, T, _ = frames.shape
        tokens = torch.cat([self.clip_cls_token.expand(B, -1, -1), frames], dim=1)
        tokens = tokens + resample_1d(self.clip_pos_embed, T, num_prefix_tokens=1)  # clip [CLS] row kept
        tokens = self.run_blocks(self.clip_blocks, tokens)
        return self.norm(tokens[:, 0])

    @property
    def frames_per_image(self) -> int:
        return self.tubelet_size

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key == "clip_pos_embed":  # (1, 1 + T, D'): the clip [CLS] row kept, the frame rows resampled
            return resample_1d(value, target.shape[1] - 1, num_prefix_tokens=1)
        return super().resample_tensor(key, value, target)

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed|cls_token",
            blocks=[(r"^blocks\.(\d+)", None)],
            clip=[
                (r"^frame_embed|clip_cls_token|clip_pos_embed", (0,)),
                (r"^clip_blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )


# ------------------------------------------------------------------------------------------ variants
def _k400(name: str, *, params_m: float, gflops: float, top1: float) -> ModelConfig:
    """A Table 3 variant: 24 frames at 224, 4 clips x 3 crops, ImageNet-21K pretraining; GFLOPs count linear layers
    only; params and GFLOPs held to 5 % (a reconstruction, module docstring)."""
    return ModelConfig(
        name=name, num_frames=24, img_size=224, mean=INCEPTION_MEAN, std=INCEPTION_STD, test_views="4x3",
        sampling="dense:24x6", min_input=(4, 32),
        paper=PaperReference(
            params_m=params_m, gflops=gflops, flop_convention="mac_no_attn", params_head_classes=400, views="4x3",
            top1=top1, dataset="Kinetics-400", pretrain="IN-21K", citation=CITATION, tolerance=0.05,
            note="GFLOPs: linear layers only, attention matmuls not counted",
        ),
    )  # fmt: skip


# dims: widths entering blocks 0-3 and after the last pooling ("Stage widths"); depth M; heads (chunk, LSH,
# shifted MSA, clip encoder) as Table 3
register_variants(
    ShiftedChunkTransformer,
    [
        Variant(_k400("sct_s", params_m=18.72, gflops=88.18, top1=78.4),
                dict(dims=(96, 144, 144, 312, 624), depth=4, heads=(4, 6, 8, 8))),
        Variant(_k400("sct_m", params_m=33.48, gflops=162.90, top1=81.3),
                dict(dims=(128, 128, 128, 416, 832), depth=6, heads=(4, 8, 8, 8))),
        Variant(_k400("sct_l", params_m=59.89, gflops=342.58, top1=83.0),
                dict(dims=(192, 288, 288, 576, 1152), depth=4, heads=(4, 6, 8, 8))),
        Variant(ModelConfig(name="sct_nano", num_frames=16, img_size=64, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                            test_views="2x1", sampling="uniform:16", min_input=(4, 32),
                            recipe={**NANO_RECIPE_FULL_FRAME, "lr": 3e-4, "clip_grad": 1.0}),
                dict(dims=(32, 48, 64, 96, 192), depth=1, heads=(2, 2, 4, 4), chunk_size=4, clip_dim=192, clip_depth=2,
                     bucket_size=16, drop_path_rate=0.0, head_drop_rate=0.0, clip_pos_embed_std=0.2,
                     tubelet_size=2, shifted_qk_init="fan_in", frame_feature="cls+tokens",
                     stem=((16, 3, (2, 2, 2)), (32, 3, 1), (32, 3, (1, 2, 2))))),
    ],
)  # fmt: skip
