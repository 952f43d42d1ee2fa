import pytest
import torch
from timm.models.swin_transformer import get_relative_position_index
from timm.models.swin_transformer import window_partition as timm_window_partition

from kinetoscope.layers import (
    KEY_MASK_VALUE,
    Attention,
    PatchEmbed3d,
    PreNormBlock,
    attention,
    check_video_input,
    dense_attention_reference,
    drop_path_schedule,
    effective_window,
    geometry_buffer,
    inflate_conv_weight,
    key_padding_bias,
    relative_position_index,
    resample_2d,
    shifted_window_mask,
    window_coords,
    window_padding_bias,
    window_partition,
    window_reverse,
)


def test_attention_matches_dense_reference_with_bias_and_logits():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    bias = torch.randn(4, 10, 10)
    out, logits = attention(q, k, v, bias)
    assert logits is None
    torch.testing.assert_close(out, dense_attention_reference(q, k, v, bias), rtol=1e-5, atol=1e-5)
    out2, logits = attention(q, k, v, bias, return_logits=True)
    torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, q @ k.transpose(-2, -1) / 8**0.5)


@pytest.mark.parametrize(
    "q_shape, bias_shape",
    [
        ((2, 3, 4, 2, 5, 8), (3, 1, 2, 5, 5)),  # PST's windows: bias varies along groups, shared by windows
        ((2, 3, 4, 2, 5, 8), (2, 3, 4, 2, 5, 5)),
        ((2, 3, 4, 2, 5, 8), (5, 5)),
        ((2, 3, 4, 2, 5, 8), None),
        ((2, 5, 8), (2, 5, 5)),  # no heads axis
        ((2, 5, 8), None),
    ],
)
def test_attention_of_any_rank_runs_sdpa_on_4d_and_matches_the_reference(q_shape, bias_shape, monkeypatch):
    # ONNX's attention takes 4-D (batch, heads, N, d) only; other ranks are folded into that shape
    import torch.nn.functional as F

    ranks, sdpa = [], F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda q, *a, **kw: ranks.append(q.dim()) or sdpa(q, *a, **kw)
    )
    q, k, v = (torch.randn(q_shape) for _ in range(3))
    bias = torch.randn(bias_shape) if bias_shape else None
    out, _ = attention(q, k, v, bias)
    assert ranks == [4]
    torch.testing.assert_close(out, dense_attention_reference(q, k, v, bias), rtol=1e-5, atol=1e-5)


def test_attention_module_logits_and_cross_stage_bias():
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    out, logits = attn(x, return_logits=True)
    assert logits.shape == (2, 4, 7, 7)
    torch.testing.assert_close(out, attn(x), rtol=1e-5, atol=1e-5)
    # an additive bias of alpha * previous logits changes the result exactly as softmax(A + alpha A')
    prev = torch.randn(2, 4, 7, 7)
    q, k, v = attn.split_heads(x)
    expected = attn.merge_heads(dense_attention_reference(q, k, v, 0.5 * prev))
    torch.testing.assert_close(attn(x, attn_bias=0.5 * prev), expected, rtol=1e-5, atol=1e-5)


def test_window_partition_roundtrip_and_timm_order():
    x = torch.randn(2, 4, 14, 21, 3)
    w = window_partition(x, (2, 7, 7))
    assert w.shape == (2 * 2 * 2 * 3, 2 * 7 * 7, 3)
    torch.testing.assert_close(window_reverse(w, (2, 7, 7), (4, 14, 21)), x)
    # with a temporal window of 1 the order of windows and cells is timm's 2D order, frame by frame
    frame = x[:, 0]  # (B, H, W, C)
    ours = window_partition(x[:, :1], (1, 7, 7))
    theirs = timm_window_partition(frame, (7, 7)).reshape(-1, 49, 3)
    torch.testing.assert_close(ours, theirs)


