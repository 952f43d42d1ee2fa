"""DualFormer: local-global stratified transformer for video recognition.

Liang, Zhou, Zimmermann, Yan. "DualFormer: Local-Global Stratified Transformer for Efficient Video
Recognition", ECCV 2022. Released code: sail-sg/dualformer (mmaction2).

Four stages of a strided-conv pyramid; every "DualFormer block" is two pre-norm sub-blocks, each with
its own MLP:

* LW-MSA (Sec. 3.2): full attention inside non-overlapping 3D windows (8, 7, 7);
* GP-MSA (Sec. 3.3, Eq. 3-5): every token queries a small set of *global priors*, keys/values pooled
  from the whole clip by depthwise 3D convolutions: a fine prior (kernel = stride = resolution /
  (8, 7, 7)) and a factorised coarse prior (depthwise (1,7,7) conv -> BN -> ReLU -> depthwise conv to
  a (4, 4, 4) grid), flattened, concatenated, layer-normalised, then projected to K and V;
* PEG (Sec. 3.4): a depthwise 3x3x3 conv with a residual after the first sub-block of each stage;
* head: LayerNorm, global average pool, dropout 0.5, linear.

The released code, which reproduces the paper's numbers, differs from the paper's text in three
places, and we follow the code:

1. The per-stage depths count sub-blocks: T (2, 2, 10, 4), S/B (2, 2, 18, 2) (the paper's Table 1
   lists DualFormer blocks, half as many).
2. The coarse (4, 4, 4) prior is used in stages 1-2 only (the paper says stages 1-3).
3. Stage 4 uses full global attention (its fine prior has the resolution of the map, so the pooling
   conv and its LayerNorm vanish), where the paper describes an (8, 7, 7) prior.

Choices where neither says:

* Inputs the windows do not divide: the map is zero-padded to window multiples and padded keys are
  masked out of LW-MSA (windows larger than the map shrink to it, as in Swin). Prior kernels are
  ``floor(resolution / prior grid)`` of the built size (at least 1); the remainder the stride does not
  cover is left out of the pooling, as the released code does at its sizes. A larger input gives more
  priors; an input whose maps are smaller than a prior kernel is refused with a ``ValueError`` that
  names the smallest clip the built model takes.
* Ablations as arguments: ``block_kinds`` per stage (``"LG"`` default, ``"LL"``, ``"GG"``; Table 4),
  ``pyramid`` scales (``("fine", "coarse")``; Table 6), ``downsample`` (``"dwconv"`` as released,
  ``"conv"`` a dense conv, ``"avgpool"`` parameter-free; Table 7), ``peg``, ``window``, and
  ``temporal_pool`` (temporal stride of the patch merging per stage; Table 8).
* ``global_pool="moments"`` (not in the paper; ``dualformer_nano`` uses it): the head reads the average
  and the first moments of the last map over the frame (``kinetoscope.models._base.moment_pool``), so
  it can tell a turn about the frame centre from the opposite turn (docs/benchmarks/temporal_truth.md).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import (
    Attention,
    CrossAttention,
    PreNormBlock,
    check_video_input,
    drop_path_schedule,
    geometry_buffer,
    inflate_conv_weight,
    pad_to_multiple,
    to_3tuple,
    window_padding_bias,
    window_partition,
    window_reverse,
)
from ._base import FeatureTaps, VideoModel, check_grid_pool, init_weights_trunc_normal, stage_group_matcher
from ._config import NANO_RECIPE_FULL_FRAME, ModelConfig, PaperReference, ReleasedWeights
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

Downsample = Literal["dwconv", "conv", "avgpool"]
CITATION = "Liang, Zhou, Zimmermann, Yan, DualFormer: Local-Global Stratified Transformer, ECCV 2022"
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- blocks
class LocalWindowAttention(Attention):
    """LW-MSA: MHSA inside non-overlapping 3D windows of a channels-last ``(B, T, H, W, C)`` map."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int] = (8, 7, 7), qkv_bias: bool = True):
        super().__init__(dim, num_heads, qkv_bias)
        self.window = to_3tuple(window)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        B, T, H, W, C = x.shape
        window = tuple(min(w, n) for w, n in zip(self.window, (T, H, W)))
        xp = pad_to_multiple(x, window, dims=(1, 2, 3))  # (B, Tp, Hp, Wp, C)
        size = xp.shape[1:4]
        windows = window_partition(xp, window)  # (B * nW, N, C)
        name = f"pad_bias_{T}x{H}x{W}_{'x'.join(map(str, window))}"
        bias = geometry_buffer(self, name, lambda: window_padding_bias((T, H, W), window), x.device)  # (nW, 1, 1, N)
        if bias is not None:  # mask the zero padding out of the keys
            bias = bias.repeat(B, 1, 1, 1)  # (B * nW, 1, 1, N)
        out = super().forward(windows, attn_bias=bias)
        return window_reverse(out, window, size)[:, :T, :H, :W]


