import pytest
import torch
from timm.models.swin_transformer import get_relative_position_index
from timm.models.swin_transformer import window_partition as timm_window_partition

from kinetoscope.layers import (
    Attention,
    PatchEmbed3d,
    RelativePositionBias,
    attention,
    check_video_input,
    dense_attention_reference,
    drop_path_schedule,
    effective_window,
    inflate_conv_weight,
    relative_position_index,
    shifted_window_mask,
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


def test_relative_position_index_equals_timm():
    torch.testing.assert_close(relative_position_index((1, 7, 7)), get_relative_position_index(7, 7))
    rpb = RelativePositionBias((2, 4, 4), num_heads=3)
    assert rpb.relative_position_bias_table.shape == (3 * 7 * 7, 3)
    assert rpb().shape == (3, 32, 32)
    # a smaller window reads the same table with its own offsets: the diagonal is offset 0 everywhere
    small = rpb((1, 2, 2))
    center = rpb.relative_position_bias_table[(2 - 1) * 49 + 3 * 7 + 3]
    torch.testing.assert_close(small[:, 0, 0], center)


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