def test_relative_position_index_equals_timm_reads_other_coordinates_and_clamps():
    torch.testing.assert_close(relative_position_index((1, 7, 7)), get_relative_position_index(7, 7))
    # a smaller window reads the same (2, 4, 4) table with its own offsets: the diagonal is offset 0 everywhere
    small = relative_position_index((2, 4, 4), window_coords((1, 2, 2)))
    assert small.shape == (4, 4) and (small.diagonal() == (2 - 1) * 49 + 3 * 7 + 3).all()
    # the cell (0, 1) below cell (1, 1): offset (0, +1, 0) -> row (0 + 1) * 49 + (1 + 3) * 7 + (0 + 3)
    assert small[3, 1] == 49 + 4 * 7 + 3
    # a temporal offset of 5 is beyond the 2-frame table: clamped to +1
    q, k = torch.tensor([[5, 0, 0]]), torch.tensor([[0, 0, 0]])
    assert relative_position_index((2, 4, 4), q, k).item() == 2 * 49 + 3 * 7 + 3


def test_key_padding_bias_hides_padding_and_stays_finite_in_half_precision():
    bias = window_padding_bias((1, 5, 3), (1, 4, 4))  # a 5x3 map padded to 8x4: two windows
    assert bias.shape == (2, 1, 1, 16)
    real = torch.zeros(8, 4, dtype=torch.bool)
    real[:5, :3] = True
    expected = key_padding_bias(window_partition(real[None, None, ..., None], (1, 4, 4))[..., 0])
    torch.testing.assert_close(bias[:, 0, 0], expected)
    assert set(bias.unique().tolist()) == {0.0, KEY_MASK_VALUE}
    assert window_padding_bias((2, 8, 4), (1, 4, 4)) is None
    for dtype in (torch.float16, torch.bfloat16):
        logits = torch.tensor([[30.0, -40.0, 5.0]], dtype=dtype)
        masked = logits + key_padding_bias(torch.tensor([[True, False, False]])).to(dtype)
        assert torch.isfinite(masked).all()
        probs = masked.float().softmax(-1)
        assert probs[0, 0] == 1.0 and probs[0, 1:].sum() == 0.0
        all_masked = (logits + key_padding_bias(torch.zeros(1, 3, dtype=torch.bool)).to(dtype)).float().softmax(-1)
        assert torch.isfinite(all_masked).all()  # -inf would give NaN here


def test_geometry_buffer_is_built_once_kept_out_of_checkpoints_and_never_on_meta():
    module = torch.nn.Linear(2, 2)
    calls = []

    def build():
        calls.append(1)
        return torch.arange(3)

    with torch.inference_mode():
        first = geometry_buffer(module, "index_3", build, torch.device("cpu"))
    assert not first.is_inference()  # usable by autograd later
    assert geometry_buffer(module, "index_3", build, torch.device("cpu")) is first and len(calls) == 1
    assert "index_3" not in module.state_dict() and dict(module.named_buffers())["index_3"] is first
    with torch.device("meta"):
        meta = torch.nn.Linear(2, 2)
    assert geometry_buffer(meta, "index_3", build, torch.device("meta")).is_meta
    assert "index_3" not in dict(meta.named_buffers())


def test_pre_norm_block_transition_shortcut_and_extras():
    torch.manual_seed(0)

    class Halve(torch.nn.Module):  # an "attention" that halves the token count and passes an extra on
        def forward(self, x, scale):
            return x[:, ::2] * scale, "extra"

    class Pool(torch.nn.Module):
        def forward(self, x, scale):
            return x[:, ::2]

    blk = PreNormBlock(8, Halve(), mlp_ratio=2.0, out_dim=12, shortcut=Pool()).eval()
    x = torch.randn(2, 6, 8)
    out, extra = blk(x, 3.0)
    y = x[:, ::2] + blk.norm1(x)[:, ::2] * 3.0
    expected = blk.proj(blk.norm2(y)) + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(out, expected)
    assert extra == "extra" and out.shape == (2, 3, 12)
    attn_only = PreNormBlock(8, torch.nn.Identity(), mlp_ratio=0)
    assert attn_only.mlp is None and attn_only.norm2 is None
    torch.testing.assert_close(attn_only(x), x + attn_only.norm1(x))


def test_resample_2d_keeps_prefix_tokens_and_reads_square_grids():
    embed = torch.randn(1, 1 + 16, 8)
    out = resample_2d(embed, None, (6, 6), num_prefix_tokens=1)
    assert out.shape == (1, 37, 8)
    torch.testing.assert_close(out[:, 0], embed[:, 0])
    torch.testing.assert_close(out[:, 1:], resample_2d(embed[:, 1:], (4, 4), (6, 6)))
    with pytest.raises(ValueError, match="not a square grid"):
        resample_2d(torch.randn(1, 1 + 15, 8), None, (4, 4), num_prefix_tokens=1)


