"""SCT: LSH attention, image chunk attention, linear pooling, shifted MSA and the paper's numbers."""

import math

import pytest
import torch
import torch.nn.functional as F

from kinetoscope import create_model
from kinetoscope.layers.attention import dense_attention_reference
from kinetoscope.layers.lsh_attention import (
    SELF_MASK_VALUE,
    LSHAttention,
    dense_shared_qk_reference,
    hash_buckets,
    lsh_attention,
    num_buckets,
    random_rotations,
)
from kinetoscope.models.sct import ImageChunkAttention, LinearPooling, ShiftedAttention, ShiftedChunkTransformer
from kinetoscope.profiling import count_params

# ----------------------------------------------------------------------------------------- LSH attention


@pytest.mark.parametrize("n_hashes", [1, 3])
@pytest.mark.parametrize("n", [50, 64])
def test_lsh_with_one_bucket_is_dense_attention(n_hashes, n):
    torch.manual_seed(0)
    qk, v = torch.randn(2, 3, n, 16), torch.randn(2, 3, n, 16)
    pad = torch.zeros(2, n, dtype=torch.bool)
    pad[1, n - 7 :] = True
    out = lsh_attention(qk, v, n_hashes=n_hashes, bucket_size=64, key_padding_mask=pad)
    ref = dense_shared_qk_reference(qk, v, pad)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, : n - 7], ref[1, :, : n - 7], atol=1e-5, rtol=1e-5)


def naive_lsh(qk, v, rotations, bucket_size):
    """Reformer by definition, one query at a time: per round the keys of the query's bucket that sit in
    its chunk or the previous one of the sorted order; keys seen in several rounds weighted once."""
    n, d = qk.shape
    n_buckets = num_buckets(n, bucket_size)
    buckets = hash_buckets(qk[None, None], rotations, n_buckets)[0, 0]  # (R, n)
    n_chunks = math.ceil(n / bucket_size)
    keys = F.normalize(qk, dim=-1)
    out = torch.zeros(n, d)
    for i in range(n):
        logits, values = [], []
        for r in range(buckets.shape[0]):
            rank = (buckets[r] * n + torch.arange(n)).argsort().argsort()
            chunk = rank // bucket_size
            for j in range(n):
                if buckets[r, j] != buckets[r, i]:
                    continue
                if chunk[j] != chunk[i] and (n_chunks == 1 or chunk[j] != (chunk[i] - 1) % n_chunks):
                    continue
                logit = SELF_MASK_VALUE if i == j else float(qk[i] @ keys[j]) / math.sqrt(d)
                shared = int((buckets[:, i] == buckets[:, j]).sum())
                logits.append(logit - math.log(shared))
                values.append(v[j])
        out[i] = torch.tensor(logits).softmax(0) @ torch.stack(values)
    return out


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_lsh_matches_the_per_query_definition(n_hashes):
    torch.manual_seed(1)
    n, d, bucket = 72, 8, 12  # 6 buckets, 6 chunks
    qk, v = torch.randn(n, d), torch.randn(n, d)
    rot = random_rotations(d, n_hashes, num_buckets(n, bucket), torch.Generator().manual_seed(3))
    out = lsh_attention(qk[None, None], v[None, None], bucket_size=bucket, rotations=rot)[0, 0]
    torch.testing.assert_close(out, naive_lsh(qk, v, rot, bucket), atol=1e-5, rtol=1e-4)


def _clustered(n=512, clusters=8, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, d, generator=g), dim=-1) * 40
    label = torch.randperm(n, generator=g) % clusters
    qk = centres[label] + 2.0 * torch.randn(n, d, generator=g)
    values = torch.randn(clusters, d, generator=g)
    v = values[label] + 0.3 * torch.randn(n, d, generator=g)
    return qk[None, None], v[None, None]


def test_lsh_approximates_dense_attention_on_clustered_inputs():
    qk, v = _clustered()
    ref = dense_shared_qk_reference(qk, v)

    def rel_err(out):
        return float((out - ref).norm() / ref.norm())

    errs = {r: rel_err(lsh_attention(qk, v, r, 64, generator=torch.Generator().manual_seed(0))) for r in (1, 8)}
    assert errs[8] < 0.05, errs
    assert errs[8] < errs[1], errs
    # the bound means something: attending to everything alike is far off
    assert rel_err(v.mean(dim=2, keepdim=True).expand_as(v)) > 0.5