class GlobalPyramidAttention(nn.Module):
    """GP-MSA: queries from every token, keys/values from the pooled global priors (Eq. 3-5).

    ``fine`` and ``coarse`` are the prior grids (``None`` disables one). A fine grid as large as the
    map makes the fine prior the map itself: full global attention (released stage 4).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        resolution: Sequence[int],
        fine: Sequence[int] | None = (8, 7, 7),
        coarse: Sequence[int] | None = (4, 4, 4),
        downsample: Downsample = "dwconv",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if fine is None and coarse is None:
            raise ValueError("GP-MSA needs at least one prior scale ('fine' or 'coarse')")
        self.attn = CrossAttention(dim, num_heads, qkv_bias)
        self.downsample = downsample
        res = to_3tuple(resolution)
        self.fine_kernel = tuple(max(r // f, 1) for r, f in zip(res, fine)) if fine is not None else None
        self.fine_pool = (
            self._pool(dim, self.fine_kernel) if self.fine_kernel and math.prod(self.fine_kernel) > 1 else None
        )
        self.coarse_grid = to_3tuple(coarse) if coarse is not None else None
        self.coarse_pool = None
        self.coarse_kernels: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        if self.coarse_grid is not None:
            first = (1, min(7, res[1]), min(7, res[2]))
            mid = tuple(r // k for r, k in zip(res, first))
            second = tuple(max(m // c, 1) for m, c in zip(mid, self.coarse_grid))
            self.coarse_kernels = (first, second)
            self.coarse_pool = nn.Sequential(
                self._pool(dim, first), nn.BatchNorm3d(dim), nn.ReLU(inplace=True), self._pool(dim, second)
            )
        # the fine prior of full resolution is the map itself: no normalisation of the keys (released code)
        self.norm = nn.LayerNorm(dim) if (self.fine_pool is not None or self.coarse_pool is not None) else None

    def _pool(self, dim: int, kernel: Sequence[int]) -> nn.Module:
        if self.downsample == "dwconv":
            return nn.Conv3d(dim, dim, kernel, kernel, groups=dim)
        if self.downsample == "conv":
            return nn.Conv3d(dim, dim, kernel, kernel)
        if self.downsample == "avgpool":
            return nn.AvgPool3d(kernel, kernel)
        raise ValueError(f"downsample must be 'dwconv', 'conv' or 'avgpool', got {self.downsample!r}")

    @property
    def min_map(self) -> tuple[int, int, int]:
        """The smallest ``(t, h, w)`` map the prior poolings accept (their kernels are sized at build)."""
        need = [1, 1, 1]
        if self.fine_pool is not None:
            need = [max(n, k) for n, k in zip(need, self.fine_kernel)]
        if self.coarse_kernels is not None:
            first, second = self.coarse_kernels
            need = [max(n, a * b) for n, a, b in zip(need, first, second)]
        return tuple(need)  # type: ignore[return-value]

    def priors(self, x: Tensor) -> Tensor:
        """``(B, T, H, W, C) -> (B, G, C)``: fine priors then coarse priors, flattened."""
        grid = x.permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        parts = []
        if self.fine_kernel is not None:
            fine = self.fine_pool(grid) if self.fine_pool is not None else grid
            parts.append(fine.flatten(2).transpose(1, 2))  # (B, G_fine, C)
        if self.coarse_pool is not None:
            parts.append(self.coarse_pool(grid).flatten(2).transpose(1, 2))  # (B, G_coarse, C)
        priors = torch.cat(parts, dim=1)
        return self.norm(priors) if self.norm is not None else priors

    def forward(self, x: Tensor) -> Tensor:
        B, T, H, W, C = x.shape
        out = self.attn(x.reshape(B, T * H * W, C), self.priors(x))  # (B, THW, C)
        return out.view(B, T, H, W, C)


class PositionEncodingGenerator(nn.Module):
    """PEG: ``x + DWConv3d_3x3x3(x)`` on ``(B, T, H, W, C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)


