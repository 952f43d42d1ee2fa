"""Train and eval presets on torchvision.transforms.v2, and mixup/cutmix (timm) on batches of clips.

Frames travel as a ``tv_tensors.Video`` of uint8 ``(T, C, H, W)``, so every random draw (crop box,
scale, flip, RandAugment op, erasing box) is made once per clip and applied to all of its frames. The
one layout change, ``(T, C, H, W) -> (C, T, H, W)`` as the models take it, is the last step of each
preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SpatialAug = Literal["jitter", "rrc", "multiscale"]


class MultiScaleCrop(v2.Transform):
    """TSN's multi-scale crop: crop width and height drawn from ``scales`` x the short side, placed
    at one of 5 fixed positions (4 corners + centre), then resized to ``size``."""

    def __init__(self, size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66), max_distort: int = 1):
        super().__init__()
        self.size, self.scales, self.max_distort = size, tuple(scales), max_distort

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        H, W = v2.query_size(flat_inputs)
        base = min(H, W)
        sizes = [int(base * s) for s in self.scales]
        pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= self.max_distort]
        ch, cw = pairs[int(torch.randint(len(pairs), ()))]
        dy, dx = (H - ch) // 4, (W - cw) // 4
        offsets = [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)]
        top, left = offsets[int(torch.randint(len(offsets), ()))]
        return {"top": top, "left": left, "height": ch, "width": cw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.resized_crop(inpt, **params, size=[self.size, self.size], antialias=True)


class ToModelLayout(v2.Transform):
    """``(T, C, H, W) -> (C, T, H, W)`` (or ``(crops, T, C, H, W) -> (crops, C, T, H, W)``): the one
    layout conversion of the pipeline."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return inpt.as_subclass(Tensor).transpose(-4, -3).contiguous()


class ThreeCrop(v2.Transform):
    """Three ``size`` crops along the longer side (start, centre, end), stacked as a leading axis."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        H, W = inpt.shape[-2:]
        s = self.size
        if W >= H:
            boxes = [(0, x) for x in (0, (W - s) // 2, W - s)]
        else:
            boxes = [(y, 0) for y in (0, (H - s) // 2, H - s)]
        crops = [TF.crop(inpt, top, left, s, s) for top, left in boxes]
        return tv_tensors.wrap(torch.stack([c.as_subclass(Tensor) for c in crops]), like=inpt)


def build_transform(
    train: bool,
    crop_size: int = 224,
    short_side: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crops: int = 1,
    spatial: SpatialAug = "jitter",
    jitter: tuple[float, float] = (1.0, 1.25),
    rrc_scale: tuple[float, float] = (0.25, 1.0),
    flip: bool = True,
    randaugment: tuple[int, int] | None = None,
    erasing: float = 0.0,
) -> v2.Compose:
    """The preset for uint8 ``(T, C, H, W)`` frames -> float ``(C, T, H, W)`` (``(crops, C, T, H, W)``).

    Train: ``spatial="jitter"`` resizes the short side to a random size in
    ``short_side * jitter`` and takes a random crop (MViT, Video Swin); ``"rrc"`` is a random resized
    crop of area ``rrc_scale``; ``"multiscale"`` is TSN's multi-scale crop. Then horizontal flip
    (``flip=False`` for direction-sensitive labels; the dataset's ``flip_map`` does label-aware flips),
    RandAugment ``(num_ops, magnitude)``, random erasing with probability ``erasing``.
    Eval: short side resized to ``short_side`` then a centre crop (``crops=1``) or three crops.
    """
    short_side = short_side or (int(round(crop_size * 256 / 224)) if train else crop_size)
    ops: list[v2.Transform] = []
    if train:
        if spatial == "jitter":
            lo, hi = int(round(short_side * jitter[0])), int(round(short_side * jitter[1]))
            ops += [
                v2.RandomResize(max(lo, crop_size), max(hi, crop_size) + 1, antialias=True),
                v2.RandomCrop(crop_size),
            ]
        elif spatial == "rrc":
            ops += [v2.RandomResizedCrop(crop_size, scale=rrc_scale, antialias=True)]
        elif spatial == "multiscale":
            ops += [v2.Resize(short_side, antialias=True), MultiScaleCrop(crop_size)]
        else:
            raise ValueError(f"spatial must be 'jitter', 'rrc' or 'multiscale', got {spatial!r}")
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        if randaugment is not None:
            ops.append(v2.RandAugment(num_ops=randaugment[0], magnitude=randaugment[1]))
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        if erasing > 0:
            ops.append(v2.RandomErasing(p=erasing, value=0))
    else:
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops}")
        ops += [v2.Resize(short_side, antialias=True)]
        ops.append(v2.CenterCrop(crop_size) if crops == 1 else ThreeCrop(crop_size))
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    ops.append(ToModelLayout())
    return v2.Compose(ops)


def apply_transform(transform: v2.Compose, frames: Tensor) -> Tensor:
    """Run a preset on uint8 ``(T, C, H, W)`` frames."""
    return transform(tv_tensors.Video(frames))


class VideoMixup:
    """timm's ``Mixup`` (mixup / CutMix, label smoothing) on a batch of clips ``(B, C, T, H, W)``.

    timm's CutMix pastes ``x[:, :, y0:y1, x0:x1]``, which on a 5-D clip would cut along time and height.
    Each clip is therefore handed to it as ``(B, C*T, H, W)`` (a view): the box, drawn once per batch,
    covers the same pixels in every frame, and ``lam`` is the area actually kept (timm's
    ``correct_lam``). Returns the mixed clips and soft targets ``(B, K)``. timm draws from NumPy's global
    generator, which training checkpoints with the other RNG states.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        from timm.data import Mixup

        self.num_classes = num_classes
        self.mix = Mixup(
            mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob, mode="batch",
            correct_lam=True, label_smoothing=label_smoothing, num_classes=num_classes,
        )  # fmt: skip

    def __call__(self, video: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        B, C, T, H, W = video.shape
        frames = video.reshape(B, C * T, H, W)  # (B, C*T, H, W): one box for every frame
        mixed, targets = self.mix(frames, labels)
        return mixed.view(B, C, T, H, W), targets
