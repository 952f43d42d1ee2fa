"""3D window partition / reverse, shifted-window masks and relative position bias (Swin, Video Swin).

A 2D window is the 3D window ``(1, h, w)``; every helper works on channels-last ``(B, T, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from .patch_embed import to_3tuple

MASK_VALUE = -100.0  # Swin's value: exp(-100) underflows to 0 in fp32 and never gives an all -inf row


def effective_window(
    size: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Shrink the window to the feature map (and drop the shift) on axes the map does not exceed.

    This is Swin's rule: a 7x7 map with a 7x7 window gets one window and no shift.
    """
    w, s = list(to_3tuple(window)), list(to_3tuple(shift))
    for i, n in enumerate(size):
        if n <= w[i]:
            w[i], s[i] = n, 0
    return tuple(w), tuple(s)  # type: ignore[return-value]


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """``(B, T, H, W, C)`` -> ``(B * nW, wt * wh * ww, C)``; sizes must divide by the window."""
    wt, wh, ww = window
    return rearrange(x, "b (t wt) (h wh) (w ww) c -> (b t h w) (wt wh ww) c", wt=wt, wh=wh, ww=ww)


def window_reverse(windows: Tensor, window: Sequence[int], size: Sequence[int]) -> Tensor:
    """``(B * nW, wt * wh * ww, C)`` -> ``(B, T, H, W, C)``."""
    wt, wh, ww = window
    T, H, W = size
    return rearrange(
        windows,
        "(b t h w) (wt wh ww) c -> b (t wt) (h wh) (w ww) c",
        t=T // wt,
        h=H // wh,
        w=W // ww,
        wt=wt,
        wh=wh,
        ww=ww,
    )


def shifted_window_mask(
    size: Sequence[int], window: Sequence[int], shift: Sequence[int], device: torch.device | None = None
) -> Tensor:
    """Additive mask ``(nW, N, N)`` for attention on a cyclically rolled map (Swin Eq. 4 and Fig. 4).

    Tokens that were neighbours before the roll share a region label; pairs with different labels
    get ``MASK_VALUE``. ``size`` is the (padded) map size, divisible by the window.
    """
    T, H, W = size
    img = torch.zeros(1, T, H, W, 1, device=device)
    label = 0
    slices = [
        (slice(0, -w), slice(-w, -s), slice(-s, None)) if s > 0 else (slice(None),) for w, s in zip(window, shift)
    ]
    for t in slices[0]:
        for h in slices[1]:
            for w in slices[2]:
                img[:, t, h, w, :] = label
                label += 1
    regions = window_partition(img, window).squeeze(-1)  # (nW, N)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)  # (nW, N, N)
    return mask.masked_fill(mask != 0, MASK_VALUE).masked_fill(mask == 0, 0.0)


def relative_position_index(window: Sequence[int]) -> Tensor:
    """``(N, N)`` index into a ``(2wt-1)(2wh-1)(2ww-1)`` bias table; the 2D case equals timm's Swin."""
    wt, wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wt), torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(
        1
    )  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N)
    rel = rel.permute(1, 2, 0) + torch.tensor([wt - 1, wh - 1, ww - 1])
    return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]


class RelativePositionBias(nn.Module):
    """Learned bias table over relative offsets inside a window; ``forward() -> (heads, N, N)``.

    ``relative_position_bias_table`` has ``(2wt-1)(2wh-1)(2ww-1)`` rows, the name timm and Video Swin
    use, so checkpoints load as they are.
    """

    def __init__(self, window: Sequence[int], num_heads: int) -> None:
        super().__init__()
        self.window = to_3tuple(window)
        wt, wh, ww = self.window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window), persistent=False)

    def forward(self, window: Sequence[int] | None = None) -> Tensor:
        """Bias for ``window`` (default: the full window). A smaller window, used when the feature map
        is smaller than the window, reads the same table with its own offsets."""
        index = self.relative_position_index
        if window is not None and tuple(window) != self.window:
            index = self._index_for(tuple(window))
        N = index.shape[0]
        bias = self.relative_position_bias_table[index.reshape(-1)].reshape(N, N, -1)
        return bias.permute(2, 0, 1).contiguous()  # (heads, N, N)

    def _index_for(self, window: tuple[int, int, int]) -> Tensor:
        wt, wh, ww = self.window
        coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in window), indexing="ij"), dim=0).flatten(
            1
        )  # (3, N)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        rel = rel + torch.tensor([wt - 1, wh - 1, ww - 1])
        index = rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]
        return index.to(self.relative_position_bias_table.device)
