"""LSH attention's fast and export paths against the reference path (the step-by-step definition)."""

import importlib
import itertools
import math

import pytest
import torch

from kinetoscope.layers.lsh_attention import (
    LSHAttention,
    fast_hash_buckets,
    hash_buckets,
    lsh_attention,
    lsh_attention_reference,
    num_buckets,
    random_rotations,
)

lsh = importlib.import_module("kinetoscope.layers.lsh_attention")  # the package exports a function of that name


def _inputs(n, d=8, batch=2, heads=3, padded=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk, v = torch.randn(batch, heads, n, d, generator=g), torch.randn(batch, heads, n, d, generator=g)
    mask = None
    if padded:  # a padded tail in one sample, a hole in the other
        mask = torch.zeros(batch, n, dtype=torch.bool)
        mask[-1, n - 5 :] = True
        mask[0, 3] = True
    return qk, v, mask


CASES = [  # (tokens, bucket_size, n_hashes): odd lengths (padded chunks), one chunk, two chunks (both windows
    # see everything), one bucket, 7 rounds (past the polynomial: the log path)
    (37, 8, 1),
    (37, 8, 2),
    (64, 16, 3),
    (50, 16, 4),
    (40, 64, 2),
    (20, 8, 4),
    (29, 4, 7),
]


@pytest.mark.parametrize("impl", ["fast", "export"])
@pytest.mark.parametrize(("n", "bucket", "n_hashes"), CASES)
def test_fast_paths_equal_the_reference(impl, n, bucket, n_hashes):
    for padded in (False, True):
        for across in (False, True):
            qk, v, mask = _inputs(n, padded=padded)
            rot = random_rotations(8, n_hashes, num_buckets(n, bucket), torch.Generator().manual_seed(1))
            args = dict(bucket_size=bucket, rotations=rot, key_padding_mask=mask, attend_across_buckets=across)
            ref = lsh_attention_reference(qk, v, **args)
            with torch.no_grad():  # the fast path's fused kernel
                torch.testing.assert_close(lsh_attention(qk, v, impl=impl, **args), ref, atol=1e-5, rtol=1e-5)
            # with a gradient: the explicit chunk attention, differentiated by autograd
            grads = []
            for path in ("reference", impl):
                a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
                out = lsh_attention(a, b, impl=path, **args)
                (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
                grads.append((out.detach(), a.grad, b.grad))
            for got, want in zip(grads[1], grads[0]):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fast_path_over_several_slabs_equals_the_reference_with_gradients(monkeypatch):
    qk, v, mask = _inputs(100, padded=True)
    rot = random_rotations(8, 3, num_buckets(100, 8), torch.Generator().manual_seed(2))
    monkeypatch.setattr(lsh, "SLAB_ELEMENTS", 1000)  # one (batch, head, round) per slab: 18 slabs
    results = []
    for impl in ("reference", "fast"):
        a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
        out = lsh_attention(a, b, bucket_size=8, rotations=rot, key_padding_mask=mask, impl=impl)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()  # the fused kernel's backward
        results.append((out.detach(), a.grad, b.grad))
    for got, want in zip(*results[::-1]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fast_path_reads_heads_split_from_a_projection_in_place():
    # the layer hands (B, N, h, d) memory viewed as (B, h, N, d); the result must not depend on the layout
    qk, v, _ = _inputs(48)
    rot = random_rotations(8, 2, num_buckets(48, 8), torch.Generator().manual_seed(3))
    strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (qk, v)]
    with torch.no_grad():
        out = lsh_attention(*strided, bucket_size=8, rotations=rot)
    torch.testing.assert_close(out, lsh_attention_reference(qk, v, bucket_size=8, rotations=rot), atol=1e-5, rtol=1e-5)


def test_fast_path_in_bf16_stays_in_bf16_and_close_to_float32():
    qk, v, mask = _inputs(96, d=16, padded=True)
    qk, v = qk.bfloat16().requires_grad_(), v.bfloat16().requires_grad_()
    rot = random_rotations(16, 4, num_buckets(96, 16), torch.Generator().manual_seed(4))
    out = lsh_attention(qk, v, bucket_size=16, rotations=rot, key_padding_mask=mask)
    # the same (bf16-rounded) inputs in float32: the hash is float32 in both, so the buckets agree
    qk32, v32 = qk.detach().float().requires_grad_(), v.detach().float().requires_grad_()
    ref = lsh_attention_reference(qk32, v32, bucket_size=16, rotations=rot, key_padding_mask=mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out.float() * weights).sum().backward()
    (ref * weights).sum().backward()
    assert qk.grad.dtype == torch.bfloat16
    torch.testing.assert_close(qk.grad.float(), qk32.grad, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(v.grad.float(), v32.grad, atol=5e-2, rtol=5e-2)


def test_fast_hash_equals_the_definition_including_ties():
    rot = random_rotations(8, 3, 10, torch.Generator().manual_seed(5))
    x = torch.randn(2, 3, 40, 8)
    x[:, :, :4] = 0.0  # zero vectors: every projection ties at 0
    x[:, :, 4:8] = x[:, :, 8:12]  # duplicated rows
    x[:, :, 12] = -x[:, :, 13]  # opposite rows: max(xR) = max(-xR') ties across the halves
    assert torch.equal(fast_hash_buckets(x, rot, 10), hash_buckets(x, rot, 10))
    assert (fast_hash_buckets(x, rot, 10)[:, :, :, :4] == 0).all()  # ties go to the first bucket


@pytest.mark.parametrize("n_hashes", [1, 2, 4, 7])
@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("functional", [False, True])
def test_bias_from_codes_equals_the_pairwise_definition(n_hashes, across, functional):
    g = torch.Generator().manual_seed(n_hashes)
    n_buckets, c = 3, 5  # few buckets: many pairs share one in several rounds
    q_ids = torch.randint(0, n_buckets + 1, (n_hashes, 2, 4, c), generator=g, dtype=torch.uint8)
    k_ids = torch.cat([q_ids, q_ids.roll(1, dims=2)], dim=-1)  # the look-back window, as the fast path builds it
    bias = lsh.duplicate_corrected_bias(q_ids, k_ids, n_buckets, across, torch.float32, functional)
    want = torch.empty(2, 4, c, 2 * c)
    for idx in itertools.product(range(2), range(4), range(c), range(2 * c)):
        q, k = q_ids[(slice(None), *idx[:3])], k_ids[(slice(None), *idx[:2], idx[3])]
        count = int((q == k).sum())  # rounds in which the pair shares a bucket
        visible = k[0] != n_buckets if across else q[0] == k[0]
        want[idx] = -math.log(max(count, 1)) if visible else lsh.MASK_VALUE
        if idx[3] == idx[2]:  # the query's own key
            want[idx] = lsh.SELF_MASK_VALUE
    torch.testing.assert_close(bias, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("impl", ["fast", "export"])
def test_layer_impls_agree_in_eval_and_training(impl):
    ref = LSHAttention(24, num_heads=3, bucket_size=8, n_hashes=3, impl="reference")
    other = LSHAttention(24, num_heads=3, bucket_size=8, n_hashes=3, impl=impl)
    other.load_state_dict(ref.state_dict())
    x = torch.randn(2, 45, 24)
    ref.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x), ref(x), atol=1e-5, rtol=1e-5)
    ref.train(), other.train()  # fresh rotations from the global RNG: seed both draws alike
    torch.manual_seed(7)
    a = ref(x)
    torch.manual_seed(7)
    torch.testing.assert_close(other(x), a, atol=1e-5, rtol=1e-5)


def test_bad_impl_is_rejected():
    with pytest.raises(ValueError, match="impl"):
        LSHAttention(24, num_heads=3, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        lsh_attention(torch.randn(1, 1, 8, 4), torch.randn(1, 1, 8, 4), impl="fastest")


@pytest.mark.slow
def test_export_path_runs_in_onnxruntime_and_equals_the_reference(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = LSHAttention(32, num_heads=2, bucket_size=8, n_hashes=3, impl="export").eval()
    reference = LSHAttention(32, num_heads=2, bucket_size=8, n_hashes=3, impl="reference").eval()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        layer(x)  # draws the eval rotations eagerly: export sees them as a constant
        want = reference(x)
    path = tmp_path / "lsh.onnx"
    torch.onnx.export(layer, (x,), dynamo=True).save(str(path))
    session = ort.InferenceSession(str(path))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)
