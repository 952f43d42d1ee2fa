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

Three paths compute this one function (``impl``): ``"reference"`` (:func:`lsh_attention_reference`,
the definition step by step: a gather per round, explicit float32 logits and masks), ``"fast"`` and
``"export"``. The fast path sorts all rounds in one call, gathers rows once, builds each chunk's additive
bias (bucket mask, duplicate correction, self mask) from small integer bucket ids, and attends on
contiguous ``(chunk, 2 * chunk)`` blocks in the input dtype, slab by slab to bound the bias memory. When
On the CPU it runs PyTorch's flash-attention kernel, which (unlike ``F.scaled_dot_product_attention``)
returns the per-round log-sum-exp the merge needs, with a backward of its own that recomputes each
slab (:class:`_FusedChunkAttention`: training keeps nothing of the attention matrix's size); with
dropout or on other devices, an explicit softmax that autograd differentiates. ``"export"`` is the
explicit path in operators that ``torch.onnx.export(..., dynamo=True)`` translates (no in-place
writes into views, no dtype views).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELF_MASK_VALUE = -1e5  # Reformer: attend to yourself only if no other key is visible
MASK_VALUE = -1e9  # keys of another bucket or padding
IMPLS = ("fast", "export", "reference")
# Bias entries per slab of the fast path (16 MiB in float32): bounds the bias memory, stays below glibc's
# largest mmap threshold (32 MiB) so a freed slab is reused without page faults, and keeps each operator
# large enough that multi-threaded kernels amortise their start (1 MiB slabs were 3x slower on 2 threads).
SLAB_ELEMENTS = 1 << 22
_FUSED_OP = "_scaled_dot_product_flash_attention_for_cpu"  # returns (out, logsumexp)


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
    impl: str = "fast",
) -> Tensor | tuple[Tensor, Tensor]:
    """Shared-QK LSH attention of ``qk, v: (B, h, N, d)`` -> ``(B, h, N, d)``.

    ``key_padding_mask (B, N)``: True marks tokens that must not be attended to. ``rotations``
    (from :func:`random_rotations`) fixes the hash; otherwise it is drawn with ``generator``.
    ``impl``: ``"fast"`` (sorted once, chunk attention on contiguous tensors, PyTorch's fused kernel on
    the CPU), ``"export"`` (the same algorithm in plain operators, for ONNX) or ``"reference"``
    (:func:`lsh_attention_reference`). ``return_attention`` (reference only) also returns the sparse
    attention matrix, ``(B, h, n_hashes, N/c, c, 2c)`` in each round's sorted order.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference" or return_attention:
        return lsh_attention_reference(
            qk, v, n_hashes, bucket_size, rotations, key_padding_mask, attend_across_buckets, dropout_p, generator,
            return_attention,
        )  # fmt: skip
    B, h, N, d = qk.shape
    c = bucket_size
    n_buckets = num_buckets(N, c)
    if rotations is None:
        rotations = random_rotations(d, n_hashes, n_buckets, generator)
    n_hashes = rotations.shape[1]
    n_chunks = math.ceil(N / c)
    Np = n_chunks * c
    is_pad = torch.arange(Np, device=qk.device) >= N  # (Np,), then (B, Np) with the caller's mask
    is_pad = is_pad.expand(B, Np)
    if key_padding_mask is not None:
        is_pad = is_pad | F.pad(key_padding_mask.to(qk.device, torch.bool), (0, Np - N))
    if Np > N:
        qk, v = F.pad(qk, (0, 0, 0, Np - N)), F.pad(v, (0, 0, 0, Np - N))

    buckets = fast_hash_buckets(qk, rotations, n_buckets)  # (B, h, R, Np)
    buckets = buckets.masked_fill(is_pad[:, None, None, :], n_buckets)  # padding sorts last
    pos = torch.arange(Np, device=qk.device)
    order = (buckets * Np + pos).argsort(dim=-1)  # (B, h, R, Np): by bucket, then position; all rounds at once
    G = B * h * n_hashes  # (batch, head, round) triples: the chunk attention's batch

    q_s = sorted_rows(qk, order).view(G, n_chunks, c, d)
    k_s = sorted_rows(F.normalize(qk, dim=-1), order).view(G, n_chunks, c, d)
    v_s = sorted_rows(v, order).view(G, n_chunks, c, d)
    # every round's bucket of each sorted token, the sorting round first: (R, G, n_chunks, c) small ints
    rolled = torch.stack([buckets.roll(-o, dims=2) for o in range(n_hashes)], dim=-1)  # [..., r, n, o] = round r+o
    q_ids = rolled.gather(3, order.unsqueeze(-1).expand_as(rolled)).to(_id_dtype(n_buckets))
    q_ids = q_ids.permute(4, 0, 1, 2, 3).reshape(n_hashes, G, n_chunks, c)
    k_ids = _look_back(q_ids, dim=2)

    fused = impl == "fast" and dropout_p == 0.0 and qk.device.type == "cpu" and hasattr(torch.ops.aten, _FUSED_OP)
    bias_args = (n_buckets, attend_across_buckets)
    rows = n_chunks * c * k_ids.shape[-1]  # bias entries of one (batch, head, round)
    step = max(1, SLAB_ELEMENTS // rows)  # slabs of (batch, head, round) rows; one under export (G symbolic)
    if fused:  # flash kernel forward; backward recomputes each slab's logits (nothing attention-sized is kept)
        out, lse = _FusedChunkAttention.apply(q_s, k_s, v_s, q_ids, k_ids, bias_args, d**-0.5, step)
    else:
        outs, lses = [], []
        for part in [slice(None)] if impl == "export" else [slice(g, g + step) for g in range(0, G, step)]:
            bias = duplicate_corrected_bias(q_ids[:, part], k_ids[:, part], *bias_args, q_s.dtype, impl == "export")
            k_w, v_w = _look_back(k_s[part]), _look_back(v_s[part])
            out, lse = chunk_attention(q_s[part], k_w, v_w, bias, d**-0.5, dropout_p)
            outs.append(out)
            lses.append(lse)
        out, lse = (torch.cat(outs), torch.cat(lses)) if len(outs) > 1 else (outs[0], lses[0])
    out, lse = out.reshape(-1, d), lse.reshape(B, h, n_hashes, Np)

    # undo the sort (each token's place in every round), then merge the rounds by their attention mass
    place = torch.empty_like(order).scatter_(-1, order, pos.expand_as(order))  # (B, h, R, Np)
    place = place + torch.arange(G, device=qk.device).view(B, h, n_hashes, 1) * Np
    out = out.index_select(0, place.flatten()).view(B, h, n_hashes, Np, d)
    lse = lse.flatten().index_select(0, place.flatten()).view(B, h, n_hashes, Np, 1)
    weights = lse.softmax(dim=2).to(out.dtype)
    return (out * weights).sum(dim=2)[:, :, :N]


def fast_hash_buckets(x: Tensor, rotations: Tensor, n_buckets: int) -> Tensor:
    """:func:`hash_buckets` without materialising ``[xR; -xR]``: the same ids, ties included.

    ``argmax([xR; -xR])`` is ``argmax(xR)`` when ``max(xR) >= max(-xR)`` (the first half wins ties), else
    ``n_buckets / 2 + argmin(xR)``. Hashed in float32 with autocast off: bucket ids are discrete, and a
    bf16 projection would move tokens across bucket borders.
    """
    B, h, N, _ = x.shape
    n_hashes = rotations.shape[1]
    if n_buckets == 1:
        return x.new_zeros(B, h, n_hashes, N, dtype=torch.long)
    no_autocast = torch.amp.is_autocast_available(x.device.type)  # not on "meta" (FLOP counting)
    with torch.autocast(x.device.type, enabled=False) if no_autocast else contextlib.nullcontext():
        rotated = torch.einsum("bhnd,drk->bhrnk", x.float(), rotations.to(x.device, torch.float32))
    top, top_at = rotated.max(dim=-1)
    bottom, bottom_at = rotated.min(dim=-1)
    return torch.where(top >= -bottom, top_at, bottom_at + rotated.shape[-1])


def sorted_rows(x: Tensor, order: Tensor) -> Tensor:
    """Rows of ``x (B, h, Np, e)`` in every round's order ``(B, h, R, Np)`` -> ``(B*h*R*Np, e)``.

    One ``index_select`` of contiguous rows; ``x`` may be laid out as ``(B, Np, h, e)`` (a projection
    split into heads), which is read in place.
    """
    B, h, Np, e = x.shape
    batch = torch.arange(B, device=x.device).view(B, 1, 1, 1)
    head = torch.arange(h, device=x.device).view(1, h, 1, 1)
    if h > 1 and x.transpose(1, 2).is_contiguous():
        rows, index = x.transpose(1, 2).reshape(-1, e), (batch * Np + order) * h + head
    else:
        rows, index = x.reshape(-1, e), (batch * h + head) * Np + order
    return rows.index_select(0, index.flatten())


def duplicate_corrected_bias(
    q_ids: Tensor,
    k_ids: Tensor,
    n_buckets: int,
    attend_across_buckets: bool,
    dtype: torch.dtype,
    functional: bool = False,
) -> Tensor:
    """Additive attention bias ``(..., c, w)`` from bucket ids ``q_ids (R, ..., c)``, ``k_ids (R, ..., w)``.

    Index 0 of the first axis is the round that sorted the chunk, the others the remaining rounds. A key
    of another bucket (or padding) gets ``MASK_VALUE``, a visible key ``-log(#rounds in which the pair
    shares a bucket)`` (Reformer's duplicate correction, as the reference subtracts it), a query's own
    key ``SELF_MASK_VALUE`` (added to its logit rather than replacing it: the result is the same, since
    either way it only counts when nothing else is visible, and then it is the whole softmax).

    Why it is written this way: the bias is as large as the attention matrix, and on the CPU its cost
    is the memory written and read. Each pair gets a one-byte code (``visible + 2 * shared rounds``,
    the query's own key a code of its own), computed with broadcast subtractions of small integers and
    ``logical_not`` (which is ``== 0``; a broadcast ``==`` is an order of magnitude slower), and one table
    look-up turns the codes into the bias: about 40 bytes of memory traffic per entry instead of ~150.
    ``functional`` avoids writes into views and dtype views (``torch.export`` needs that).
    """
    c, w = q_ids.shape[-1], k_ids.shape[-1]
    n_hashes = q_ids.shape[0]

    def as_uint8(mask: Tensor) -> Tensor:  # a free reinterpretation, or a copy where export needs one
        return mask.to(torch.uint8) if functional else mask.view(torch.uint8)

    def same_bucket(o: int) -> Tensor:  # (..., c, w) uint8: 1 where the pair shares round o's bucket
        return as_uint8(torch.logical_not(q_ids[o].unsqueeze(-1) - k_ids[o].unsqueeze(-2)))

    if attend_across_buckets:  # only padding is hidden; every round counts, at least once
        visible = as_uint8(k_ids[0] != n_buckets).unsqueeze(-2)
        code, first = visible + 2 * same_bucket(0), 1
    else:  # the sorting round decides; a visible pair's count is 1 + the other rounds
        code, first = same_bucket(0), 1
    for o in range(first, n_hashes):
        code = code + 2 * same_bucket(o) if functional else code.add_(same_bucket(o), alpha=2)
    own = 2 * n_hashes + 2  # above every count code
    if functional:
        code = torch.where(torch.eye(c, w, dtype=torch.bool, device=code.device), own, code)
    else:
        code[..., :c].diagonal(dim1=-2, dim2=-1).fill_(own)
    table = _bias_table(n_hashes, attend_across_buckets, dtype, code.device)
    if functional:
        return F.embedding(code.int(), table).squeeze(-1)
    # a 1-D index_select reads the table 2.3x faster than embedding's rows of one value (4M codes: 14 vs 27 ms)
    return table.view(-1).index_select(0, code.reshape(-1).int()).view(code.shape)


def _bias_table(n_hashes: int, attend_across_buckets: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(2 R + 3, 1)`` bias per code of :func:`duplicate_corrected_bias`: even codes hidden, odd codes
    ``1 + 2 s`` visible (``s`` rounds sharing the bucket besides the sorting round, or all rounds when
    attending across buckets), the last the query's own key."""
    table = torch.full((2 * n_hashes + 3, 1), MASK_VALUE, dtype=torch.float64)
    for s in range(n_hashes + 1):
        table[1 + 2 * s] = -math.log(max(s, 1) if attend_across_buckets else s + 1)
    table[-1] = SELF_MASK_VALUE
    return table.to(device, dtype)


def chunk_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + bias) v`` and its log-sum-exp for ``q (..., c, d)``, ``k, v (..., w, d)``.

    Explicit operators, differentiated by autograd (the export path, dropout, devices without the fused
    kernel).
    """
    lead = q.shape[:-2]
    logits = torch.baddbmm(bias.flatten(0, -3), q.flatten(0, -3), k.flatten(0, -3).transpose(1, 2), alpha=scale)
    lse = logits.logsumexp(dim=-1, keepdim=True)
    probs = (logits - lse).exp()
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    out = probs.to(v.dtype) @ v.flatten(0, -3)
    return out.view(*lead, *out.shape[-2:]), lse.view(lead + lse.shape[-2:-1])


class _FusedChunkAttention(torch.autograd.Function):
    """Chunk attention with its log-sum-exp through PyTorch's CPU flash-attention kernel, slab by slab.

    ``q, k, v (G, n_chunks, c, d)`` in sorted order; each chunk attends to itself and the previous chunk
    (the window is built per slab). The kernel returns the log-sum-exp the round merge needs
    (``F.scaled_dot_product_attention`` does not) but has no gradient for it, so the backward is written
    here, FlashAttention-style: each slab's bias and probabilities ``p = exp(s - lse)`` are recomputed
    from ``q, k`` and the bucket ids, and with ``D = rowsum(dO * O)`` the logits' gradient is
    ``p * (dO v^T - D + dlse)``. Only ``q, k, v``, the ids, the output and the log-sum-exp are kept for
    the backward: nothing of the attention's size.
    """

    @staticmethod
    def forward(ctx, q, k, v, q_ids, k_ids, bias_args, scale, step):
        k, v = k.to(q.dtype), v.to(q.dtype)
        outs, lses = [], []
        for g in range(0, q.shape[0], step):
            part = slice(g, g + step)
            bias = duplicate_corrected_bias(q_ids[:, part], k_ids[:, part], *bias_args, q.dtype)
            k_w, v_w = _look_back(k[part]), _look_back(v[part])
            out, lse = getattr(torch.ops.aten, _FUSED_OP)(q[part], k_w, v_w, attn_mask=bias, scale=scale)
            outs.append(out)
            lses.append(lse)
        out, lse = (torch.cat(outs), torch.cat(lses)) if len(outs) > 1 else (outs[0], lses[0])
        ctx.save_for_backward(q, k, v, q_ids, k_ids, out, lse)
        ctx.bias_args, ctx.scale, ctx.step = bias_args, scale, step
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, q_ids, k_ids, out, lse = ctx.saved_tensors
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.to(out.dtype)
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for g in range(0, q.shape[0], ctx.step):
            part = slice(g, g + ctx.step)
            qp, go = q[part].flatten(0, 1), grad_out[part].flatten(0, 1)  # (S * n_chunks, c, d)
            kp, vp = _look_back(k[part]).flatten(0, 1), _look_back(v[part]).flatten(0, 1)  # (S * n_chunks, w, d)
            bias = duplicate_corrected_bias(q_ids[:, part], k_ids[:, part], *ctx.bias_args, q.dtype).flatten(0, 1)
            probs = torch.baddbmm(bias, qp, kp.transpose(1, 2), alpha=ctx.scale)
            probs.sub_(lse[part].flatten(0, 1).unsqueeze(-1).to(probs.dtype)).exp_()
            dv[part] = _look_back_grad((probs.transpose(1, 2) @ go).view(*v[part].shape[:2], -1, v.shape[-1]))
            # d logits = p * (dO v^T - D + dlse), D = rowsum(dO * O)
            shift = (go * out[part].flatten(0, 1)).sum(-1) - grad_lse[part].flatten(0, 1).to(go.dtype)
            grad_logits = (go @ vp.transpose(1, 2)).sub_(shift.unsqueeze(-1)).mul_(probs)
            dq[part] = (grad_logits @ kp).mul_(ctx.scale).view_as(dq[part])
            dk_w = (grad_logits.transpose(1, 2) @ qp).mul_(ctx.scale)
            dk[part] = _look_back_grad(dk_w.view(*k[part].shape[:2], -1, k.shape[-1]))
        return dq, dk, dv, None, None, None, None, None


def _look_back(x: Tensor, dim: int = 1) -> Tensor:
    """Chunk ``i`` sees chunks ``i`` and ``i - 1`` (cyclic): ``(G, n_chunks, c, d) -> (G, n_chunks, 2c, d)``
    for ``dim=1`` (the chunk axis; the next axis holds the chunk's tokens)."""
    return x if x.shape[dim] == 1 else torch.cat([x, x.roll(1, dims=dim)], dim=dim + 1)


def _look_back_grad(grad: Tensor) -> Tensor:
    """The gradient of :func:`_look_back`: a chunk's own part plus what the next chunk saw of it."""
    if grad.shape[1] == 1:
        return grad
    c = grad.shape[2] // 2
    return grad[:, :, :c] + grad[:, :, c:].roll(-1, dims=1)


def _id_dtype(n_buckets: int) -> torch.dtype:
    """The smallest integer type holding bucket ids and the padding id (comparisons read less memory)."""
    return torch.uint8 if n_buckets < 256 else torch.int16 if n_buckets < 2**15 else torch.int32


def lsh_attention_reference(
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
    same projections and conventions (the SCT ablation "LSH vs full attention"). ``impl`` picks the
    path of :func:`lsh_attention` (``"export"`` for ONNX; all three compute the same function).
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
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if bucket_size < 1 or n_hashes < 1:
            raise ValueError(f"bucket_size and n_hashes must be >= 1, got {bucket_size} and {n_hashes}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.bucket_size, self.n_hashes, self.seed = bucket_size, n_hashes, seed
        self.full_attention = full_attention
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
        self._eval_rotations: dict[tuple[int, ...], Tensor] = {}
        self.qk = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def rotations(self, seq_len: int) -> Tensor:
        """Fresh rotations in training; in eval the ones drawn from ``seed``, kept per setting.

        Keeping them spares a draw per call and lets ``torch.export`` (which cannot trace a
        ``torch.Generator``) see a constant: run the module once in eval mode before exporting it.
        """
        n_buckets = num_buckets(seq_len, self.bucket_size)
        if self.training:
            return random_rotations(self.head_dim, self.n_hashes, n_buckets)
        key = (self.head_dim, self.n_hashes, n_buckets, self.seed)
        if key not in self._eval_rotations:
            generator = torch.Generator().manual_seed(self.seed)
            self._eval_rotations[key] = random_rotations(*key[:3], generator)
        return self._eval_rotations[key]

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        qk = self.qk(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        v = self.v(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.full_attention:
            out = dense_shared_qk_reference(qk.float(), v.float(), key_padding_mask).to(v.dtype)
        else:
            drop = self.attn_drop if self.training else 0.0
            rotations = self.rotations(N)
            out = lsh_attention(
                qk, v, self.n_hashes, self.bucket_size, rotations, key_padding_mask, dropout_p=drop, impl=self.impl
            )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
