"""Multi-head self-attention on ``F.scaled_dot_product_attention``.

One attention for every family. Two hooks cover what the papers need beyond plain MHSA:

* ``attn_bias``: an additive term inside the softmax (relative position bias, shifted-window mask,
  CSTransformer's ``alpha * A_{i-1}``), broadcast to ``(B, heads, N, M)``.
* ``return_logits``: also return the pre-softmax logits ``A = Q K^T / sqrt(d)`` (without the bias),
  which CSTransformer's cross-stage attention feeds to the next block. That path computes the
  attention explicitly (the fused kernel never materialises ``A``).

Parameter names (``qkv``, ``proj``) follow timm so 2D checkpoints load without renaming.

:func:`record_attention` collects the attention probabilities of every call made inside it (attention
rollout, ``kinetoscope explain``); it switches those calls to the explicit path, which computes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_RECORDERS: list[list[Tensor]] = []  # the lists of the active record_attention() blocks


@contextlib.contextmanager
def record_attention() -> Iterator[list[Tensor]]:
    """Yield a list that receives ``softmax(q k^T * scale + attn_bias)``, ``(..., N, M)``, of every
    :func:`attention` call inside the block, in call order and still in the autograd graph (so the
    gradient of a score with respect to each map can be taken, as gradient-weighted rollout does)."""
    maps: list[Tensor] = []
    _RECORDERS.append(maps)
    try:
        yield maps
    finally:
        del _RECORDERS[next(i for i, m in enumerate(_RECORDERS) if m is maps)]  # by identity: lists compare by value


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor | None = None,
    dropout_p: float = 0.0,
    return_logits: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T * scale + attn_bias) v for ``q: (..., N, d)``, ``k, v: (..., M, d)``.

    Returns ``(out, logits)`` where ``logits`` is ``q k^T * scale`` (before the bias) when
    ``return_logits`` is set, else ``None``.
    """
    if not return_logits and not _RECORDERS:
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        if q.dim() == 4:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale), None
        if q.dim() == 3:  # no heads axis
            bias = attn_bias.unsqueeze(-3) if attn_bias is not None and attn_bias.dim() == 3 else attn_bias
            out, _ = attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), bias, dropout_p, scale=scale)
            return out.squeeze(1), None
        # ONNX's attention takes (batch, heads, N, d) only: the axes before the heads go into one batch axis
        # (a bias that varies along them is broadcast to match first).
        batch = q.shape[:-3]
        q4, k4, v4 = (t.flatten(0, -4) for t in (q, k, v))  # (prod(batch), heads, N|M, d)
        if attn_bias is not None:
            attn_bias = attn_bias.reshape((1,) * (q.dim() - attn_bias.dim()) + attn_bias.shape)
            if any(n != 1 for n in attn_bias.shape[:-3]):
                attn_bias = attn_bias.expand(*batch, *attn_bias.shape[-3:])
            attn_bias = attn_bias.flatten(0, -4)  # (prod(batch) or 1, heads or 1, N, M)
        out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)
        return out.unflatten(0, batch), None
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)  # (..., N, M)
    attn = logits if attn_bias is None else logits + attn_bias
    attn = attn.softmax(dim=-1)
    for maps in _RECORDERS:
        maps.append(attn)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v, (logits if return_logits else None)


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, N, C)`` tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        if head_dim is None and dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        inner = self.num_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def init_qk_fan_in(self) -> None:
        """Re-draw the query and key projections at trunc-normal ``std = 1 / sqrt(dim)`` (fan-in; torch's
        ``nn.MultiheadAttention`` draws them at a similar scale) so that the logits ``q k^T / sqrt(d)`` of
        unit-variance tokens are of order 1 at initialisation and the attention weights depend on the
        content. ViT's trunc-normal(0.02) is the fan-in scale of a 2500-wide layer: at a width of 32-192
        it makes the logits 10-50x smaller and every attention map nearly uniform, so a mechanism that
        acts only through the weights (SCT's shifted MSA) starts switched off."""
        inner = self.num_heads * self.head_dim
        with torch.no_grad():
            nn.init.trunc_normal_(self.qkv.weight[: 2 * inner], std=self.qkv.in_features**-0.5)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, C) -> q, k, v each (B, heads, N, head_dim)."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def merge_heads(self, x: Tensor) -> Tensor:
        """(B, heads, N, head_dim) -> (B, N, C) through the output projection."""
        B, _, N, _ = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, -1)))

    def forward(
        self, x: Tensor, attn_bias: Tensor | None = None, return_logits: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        q, k, v = self.split_heads(x)
        drop = self.attn_drop if self.training else 0.0
        out, logits = attention(q, k, v, attn_bias, drop, return_logits, self.scale)
        out = self.merge_heads(out)
        return (out, logits) if return_logits else out


class CrossAttention(nn.Module):
    """Queries from one token set, keys/values from another: ``(B, N, C), (B, M, C) -> (B, N, C)``.

    Used where keys and values are a pooled or gathered set (DualFormer's pyramid priors, STAT's
    short/long-term keys). Names ``q``, ``kv``, ``proj`` follow PVT/Twins.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, context: Tensor, attn_bias: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        M = context.shape[1]
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv = self.kv(context).reshape(B, M, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (B, h, M, d)
        drop = self.attn_drop if self.training else 0.0
        out, _ = attention(q, k, v, attn_bias, drop, False, self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


def dense_attention_reference(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor | None = None) -> Tensor:
    """The textbook formula, for tests of every fused or sparse path."""
    logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if attn_bias is not None:
        logits = logits + attn_bias
    return logits.softmax(-1) @ v