class PatchEmbed(nn.Module):
    """Strided Conv3d (kernel = stride) + LayerNorm: ``(B, C, T, H, W) -> (B, T', H', W', D)``."""

    def __init__(self, in_chans: int, dim: int, stride: Sequence[int]) -> None:
        super().__init__()
        self.stride = to_3tuple(stride)
        self.proj = nn.Conv3d(in_chans, dim, self.stride, self.stride)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, self.stride, dims=(2, 3, 4))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class DualFormerStage(nn.Module):
    """Patch merging, then ``depth`` pre-norm sub-blocks alternating as ``block_kind`` says, and the PEG."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        stride: Sequence[int],
        resolution: Sequence[int],
        block_kind: str,
        fine: Sequence[int] | None,
        coarse: Sequence[int] | None,
        window: Sequence[int],
        downsample: Downsample,
        peg: bool,
        mlp_ratio: float,
        drop_paths: Sequence[float],
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if len(block_kind) != 2 or set(block_kind) - {"L", "G"}:
            raise ValueError(f"block kind must be two letters of 'L'/'G' (e.g. 'LG'), got {block_kind!r}")
        self.patch_embed = PatchEmbed(in_dim, dim, stride)
        blocks = []
        for i in range(depth):
            if block_kind[i % 2] == "L":
                attn: nn.Module = LocalWindowAttention(dim, num_heads, window, qkv_bias)
            else:
                attn = GlobalPyramidAttention(
                    dim, num_heads, resolution=resolution, fine=fine, coarse=coarse, downsample=downsample,
                    qkv_bias=qkv_bias,
                )  # fmt: skip
            blocks.append(PreNormBlock(dim, attn, mlp_ratio=mlp_ratio, drop_path=drop_paths[i]))
        self.blocks = nn.ModuleList(blocks)
        self.peg = PositionEncodingGenerator(dim) if peg else None

    @property
    def min_map(self) -> tuple[int, int, int]:
        need = [1, 1, 1]
        for blk in self.blocks:
            if isinstance(blk.attn, GlobalPyramidAttention):
                need = [max(n, m) for n, m in zip(need, blk.attn.min_map)]
        return tuple(need)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------- model
class DualFormer(VideoModel):
    """DualFormer on ``(B, 3, T, H, W)`` clips (see the module docstring)."""

    global_pool = "avg"  # over (T', H', W')
    intermediate_norm = "last"

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 32,
        img_size: int = 224,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 10, 4),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        patch_size: Sequence[int] = (2, 4, 4),
        temporal_pool: Sequence[int] = (1, 1, 1),
        block_kinds: Sequence[str] | str = "LG",
        pyramid: Sequence[str] = ("fine", "coarse"),
        fine_size: Sequence[Sequence[int] | None] | None = None,
        coarse_stages: Sequence[int] = (0, 1),
        coarse_size: Sequence[int] = (4, 4, 4),
        window: Sequence[int] = (8, 7, 7),
        downsample: Downsample = "dwconv",
        peg: bool = True,
        mlp_ratio: float = 4.0,
        global_pool: Literal["avg", "moments"] = "avg",
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.global_pool = check_grid_pool(global_pool)
        self.in_chans = in_chans
        n = len(depths)
        kinds = [block_kinds] * n if isinstance(block_kinds, str) else list(block_kinds)
        unknown = set(pyramid) - {"fine", "coarse"}
        if unknown:
            raise ValueError(f"pyramid scales are 'fine' and 'coarse', got {sorted(unknown)}")
        patch = to_3tuple(patch_size)
        res = [num_frames // patch[0], img_size // patch[1], img_size // patch[2]]
        self.strides = [patch] + [(tp, 2, 2) for tp in temporal_pool]
        if fine_size is None:  # released: (8,7,7) priors in stages 1-3, the full map in stage 4
            fine_size = [tuple(window)] * (n - 1) + [None]
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        in_dim = in_chans
        for i in range(n):
            if i > 0:
                res = [max(r // s, 1) for r, s in zip(res, self.strides[i])]
            fine = fine_size[i] if fine_size[i] is not None else tuple(res)
            self.stages.append(
                DualFormerStage(
                    in_dim, embed_dims[i], depth=depths[i], num_heads=num_heads[i], stride=self.strides[i],
                    resolution=res, block_kind=kinds[i], fine=fine if "fine" in pyramid else None,
                    coarse=coarse_size if ("coarse" in pyramid and i in coarse_stages) else None, window=window,
                    downsample=downsample, peg=peg, mlp_ratio=mlp_ratio,
                    drop_paths=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                )
            )  # fmt: skip
            in_dim = embed_dims[i]
        self.num_intermediates = n
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.init_head(embed_dims[-1], num_classes, head_drop_rate)
        self.apply(init_weights_trunc_normal)

    def stage_maps(self, size: Sequence[int]) -> list[tuple[int, ...]]:
        """Token map ``(t, h, w)`` of every stage for an input of ``size = (T, H, W)`` (padded merging)."""
        maps, cur = [], tuple(size)
        for stride in self.strides[: len(self.stages)]:
            cur = tuple(-(-c // s) for c, s in zip(cur, stride))
            maps.append(cur)
        return maps

    def check_input_size(self, size: Sequence[int]) -> None:
        """Refuse, naming the smallest clip that works, an input whose maps a prior kernel does not fit."""
        needs = [stage.min_map for stage in self.stages]

        def fits(axis: int, n: int) -> bool:
            return all(m[axis] >= need[axis] for m, need in zip(self.stage_maps((n, n, n)), needs))

        if all(fits(axis, n) for axis, n in enumerate(size)):
            return
        smallest = [next(n for n in range(1, 4096) if fits(axis, n)) for axis in range(3)]
        raise ValueError(
            f"{type(self).__name__} built with global-prior kernels for a larger clip needs at least "
            f"{smallest[0]} frames of {smallest[1]}x{smallest[2]} pixels, got {tuple(size)} (T, H, W); "
            "use a larger clip or build the model for this size (num_frames, img_size)"
        )

    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:
        """Stage outputs ``(B, T', H', W', C)``; the features are the last one after the final LayerNorm."""
        check_video_input(x, self.in_chans, type(self).__name__)
        self.check_input_size(x.shape[2:])
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = x.permute(0, 4, 1, 2, 3)  # (B, C, T, H, W) for the strided merging conv
            x = stage.patch_embed(x)  # (B, T, H, W, C)
            for i, blk in enumerate(stage.blocks):
                x = self.checkpointed(blk, x)
                if i == 0 and stage.peg is not None:
                    x = stage.peg(x)
            if (x := self.tap(taps, s, x)) is None:
                return None
        return self.norm(x)

    @property
    def frames_per_image(self) -> int:
        return self.strides[0][0]  # the patch embedding's temporal stride

    def group_matcher(self, coarse: bool = False) -> dict:
        return stage_group_matcher(r"^stages\.0\.patch_embed", "stages", r"(?:patch_embed|peg)", coarse)

    def resize_2d_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        """Inflate 2D kernels of the prior convs and PEGs: repeated over time and divided by its length
        (the released ImageNet inflation); the coarse prior's second conv may be a mean filter."""
        if value.dim() == 4 and target.dim() == 5 and value.shape[:2] == target.shape[:2]:
            w = inflate_conv_weight(value, target.shape[2])
            if w.shape[3:] != target.shape[3:]:
                w = F.interpolate(w.flatten(0, 1), size=target.shape[2:], mode="trilinear").view_as(target)
            return w
        return None


# ------------------------------------------------------------------------------- released checkpoints
# sail-sg/dualformer @ 058c10c: an mmaction2 Recognizer3D, `backbone.*` (mmaction/models/backbones/
# dualformer.py) and `cls_head.fc_cls.*` (I3D head). Each released tensor has one counterpart of the
# same shape here; renamed, our model computes the released function (models.md, "Released checkpoint
# layouts"). The release's ImageNet image weights share the video names with 2D kernels.
DUALFORMER_RELEASE = "sail-sg/dualformer@058c10c"
_RELEASE_FINE_FRAMES = 8  # the release's fine prior is (8, 7, 7) tokens in stages 1-3
_RELEASE_LABELS = {"dualformer_t": "DualFormer-T", "dualformer_s": "DualFormer-S", "dualformer_b": "DualFormer-B"}


def _released_block_key(stage: str, block: str, rest: str, global_blocks: set[str]) -> str:
    """``blocks.i.j.<rest>`` -> ours: GP-MSA's projections sit one level deeper (``attn.attn``)."""
    prefix = f"stages.{stage}.blocks.{block}."
    for old, new in (("attn.sr.", "attn.fine_pool."), ("attn.lr.", "attn.coarse_pool.")):
        if rest.startswith(old):
            return prefix + new + rest[len(old) :]
    if f"{stage}.{block}" in global_blocks and rest.startswith(("attn.q.", "attn.kv.", "attn.proj.")):
        return prefix + "attn." + rest
    return prefix + rest


def _released_dualformer_key(key: str, global_blocks: set[str]) -> str:
    if m := re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", key):
        return _released_block_key(*m.groups(), global_blocks)
    if m := re.fullmatch(r"patch_embeds\.(\d+)\.(.+)", key):
        return f"stages.{m[1]}.patch_embed.{m[2]}"
    if m := re.fullmatch(r"pos_block\.(\d+)\.proj\.0\.(.+)", key):
        return f"stages.{m[1]}.peg.proj.{m[2]}"
    return key  # norm.*


def identify_released_dualformer(sd: Mapping[str, Tensor]) -> Recognised | None:
    """A released DualFormer checkpoint (mmaction2, bare backbone or ImageNet image), else ``None``."""
    backbone, head, layout = split_mmaction2(sd)
    embed = backbone.get("patch_embeds.0.proj.weight")
    if embed is None or "pos_block.0.proj.0.weight" not in backbone:
        return None
    dims = tuple(
        int(v.shape[0]) for k, v in sorted(backbone.items()) if re.fullmatch(r"patch_embeds\.\d+\.proj\.weight", k)
    )
    depths = blocks_per_stage(backbone, r"blocks\.(\d+)\.(\d+)\.")
    variant = next(
        (v.config.name for v in VARIANTS if (v.args["embed_dims"], v.args["depths"]) == (dims, depths)), None
    )
    label = _RELEASE_LABELS.get(variant, f"DualFormer (dims {dims}, depths {depths})")
    if embed.dim() == 4:
        return Recognised(f"a released {label} ImageNet image checkpoint", variant, "image", None)
    size = ""
    if (fine := backbone.get("blocks.0.1.attn.sr.weight")) is not None:  # kernel = tokens / (8, 7, 7)
        frames = fine.shape[2] * _RELEASE_FINE_FRAMES * embed.shape[2]
        size = f", {frames}x{fine.shape[3] * 7 * embed.shape[3]} clips"
    return Recognised(f"a released {label} checkpoint ({layout} layout{size})", variant, layout, head_size(head))


def convert_released_dualformer(sd: Mapping[str, Tensor], model: DualFormer) -> dict[str, Tensor]:
    """Released DualFormer names -> ours (timm ``checkpoint_filter_fn`` style).

    Video checkpoints are renamed only. ImageNet image checkpoints are also inflated as the release's
    ``inflate_weights`` does, so a clip of identical frames meets the image's kernels: patch-embed, PEG
    and fine-prior kernels are repeated over their temporal extent and divided by it (2 for the stage-1
    patch embedding, 3 for the PEGs, the temporal expansion of the fine prior), the coarse prior's
    first conv gets a temporal extent of 1, and its last conv becomes the mean filter with zero bias.
    The release writes that mean as 1/(4*2*2) in stage 1 and 1/(4*1*1) in stage 2, the kernel volume
    at its 32x224 input; we divide by the kernel volume of the model, identical there and still a mean
    at other inputs. The image classifier is dropped.
    """
    backbone, head, _ = split_mmaction2(sd)
    global_blocks = {f"{m[1]}.{m[2]}" for k in backbone if (m := re.match(r"blocks\.(\d+)\.(\d+)\.attn\.q\.", k))}
    out = {_released_dualformer_key(k, global_blocks): v for k, v in backbone.items()}
    out.update(mmaction2_head_to_ours(head))
    if backbone["patch_embeds.0.proj.weight"].dim() == 4:
        out = _inflate_released_image(out, model.state_dict())
    return out


def _inflate_released_image(sd: dict[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            log.info("dropping %s: the ImageNet classifier", k)
            continue
        if k.endswith("coarse_pool.3.weight"):
            continue  # replaced by the mean filter below, as the release does
        target = own.get(k)
        out[k] = (
            inflate_conv_weight(v, target.shape[2]) if target is not None and v.dim() == 4 == target.dim() - 1 else v
        )
    for k, target in own.items():
        if k.endswith("coarse_pool.3.weight"):
            out[k] = torch.full(target.shape, 1.0 / math.prod(target.shape[2:]), dtype=target.dtype)
        elif k.endswith("coarse_pool.3.bias"):
            out[k] = torch.zeros(target.shape, dtype=target.dtype)
    return out


def to_released_dualformer(sd: Mapping[str, Tensor], layout: str = "mmaction2") -> dict[str, Tensor]:
    """Ours -> the release's names (the inverse of :func:`convert_released_dualformer` for video
    checkpoints): ``layout="mmaction2"`` gives ``backbone.*`` + ``cls_head.fc_cls.*``, ``"backbone"`` the
    bare backbone (the classifier is left out)."""
    backbone = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", k):
            rest = m[3].replace("attn.attn.", "attn.", 1).replace("attn.fine_pool.", "attn.sr.", 1)
            backbone[f"blocks.{m[1]}.{m[2]}.{rest.replace('attn.coarse_pool.', 'attn.lr.', 1)}"] = v
        elif m := re.fullmatch(r"stages\.(\d+)\.patch_embed\.(.+)", k):
            backbone[f"patch_embeds.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"stages\.(\d+)\.peg\.proj\.(.+)", k):
            backbone[f"pos_block.{m[1]}.proj.0.{m[2]}"] = v
        elif not k.startswith("head."):
            backbone[k] = v
    return ours_to_mmaction2(backbone, sd, layout)


register_checkpoint_format(
    CheckpointFormat(DUALFORMER_RELEASE, DualFormer, identify_released_dualformer, convert_released_dualformer)
)

# What the authors trained (README "Models" table and the configs it links). Mean/std of the K400
# configs are ImageNet's; the small-dataset configs normalise with mean (104, 117, 128), std 1 (0-255).
_DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"
_SMALL_DATA = dict(views="4x3", sampling="dense:32x4", mean=(104 / 255, 117 / 255, 128 / 255), std=(1 / 255,) * 3)


def _released(
    dataset, classes, top1, drive_id, config, file=None, pretrain="IN-1K", views="4x1", **kw
) -> ReleasedWeights:
    return ReleasedWeights(
        dataset, classes, top1, "README", views, url=_DRIVE.format(drive_id) if drive_id else None, file=file,
        config=f"configs/recognition/dualformer/{config}.py", repository=DUALFORMER_RELEASE, pretrain=pretrain, **kw,
    )  # fmt: skip


def _image(file: str | None, dataset: str = "ImageNet-1K") -> ReleasedWeights:
    return ReleasedWeights(
        dataset, 1000 if dataset == "ImageNet-1K" else 21841, None, "", "1x1", file=file, repository=DUALFORMER_RELEASE,
        num_frames=1, sampling="", note="image weights the K400 configs start from (inflated by inflate_weights); "
        "not published (the README's table links video checkpoints only)",
    )  # fmt: skip


RELEASED_WEIGHTS: dict[str, tuple[ReleasedWeights, ...]] = {
    "dualformer_t": (
        _released("Kinetics-400", 400, 79.5, "1dvG6vjC7udHTwTaqmOAfn6U3HNs3T-QF",
                  "dualformer_tiny_patch244_window877_kinetics400_1k", "dualformer_tiny_patch244_window877.pth"),
        _image("dualformer_tiny.pth"),
    ),
    "dualformer_s": (
        _released("Kinetics-400", 400, 80.6, "1dNHPnSl39Vbh7Z-KSWYjNV3PGFlWL3TY",
                  "dualformer_small_patch244_window877_kinetics400_1k", "dualformer_small_patch244_window877.pth"),
        _released("Diving-48", 48, 81.8, "10KZbIOwBErijejv72AVJrxkngp9TU4sj",
                  "dualformer_small_patch244_window877_diving48", pretrain="Kinetics-400", **_SMALL_DATA),
        _released("HMDB-51", 51, 76.4, "1NS80zjexgQhw6UMH-bbXUsHI0ZlpPvsV",
                  "dualformer_small_patch244_window877_hmdb51", pretrain="Kinetics-400", **_SMALL_DATA),
        _released("UCF-101", 101, 97.5, "1tEv2C51Z4pI2HSbb9fabsv-SIOItykDZ",
                  "dualformer_small_patch244_window877_ucf101", pretrain="Kinetics-400",
                  note="the README row says Small but links the tiny UCF-101 config (16 frames)", **_SMALL_DATA),
        _image(None),
    ),
    "dualformer_b": (
        _released("Kinetics-400", 400, 81.1, "1U_hxRWzh92ru2efgpiFH7a0e4LCc_3m8",
                  "dualformer_base_patch244_window877_kinetics400_1k", "dualformer_base_patch244_window877.pth"),
        _released("Kinetics-600", 600, 85.2, "1bp-Bl1MVtR9Fj405mLc129dVSK-PEvSy",
                  "dualformer_base_patch244_window877_kinetics600_22k", pretrain="IN-22K"),
        _image(None),
        _image(None, "ImageNet-22K"),
    ),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ variants
def _k400(name: str, *, params_m: float, gflops: float, top1: float) -> ModelConfig:
    """A released variant: 32 frames (stride 2) at 224, 4 clips x 1 crop; the paper numbers are the release's
    (params of the backbone without a head, GMACs per view as fvcore counts them); we match them to 2 %."""
    paper = PaperReference(
        params_m=params_m, gflops=gflops, params_head_classes=None, views="4x1", top1=top1, dataset="Kinetics-400",
        pretrain="IN-1K", citation=CITATION,
        note="params of the backbone (no head); GFLOPs per view as released (fvcore)",
    )  # fmt: skip
    return ModelConfig(
        name=name,
        num_frames=32,
        img_size=224,
        test_views="4x1",
        sampling="dense:32x2",
        min_input=(4, 64),
        paper=paper,
        weights=RELEASED_WEIGHTS[name],
    )


# depths count sub-blocks, as released (module docstring)
VARIANTS = [
    Variant(_k400("dualformer_t", params_m=21.8, gflops=60.09, top1=79.5),
            dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 2, 10, 4),
                 drop_path_rate=0.1)),
    Variant(_k400("dualformer_s", params_m=48.9, gflops=158.69, top1=80.6),
            dict(embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24), depths=(2, 2, 18, 2),
                 drop_path_rate=0.2)),
    Variant(_k400("dualformer_b", params_m=86.8, gflops=267.96, top1=81.1),
            dict(embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), depths=(2, 2, 18, 2),
                 drop_path_rate=0.3)),
    # three stages as pst_nano (a fourth would leave a 2x2 map at 64 px; with it the loss sat at chance for
    # four epochs), clipped gradients (norms of 5-8 with spikes at lr 1e-3), train crops from a short side of
    # 1-1.25x the crop (the default 1.14-1.43x shows objects larger than the full-frame validation does:
    # 92.5 / 93.8 % -> 96.2 / 95.0 % over two seeds); docs/benchmarks/temporal_truth.md
    Variant(ModelConfig(name="dualformer_nano", num_frames=16, img_size=64, test_views="2x1", sampling="uniform:16",
                        min_input=(4, 32), recipe={**NANO_RECIPE_FULL_FRAME, "clip_grad": 1.0}),
            dict(embed_dims=(48, 96, 192), num_heads=(2, 4, 8), depths=(2, 2, 2), temporal_pool=(1, 1),
                 window=(4, 4, 4), drop_path_rate=0.0, head_drop_rate=0.0, global_pool="moments")),
]  # fmt: skip
register_variants(DualFormer, VARIANTS)