def test_shifted_window_mask_matches_swin_regions():
    mask = shifted_window_mask((1, 14, 14), (1, 7, 7), (0, 3, 3))
    assert mask.shape == (4, 49, 49)
    # the first window is never split; the last one is split into 4 regions
    assert (mask[0] == 0).all()
    last = mask[3]
    assert (last < 0).any() and set(last.unique().tolist()) == {-100.0, 0.0}
    # token (0,0) of the last window (region A) and token (6,6) (region D) must not see each other
    assert last[0, 48] == -100.0 and last[0, 1] == 0.0


def test_effective_window_shrinks_like_swin():
    assert effective_window((16, 7, 7), (1, 7, 7), (0, 3, 3)) == ((1, 7, 7), (0, 0, 0))
    assert effective_window((16, 14, 14), (1, 7, 7), (0, 3, 3)) == ((1, 7, 7), (0, 3, 3))


def test_patch_embed_pads_or_names_valid_sizes():
    pe = PatchEmbed3d((2, 4, 4), 3, 8)
    assert pe(torch.randn(1, 3, 5, 30, 30)).shape == (1, 8, 3, 8, 8)
    strict = PatchEmbed3d((2, 4, 4), 3, 8, pad=False)
    with pytest.raises(ValueError, match="frames 5 is not divisible by the tubelet size 2"):
        strict(torch.randn(1, 3, 5, 32, 32))


STEM = ((16, 3, (2, 2, 2)), (32, 3, (1, 2, 2)), (8, 3, (1, 2, 2)))  # cst_nano's, at 8 channels


def test_conv_stem_gives_the_tubelet_grid_and_sees_past_its_tubelet():
    linear, stem = PatchEmbed3d((2, 8, 8), 3, 8, pad=False), PatchEmbed3d((2, 8, 8), 3, 8, pad=False, convs=STEM)
    x = torch.randn(1, 3, 8, 32, 32)
    assert stem(x).shape == linear(x).shape == (1, 8, 4, 4, 4)
    # a pixel one row above token (0, 1, 1)'s tubelet (rows and columns 8-15): only the stem's token sees it
    y = x.clone()
    y[0, :, 0, 7, 10] += 1.0
    with torch.no_grad():
        stem.eval()
        assert torch.equal(linear(y)[..., 0, 1, 1], linear(x)[..., 0, 1, 1])
        assert not torch.allclose(stem(y)[..., 0, 1, 1], stem(x)[..., 0, 1, 1])
    with pytest.raises(ValueError, match=r"strides multiply to \(2, 4, 4\).*patch \(2, 8, 8\)"):
        PatchEmbed3d((2, 8, 8), 3, 8, convs=STEM[:2] + ((8, 3, 1),))
    with pytest.raises(ValueError, match="ends at 32 channels"):
        PatchEmbed3d((2, 8, 8), 3, 8, convs=STEM[:2] + ((32, 3, (1, 2, 2)),))


@pytest.mark.parametrize(
    "shape, dtype, match",
    [
        ((1, 8, 3, 32, 32), torch.float32, r"looks like \(B, T, C, H, W\)"),
        ((1, 8, 32, 32, 3), torch.float32, r"looks like \(B, T, H, W, C\)"),
        ((3, 8, 32, 32), torch.float32, "add a batch dimension"),
        ((1, 3, 8, 32, 32), torch.uint8, "float tensor"),
    ],
)
def test_check_video_input_errors(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        check_video_input(torch.zeros(shape, dtype=dtype), 3)


def test_inflation_keeps_static_response():
    w2 = torch.randn(4, 3, 3, 3)
    w3 = inflate_conv_weight(w2, 5)
    img = torch.randn(1, 3, 9, 9)
    clip = img[:, :, None].expand(1, 3, 5, 9, 9)
    out2 = torch.nn.functional.conv2d(img, w2)
    out3 = torch.nn.functional.conv3d(clip, w3)
    torch.testing.assert_close(out3[:, :, 0], out2, rtol=1e-5, atol=1e-5)
    centre = inflate_conv_weight(w2, 3, center=True)
    assert torch.equal(centre[:, :, 1], w2) and centre[:, :, 0].abs().sum() == 0


def test_drop_path_schedule():
    assert drop_path_schedule(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert drop_path_schedule(0.3, 1) == [0.0]
