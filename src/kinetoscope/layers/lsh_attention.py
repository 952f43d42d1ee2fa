"""LSH attention (Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020).

Angular locality-sensitive hashing (Andoni et al. 2015): a vector ``x`` falls in bucket
``argmax([xR; -xR])`` for a random Gaussian ``R (d, n_buckets / 2)``. Queries and keys share one
projection (shared-QK), so a query and the keys it should attend to tend to share a bucket. Per
hash round the sequence is sorted by ``(bucket, position)``, cut into chunks of ``bucket_size``,
and every chunk attends to itself and to the previous chunk (cyclic), keeping only keys of the
query's own bucket. Rounds are merged with the weights ``softmax_r(logsumexp_r)`` (Reformer Eq. 5
and the multi-round merge), which is exact when the rounds see disjoint key sets; keys shared by
several rounds are counted once by subtracting ``log(#rounds in which the pair shares a bucket)``
from their logits, Reformer's duplicate correction. The attention matrix has
``n_hashes * N * 2 * bucket_size`` entries per head: linear in ``N`` where dense attention is ``N^2``.

Conventions (Reformer's): keys are the unit-normalised shared projection, ``logits = q . k/|k| /
sqrt(d)``; a token attends to itself only when nothing else is visible (its own logit gets
``SELF_MASK_VALUE``). One set of rotations is drawn per call and shared by the batch and the heads:
fresh from the global RNG in training (so a seeded run is reproducible and activation checkpointing
recomputes the same buckets), from ``seed`` in eval (the same buckets on every call).

The logits are computed explicitly (not with ``scaled_dot_product_attention``) because merging the
rounds needs each round's log-sum-exp, which the fused kernels do not return.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELF_MASK_VALUE = -1e5  # Reformer: attend to yourself only if no other key is visible
MASK_VALUE = -1e9  # keys of another bucket or padding


def num_buckets(seq_len: int, bucket_size: int) -> int:
    """About ``bucket_size`` tokens per bucket; even (angular LSH splits ``[xR; -xR]``) or 1."""
    n = seq_len // bucket_size
    return 1 if n < 2 else n - n % 2


def random_rotations(dim: int, n_hashes: int, n_buckets: int, generator: torch.Generator | None = None) -> Tensor:
    """``(dim, n_hashes, n_buckets // 2)`` Gaussian rotations, drawn on the CPU (same numbers on every device)."""
    return torch.randn(dim, n_hashes, max(n_buckets // 2, 1), generator=generator)


def hash_buckets(x: Tensor, rotations: Tensor, n_buckets: int) -> Tensor:
    """Angular LSH of ``x (B, h, N, d)`` -> bucket ids ``(B, h, n_hashes, N)`` in ``[0, n_buckets)``."""
    B, h, N, _ = x.shape
    n_hashes = rotations.shape[1]
    if n_buckets == 1:
        return x.new_zeros(B, h, n_hashes, N, dtype=torch.long)
    rotated = torch.einsum("bhnd,drk->bhrnk", x.float(), rotations.to(x.device, torch.float32))
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def lsh_attention(
    qk: Tensor,
    v: Tensor,
    n_hashes: int = 4,
    bucket_size: int = 64,
    rotations: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    attend_across_buckets: bool = False,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Shared-QK LSH attention of ``qk, v: (B, h, N, d)`` -> ``(B, h, N, d)``.

    ``key_padding_mask (B, N)``: True marks tokens that must not be attended to. ``rotations``
    (from :func:`random_rotations`) fixes the hash; otherwise it is drawn with ``generator``.
    ``return_attention`` also returns the sparse attention matrix, ``(B, h, n_hashes, N/c, c, 2c)``
    in each round's sorted order.
    """
    B, h, N, d = qk.shape
    c = bucket_size
    n_buckets = num_buckets(N, c)
    if rotations is None:
        rotations = random_rotations(d, n_hashes, n_buckets, generator)
    n_hashes = rotations.shape[1]
    n_chunks = math.ceil(N / c)
    Np = n_chunks * c
    pad = Np - N
    is_pad = torch.zeros(B, Np, dtype=torch.bool, device=qk.device)
    is_pad[:, N:] = True
    if key_padding_mask is not None:
        is_pad[:, :N] |= key_padding_mask.to(qk.device, torch.bool)
    if pad:
        qk, v = F.pad(qk, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))

    buckets = hash_buckets(qk, rotations, n_buckets)  # (B, h, R, Np)
    buckets = buckets.masked_fill(is_pad[:, None, None, :], n_buckets)  # padding sorts last
    pos = torch.arange(Np, device=qk.device)
    order = (buckets * Np + pos).argsort(dim=-1)  # (B, h, R, Np): sort by bucket, then position

    def sort(x: Tensor) -> Tensor:  # (B, h, Np, e) -> (B, h, R, n_chunks, c, e) in sorted order
        x = x.unsqueeze(2).expand(-1, -1, n_hashes, -1, -1)
        idx = order.unsqueeze(-1).expand(-1, -1, -1, -1, x.shape[-1])
        return x.gather(3, idx).reshape(B, h, n_hashes, n_chunks, c, x.shape[-1])

    def look_back(x: Tensor) -> Tensor:  # chunk i sees chunks i and i-1: (..., n_chunks, c, e) -> (..., 2c, e)
        return x if n_chunks == 1 else torch.cat([x, x.roll(1, dims=3)], dim=4)

    q_s = sort(qk.float())
    k_s = look_back(F.normalize(q_s, dim=-1))
    v_s = look_back(sort(v))
    q_bucket = buckets.gather(3, order).reshape(B, h, n_hashes, n_chunks, c)  # this round's buckets, sorted
    k_bucket = look_back(q_bucket.unsqueeze(-1)).squeeze(-1)  # (B, h, R, n_chunks, 2c)

    logits = (q_s @ k_s.transpose(-2, -1)) * d**-0.5  # (B, h, R, n_chunks, c, 2c)
    if n_hashes > 1:  # duplicate correction: log(#rounds in which the pair shares a bucket)
        qb = sort(buckets.permute(0, 1, 3, 2))  # (B, h, R, n_chunks, c, R): every round's bucket
        kb = look_back(qb)
        shared = torch.zeros_like(logits, dtype=torch.uint8)
        for r in range(n_hashes):  # a few rounds; uint8 sums are 4x cheaper than one (c, 2c, R) compare
            shared += (qb[..., r].unsqueeze(-1) == kb[..., r].unsqueeze(-2)).view(torch.uint8)
        logits.sub_(shared.to(logits.dtype).clamp_min_(1.0).log_())
    if attend_across_buckets:
        hidden = (k_bucket == n_buckets).unsqueeze(-2)  # padding only
    else:
        hidden = q_bucket.unsqueeze(-1) != k_bucket.unsqueeze(-2)  # padding has a bucket of its own
    logits.masked_fill_(hidden, MASK_VALUE)
    # a query's own key is the diagonal of the first c keys (its chunk comes first in the window)
    logits[..., :c].diagonal(dim1=-2, dim2=-1).fill_(SELF_MASK_VALUE)

    top = logits.amax(dim=-1, keepdim=True).detach()  # any constant keeps lse and its gradient exact
    e = (logits - top).exp_()
    total = e.sum(dim=-1, keepdim=True)
    probs = e / total
    lse = top + total.log()  # (B, h, R, n_chunks, c, 1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    out = probs.to(v_s.dtype) @ v_s  # (B, h, R, n_chunks, c, d)

    # undo the sort, then merge the rounds by their share of the total attention mass
    out, lse = out.reshape(B, h, n_hashes, Np, d), lse.reshape(B, h, n_hashes, Np, 1)
    undo = order.argsort(dim=-1).unsqueeze(-1)
    out = out.gather(3, undo.expand(-1, -1, -1, -1, d))
    lse = lse.gather(3, undo)
    weights = lse.softmax(dim=2).to(out.dtype)
    out = (out * weights).sum(dim=2)[:, :, :N]
    return (out, probs) if return_attention else out


def dense_shared_qk_reference(qk: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Full attention with LSH attention's conventions (normalised shared keys, self-mask), for tests."""
    d = qk.shape[-1]
    logits = qk @ F.normalize(qk, dim=-1).transpose(-2, -1) * d**-0.5
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], MASK_VALUE)
    eye = torch.eye(qk.shape[-2], dtype=torch.bool, device=qk.device)
    logits = logits.masked_fill(eye, SELF_MASK_VALUE)
    return logits.softmax(-1) @ v


class LSHAttention(nn.Module):
    """Multi-head shared-QK LSH self-attention over ``(B, N, C)`` tokens (projections ``qk``, ``v``, ``proj``).

    ``bucket_size`` tokens per bucket and per chunk, ``n_hashes`` hash rounds; ``seed`` fixes the
    rotations in eval mode. ``full_attention=True`` replaces the hashing by dense attention with the
    same projections and conventions (the SCT ablation "LSH vs full attention").
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        bucket_size: int = 64,
        n_hashes: int = 4,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        seed: int = 0,
        full_attention: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if bucket_size < 1 or n_hashes < 1:
            raise ValueError(f"bucket_size and n_hashes must be >= 1, got {bucket_size} and {n_hashes}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.bucket_size, self.n_hashes, self.seed = bucket_size, n_hashes, seed
        self.full_attention = full_attention
        self.qk = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def rotations(self, seq_len: int) -> Tensor:
        n_buckets = num_buckets(seq_len, self.bucket_size)
        generator = None if self.training else torch.Generator().manual_seed(self.seed)
        return random_rotations(self.head_dim, self.n_hashes, n_buckets, generator)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        qk = self.qk(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        v = self.v(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.full_attention:
            out = dense_shared_qk_reference(qk.float(), v.float(), key_padding_mask).to(v.dtype)
        else:
            drop = self.attn_drop if self.training else 0.0
            rotations = self.rotations(N)
            out = lsh_attention(qk, v, self.n_hashes, self.bucket_size, rotations, key_padding_mask, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
