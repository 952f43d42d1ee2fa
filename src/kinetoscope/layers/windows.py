"""3D window partition / reverse, shifted-window masks, relative position indices, key-padding bias, and
the cache that keeps such geometry between forward passes (Swin, Video Swin).

A 2D window is the 3D window ``(1, h, w)``; every helper works on channels-last ``(B, T, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from .patch_embed import pad_to_multiple, to_3tuple

# Swin's value between the regions of a cyclically shifted window (timm and the released PST use it too,
# so a static clip still gives timm Swin's numbers): exp(-100) underflows to 0 in fp32.
SHIFTED_WINDOW_MASK_VALUE = -100.0

# Additive bias of a key that must not be attended to (zero padding, missing neighbour frames). -1e4 is
# exactly representable in fp16 and bf16 and far from their limits (65504 / 3.4e38), so adding it to a
# logit never overflows to -inf; exp(-1e4) is 0 in every float type, so a masked key gets no weight
# whenever one real key is left; and a row whose keys are all masked stays finite (an even average) where
# -inf would give NaN. Swin's -100 is too weak for trained logits of that size.
KEY_MASK_VALUE = -1e4


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
    get ``SHIFTED_WINDOW_MASK_VALUE``. ``size`` is the (padded) map size, divisible by the window.
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
    return mask.masked_fill(mask != 0, SHIFTED_WINDOW_MASK_VALUE).masked_fill(mask == 0, 0.0)


def window_coords(window: Sequence[int]) -> Tensor:
    """``(N, 3)`` integer coordinates ``(t, h, w)`` of a window's cells, in window-partition order."""
    grids = torch.meshgrid(*(torch.arange(n) for n in to_3tuple(window)), indexing="ij")
    return torch.stack(grids, dim=-1).reshape(-1, 3)


def relative_position_index(table: Sequence[int], query: Tensor | None = None, key: Tensor | None = None) -> Tensor:
    """Index ``(..., Nq, Nk)`` into a ``(2T-1)(2H-1)(2W-1)``-row bias table for the offsets ``query - key``.

    ``table = (T, H, W)`` is the window the table is sized for. ``query`` / ``key`` are ``(..., N, 3)``
    integer ``(t, h, w)`` coordinates (default: the cells of ``table`` in partition order, which gives
    Swin's index, timm's for ``T = 1``); offsets beyond the table are clamped to its edge.
    """
    T, H, W = to_3tuple(table)
    query = window_coords(table) if query is None else query
    key = query if key is None else key
    rel = query[..., :, None, :] - key[..., None, :, :]  # (..., Nq, Nk, 3) query minus key
    dt = rel[..., 0].clamp(-(T - 1), T - 1)
    dh = rel[..., 1].clamp(-(H - 1), H - 1)
    dw = rel[..., 2].clamp(-(W - 1), W - 1)
    return (dt + T - 1) * (2 * H - 1) * (2 * W - 1) + (dh + H - 1) * (2 * W - 1) + dw + W - 1


def key_padding_bias(valid: Tensor) -> Tensor:
    """Additive attention bias of the same shape as the boolean ``valid``: 0 for real keys,
    ``KEY_MASK_VALUE`` for keys that must not be attended to."""
    return torch.zeros(valid.shape, device=valid.device).masked_fill(~valid, KEY_MASK_VALUE)


def window_padding_bias(size: Sequence[int], window: Sequence[int]) -> Tensor | None:
    """Key bias ``(nW, 1, 1, N)`` that hides the zero padding of a ``size = (T, H, W)`` map padded to
    window multiples (``None`` when nothing is padded). Windows are in ``window_partition`` order."""
    real = torch.ones(1, *size, 1)
    padded = pad_to_multiple(real, window, dims=(1, 2, 3))
    if padded.shape == real.shape:
        return None
    keys = window_partition(padded, window)[..., 0] > 0  # (nW, N)
    return key_padding_bias(keys)[:, None, None, :]


def geometry_buffer(module: nn.Module, name: str, build: Callable[[], Tensor | None], device: torch.device):
    """Geometry (an index, a mask) a module needs for one input shape, built once by ``build()`` and kept
    as a non-persistent buffer ``name`` (so it moves with ``.to()`` and stays out of checkpoints).

    ``name`` encodes the geometry (e.g. ``"rel_index_8x1x7x7"``). Nothing is kept on the ``meta``
    device: a model built there (to count FLOPs, or to be materialised with ``to_empty``) never holds
    uninitialised geometry; it is rebuilt at its first real forward. ``build`` runs on the CPU and
    outside inference mode (a buffer first made under ``torch.inference_mode()`` can still be used in
    training); its result is moved to ``device``.
    """
    if name in module._buffers:
        buf = module._buffers[name]
        return buf if buf is None or buf.device == device else buf.to(device)
    with torch.inference_mode(False), torch.device("cpu"):  # built on the CPU, whatever the default device
        buf = build()
        buf = buf.to(device) if buf is not None else None
    if torch.device(device).type != "meta":
        module.register_buffer(name, buf, persistent=False)
    return buf