def test_lsh_attention_matrix_grows_linearly_with_tokens():
    def attention_entries(n):
        qk, v = torch.randn(1, 2, n, 16), torch.randn(1, 2, n, 16)
        out, probs = lsh_attention(qk, v, n_hashes=4, bucket_size=32, return_attention=True)
        assert out.shape == (1, 2, n, 16)
        return probs.numel()

    small, large = attention_entries(1000), attention_entries(4000)
    assert 3.8 < large / small < 4.0  # 4x the tokens: ~4x the entries (1000 is padded to 32 chunks, 4000 to 125)
    assert large < 2 * 4000**2 / 10  # dense attention: heads x 4000^2 entries


def test_lsh_layer_rotations_are_seeded_in_eval_and_fresh_in_training():
    torch.manual_seed(0)
    layer = LSHAttention(32, num_heads=2, bucket_size=8, n_hashes=2, seed=5)
    x = torch.randn(2, 96, 32)
    layer.eval()
    with torch.no_grad():
        a, b = layer(x), layer(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        layer.seed = 6
        assert (layer(x) - a).abs().max() > 1e-4
    layer.train()
    assert (layer(x) - layer(x)).abs().max() > 1e-4


def test_lsh_layer_full_attention_ablation_equals_lsh_with_one_bucket():
    torch.manual_seed(0)
    lsh = LSHAttention(24, num_heads=3, bucket_size=64, n_hashes=2).eval()
    full = LSHAttention(24, num_heads=3, full_attention=True).eval()
    full.load_state_dict(lsh.state_dict())
    x = torch.randn(2, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(lsh(x), full(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- SCT building blocks


@pytest.mark.parametrize("size", [(8, 8), (10, 13)])
def test_image_chunk_attention_matches_a_per_chunk_loop(size):
    torch.manual_seed(0)
    H, W = size
    c = 4
    layer = ImageChunkAttention(dim=16, depth=2, num_heads=2, chunk=c, mlp_ratio=2.0, dpr=[0.0, 0.0]).eval()
    x = torch.randn(2, H, W, 16)
    with torch.no_grad():
        out = layer(x, lambda blocks, t, *args: _run(blocks, t, *args))
        ref = torch.empty_like(x)
        for i0 in range(0, H, c):
            for j0 in range(0, W, c):
                patch = x[:, i0 : i0 + c, j0 : j0 + c]  # real tokens only: no padding in the reference
                h, w = patch.shape[1:3]
                pos = layer.pos_embed[0].view(c, c, -1)[:h, :w].reshape(h * w, -1)
                t = patch.reshape(2, h * w, -1) + pos
                for blk in layer.blocks:
                    t = blk(t)
                ref[:, i0 : i0 + c, j0 : j0 + c] = t.view(2, h, w, -1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _run(blocks, x, *args):
    for blk in blocks:
        x = blk(x, *args)
    return x


def test_linear_pooling_concatenates_in_the_papers_order():
    pool = LinearPooling(1, 4)
    with torch.no_grad():
        pool.reduction.weight.copy_(torch.eye(4))
        pool.reduction.bias.zero_()
    s = torch.arange(1.0, 17.0).view(1, 4, 4, 1)  # s[i, j] = 4 i + j + 1
    out = pool(s)
    assert out.shape == (1, 2, 2, 4)
    # s'(1,1) = [s(1,1), s(1,2), s(2,1), s(2,2)] (Eq. 4, 1-based)
    assert out[0, 0, 0].tolist() == [1.0, 2.0, 5.0, 6.0]
    assert out[0, 1, 1].tolist() == [11.0, 12.0, 15.0, 16.0]
    assert pool(torch.randn(2, 7, 5, 1)).shape == (2, 4, 3, 4)  # odd sides are zero-padded


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_shifted_msa_matches_a_per_frame_reference(shift):
    torch.manual_seed(0)
    B, T, N, C, heads = 2, 4, 5, 16, 4
    attn = ShiftedAttention(C, heads, shift).eval()
    x = torch.randn(B, T, N, C)
    w_q, w_k, w_v = attn.qkv.weight.chunk(3)
    b_q, b_k, b_v = attn.qkv.bias.chunk(3)

    def split(t):
        return t.view(B, N, heads, C // heads).transpose(1, 2)

    with torch.no_grad():
        out = attn(x)
        for t in range(T):
            q = split(F.linear(x[:, t], w_q, b_q))
            k = split(F.linear(x[:, (t - shift) % T], w_k, b_k))  # Eq. 6: keys of frame t-1, cyclic at t = 0
            v = split(F.linear(x[:, t], w_v, b_v))
            ref = attn.proj(dense_attention_reference(q, k, v).transpose(1, 2).reshape(B, N, C))
            torch.testing.assert_close(out[:, t], ref, atol=1e-5, rtol=1e-5)


def _tiny(**kwargs):
    args = dict(num_classes=5, num_frames=4, img_size=32, dims=(16, 16, 24, 24, 48), depth=1, heads=(2, 2, 2, 2),
                chunk_size=4, clip_dim=16, clip_depth=1, bucket_size=8, n_hashes=2, drop_path_rate=0.0)  # fmt: skip
    args.update(kwargs)
    return ShiftedChunkTransformer(**args).eval()


def test_shifted_msa_is_what_mixes_frames_in_the_frame_encoder():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 32, 32)
    y = x.clone()
    y[:, :, 1] += 1.0  # change frame 1 only
    for shift, changed in [(1, [1, 2]), (0, [1])]:
        model = _tiny(shift_frames=shift)
        with torch.no_grad():
            frames_x, frames_y = model.forward_features(x)[:, :, 0], model.forward_features(y)[:, :, 0]  # frame [CLS]
            diff = (frames_x - frames_y).abs().amax(dim=(0, 2))
        # with the shift, frame 2's keys come from frame 1 (and, after 4 blocks, further frames follow)
        assert set(torch.nonzero(diff > 1e-6).flatten().tolist()) >= set(changed)
        if shift == 0:
            assert torch.nonzero(diff > 1e-6).flatten().tolist() == [1]


def test_ablation_arguments_change_the_structure():
    base = _tiny()
    layer = count_params(_tiny(clip_depth=2)) - count_params(base)
    assert layer == 12 * 16 * 16 + 13 * 16  # one 16-wide pre-norm layer with a 4x MLP
    assert len(_tiny(shift_layers=2).blocks[0].shifted) == 2
    assert _tiny(lsh=False).blocks[0].lsh.attn.full_attention
    with pytest.raises(ValueError, match="dims needs 5 widths"):
        _tiny(dims=(16, 32, 64))
    with pytest.raises(ValueError, match="shift_layers"):
        _tiny(shift_layers=0)


def test_any_frame_count_and_size_run_and_frames_resample():
    model = _tiny()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 7, 45, 37)).shape == (1, 5)  # 7 frames, sizes no chunk divides
        assert model(torch.randn(1, 3, 1, 32, 32)).shape == (1, 5)


# ---------------------------------------------------------------------------------- paper's numbers
# (params and GFLOPs of every variant against Table 3: tests/test_models_common.py)


def test_variants_keep_the_papers_structure():
    with torch.device("meta"):
        model = create_model("sct_s")
    assert len(model.blocks) == 4 and len(model.clip_blocks) == 4 and model.blocks[0].chunk_attn.chunk == 7
    assert model.blocks[3].lsh.attn.bucket_size == 64 and len(model.blocks[0].chunk_attn.blocks) == 4


# ----------------------------------------------------------------------- nano knobs: tubelets, q/k init
def test_tubelet_embedding_reads_frame_pairs_and_reduces_to_frames():
    """``tubelet_size=2`` embeds ``2 x p x p`` tubelets: with the second frame's weights at 0 it is the
    paper's ``p x p`` embedding of the even frames (a reference with every other frame dropped)."""
    torch.manual_seed(0)
    pairs = _tiny(tubelet_size=2, num_frames=4)
    single = _tiny(num_frames=2)
    state = pairs.state_dict()
    w = state["patch_embed.weight"]  # (D, 2 * p * p * 3), the frame axis outermost
    single_w = w[:, : w.shape[1] // 2].clone()
    state["patch_embed.weight"] = torch.cat([single_w, torch.zeros_like(single_w)], dim=1)
    pairs.load_state_dict(state)
    single.load_state_dict({**state, "patch_embed.weight": single_w})
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pairs(x), single(x[:, :, ::2]))
    assert pairs.frames_per_image == 2 and pairs.clip_pos_embed.shape[1] == 1 + 2
    with pytest.raises(ValueError, match="tubelet size 2"):
        pairs(torch.randn(1, 3, 5, 32, 32))


def test_fan_in_query_key_init_switches_the_shifted_msa_on():
    """Frame ``t - 1`` reaches frame ``t`` only through the shifted MSA's attention weights (Eq. 6). At
    ViT's 0.02 init those weights are uniform to a few 1e-4 at nano widths, so changing the content of
    frame 0 barely moves frame 1; drawn at the fan-in scale they depend on it (the issue's lead)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 32, 32)
    y = x.clone()
    y[:, :, 0] = torch.randn_like(y[:, :, 0])  # other content in frame 0 only
    reach = {}
    for init in ("trunc_normal", "fan_in"):
        torch.manual_seed(1)
        model = _tiny(shifted_qk_init=init, shift_frames=1)
        with torch.no_grad():
            fx, fy = model.forward_features(x), model.forward_features(y)
        own = (fx[:, 0] - fy[:, 0]).norm()  # frame 0 itself
        reach[init] = ((fx[:, 1] - fy[:, 1]).norm() / own).item()  # frame 1, through the shifted keys only
    assert reach["fan_in"] > 10 * reach["trunc_normal"], reach
    with pytest.raises(ValueError, match="shifted_qk_init"):
        _tiny(shifted_qk_init="xavier")


def test_init_qk_fan_in_draws_queries_and_keys_only():
    from kinetoscope.layers import Attention

    torch.manual_seed(0)
    attn = Attention(64, 4)
    before = attn.qkv.weight.detach().clone()
    attn.init_qk_fan_in()
    after = attn.qkv.weight.detach()
    assert abs(after[:128].std().item() - 64**-0.5) < 0.1 * 64**-0.5  # q and k rows at 1/sqrt(fan_in)
    torch.testing.assert_close(after[128:], before[128:])  # values untouched


# ------------------------------------------------------------------------ nano knobs: motion stem, frame feature
STEM = ((8, 3, (2, 2, 2)), (8, 3, 1), (16, 3, (1, 2, 2)))  # strides multiply to (tubelet 2, p 4, p 4)


def test_motion_stem_keeps_the_token_grid_and_sees_beyond_its_tubelet():
    torch.manual_seed(0)
    linear, stem = _tiny(tubelet_size=2), _tiny(tubelet_size=2, stem=STEM)
    x = torch.randn(1, 3, 4, 32, 32)
    assert stem.embed_patches(x).shape == linear.embed_patches(x).shape == (2, 8, 8, 16)
    y = x.clone()
    y[0, :, 2, 3, 5] += 1.0  # a pixel of token frame 1 in tiny patch (0, 1); token frame 0 / patch (1, 1) lie beyond
    with torch.no_grad():
        ex, ey = linear.embed_patches(x), linear.embed_patches(y)
        assert torch.equal(ex[0], ey[0]) and torch.equal(ex[1, 1, 1], ey[1, 1, 1])
        ex, ey = stem.embed_patches(x), stem.embed_patches(y)
        assert not torch.allclose(ex[0, 1, 1], ey[0, 1, 1])  # the stem's token sees the next tubelet's pixel
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 6, 45, 37)).shape == (1, 5)  # sizes no patch divides are zero-padded
    with pytest.raises(ValueError, match=r"strides multiply to \(2, 2, 2\).*patch \(2, 4, 4\)"):
        _tiny(tubelet_size=2, stem=STEM[:2] + ((16, 3, 1),))
    with pytest.raises(ValueError, match="ends at 8 channels"):
        _tiny(tubelet_size=2, stem=STEM[:2] + ((8, 3, (1, 2, 2)),))


def test_cls_plus_tokens_frame_feature_adds_the_tokens_mean_to_the_frame_cls():
    torch.manual_seed(0)
    cls_only, both = _tiny(), _tiny(frame_feature="cls+tokens")
    both.load_state_dict(cls_only.state_dict())
    features = torch.randn(2, 4, 1 + 3, 48)  # (B, T, 1 + h w, C): the [CLS] first
    folded = features.clone()
    folded[:, :, 0] = features[:, :, 0] + (features[:, :, 1] + features[:, :, 2] + features[:, :, 3]) / 3
    with torch.no_grad():
        torch.testing.assert_close(both.pool(features), cls_only.pool(folded))
        assert not torch.allclose(both.pool(features), cls_only.pool(features))
    with pytest.raises(ValueError, match="frame_feature"):
        _tiny(frame_feature="tokens")
