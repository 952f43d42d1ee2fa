"""Tubelet / patch embedding, input checks, and 2D -> 3D kernel inflation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def to_3tuple(x: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(x, int):
        return (x, x, x)
    t = tuple(int(v) for v in x)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {x!r}")
    return t  # type: ignore[return-value]


def check_video_input(x: Tensor, in_chans: int = 3, name: str = "model") -> None:
    """Raise a ``ValueError`` that names the expected ``(B, C, T, H, W)`` layout when ``x`` is not one."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor of shape (B, C, T, H, W), got {type(x).__name__}")
    if x.dim() != 5:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 4 else ""
        raise ValueError(
            f"{name} expects a video batch of shape (B, C, T, H, W) with C={in_chans}, "
            f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} expects a float tensor (normalised pixels), got dtype {x.dtype}; "
            "convert uint8 frames with x.float() / 255 and normalise"
        )
    if x.shape[1] != in_chans:
        if x.shape[2] == in_chans:
            raise ValueError(
                f"{name} expects layout (B, C, T, H, W) with C={in_chans}, got shape {tuple(x.shape)} "
                "which looks like (B, T, C, H, W); use x.permute(0, 2, 1, 3, 4)"
            )
        if x.shape[-1] == in_chans:
            raise ValueError(
                f"{name} expects layout (B, C, T, H, W) with C={in_chans}, got shape {tuple(x.shape)} "
                "which looks like (B, T, H, W, C); use x.permute(0, 4, 1, 2, 3)"
            )
        raise ValueError(f"{name} expects (B, C, T, H, W) with C={in_chans} channels, got shape {tuple(x.shape)}")


def pad_to_multiple(x: Tensor, multiple: Sequence[int], dims: Sequence[int]) -> Tensor:
    """Zero-pad ``x`` at the end of each of ``dims`` so its size there divides by ``multiple``."""
    pad = [0] * (2 * x.dim())
    for m, d in zip(multiple, dims):
        d = d % x.dim()
        extra = (-x.shape[d]) % m
        pad[2 * (x.dim() - 1 - d) + 1] = extra  # F.pad counts from the last dimension
    if not any(pad):
        return x
    return F.pad(x, pad)


def check_divisible(sizes: Sequence[int], patch_size: Sequence[int]) -> None:
    """Raise a ``ValueError`` naming the sizes that work unless ``patch_size = (t, h, w)`` divides the
    ``sizes = (frames, height, width)`` (of an input: ``x.shape[2:]``; of a model being built: its
    ``(num_frames,)``); a patch size of 1 leaves an axis unchecked."""
    for size, p, axis in zip(sizes, patch_size, ("frames", "height", "width")):
        if size % p:
            raise ValueError(
                f"input {axis} {size} is not divisible by the tubelet size {p}; "
                f"use a multiple of {p} (e.g. {max(p, size - size % p)} or {size + p - size % p})"
            )


def conv_stem(in_chans: int, layers: Sequence[tuple[int, Sequence[int], Sequence[int]]]) -> nn.Sequential:
    """Plain 3D convolutions ``(out_channels, kernel, stride)``, padded by half the kernel: conv-BN-ReLU, the
    last a conv with bias (STAT's token-embedding block; ``cst_nano``'s stem)."""
    mods: list[nn.Module] = []
    c = in_chans
    for i, (c_out, kernel, stride) in enumerate(layers):
        last = i == len(layers) - 1
        pad = tuple(k // 2 for k in kernel)
        mods.append(nn.Conv3d(c, c_out, tuple(kernel), tuple(stride), pad, bias=last))
        if not last:
            mods += [nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
        c = c_out
    return nn.Sequential(*mods)


class PatchEmbed3d(nn.Module):
    """Non-overlapping tubelets -> tokens: ``(B, C, T, H, W) -> (B, D, T', H', W')``.

    A Conv3d with kernel = stride = ``patch_size``, optionally followed by a LayerNorm over channels.
    Inputs that the patch does not divide are zero-padded at the end (as Swin does) when
    ``pad=True``; otherwise a ``ValueError`` names the sizes that work. ``convs`` (``(out_channels, kernel,
    stride)`` per layer, :func:`conv_stem`) replaces the one conv by a stem of overlapping convolutions whose
    strides multiply to ``patch_size`` and whose last layer gives ``embed_dim`` channels: the same token
    grid, each token seeing beyond its tubelet.
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = (2, 4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        norm: bool = False,
        pad: bool = True,
        bias: bool = True,
        convs: Sequence[tuple[int, Sequence[int], Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = to_3tuple(patch_size)
        self.in_chans = in_chans
        self.pad = pad
        if convs is None:
            self.proj = nn.Conv3d(in_chans, embed_dim, self.patch_size, self.patch_size, bias=bias)
        else:
            layers = [(c, to_3tuple(k), to_3tuple(s)) for c, k, s in convs]
            strides = tuple(math.prod(s[i] for _, _, s in layers) for i in range(3))  # plain ints: meta-safe
            if not layers or strides != self.patch_size or layers[-1][0] != embed_dim:
                raise ValueError(
                    f"the stem's strides multiply to {strides} and it ends at {layers[-1][0] if layers else None} "
                    f"channels; the patch {self.patch_size} and embed_dim {embed_dim} need them to match"
                )
            self.proj = conv_stem(in_chans, layers)  # its last conv has a bias whatever ``bias`` says
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        check_video_input(x, self.in_chans)
        if self.pad:
            x = pad_to_multiple(x, self.patch_size, (2, 3, 4))
        else:
            check_divisible(x.shape[2:], self.patch_size)
        x = self.proj(x)  # (B, D, T', H', W')
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        return x


def inflate_conv_weight(weight_2d: Tensor, time: int, center: bool = False) -> Tensor:
    """2D kernel ``(O, I, kh, kw)`` -> 3D kernel ``(O, I, time, kh, kw)``.

    ``center=False`` repeats over time and divides by ``time`` (I3D inflation: a static clip gives the
    2D response); ``center=True`` puts the 2D kernel at the central tap and zeros elsewhere.
    """
    if weight_2d.dim() == 5:
        return weight_2d
    if center:
        w = torch.zeros(*weight_2d.shape[:2], time, *weight_2d.shape[2:], dtype=weight_2d.dtype)
        w[:, :, time // 2] = weight_2d
        return w
    return weight_2d.unsqueeze(2).repeat(1, 1, time, 1, 1) / time
