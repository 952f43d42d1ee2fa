import pytest
import torch

from kinetoscope.layers.temporal_shift import cell_offsets, channel_shift, patch_shift, source_frames


def test_shift_then_shift_back_is_identity():
    x = torch.randn(2, 9, 3, 49, 8)
    for pattern in "ABCD":
        off = cell_offsets(pattern, (7, 7))
        y = patch_shift(x, off, time_dim=1, cell_dim=3)
        assert not torch.equal(y, x)
        torch.testing.assert_close(patch_shift(y, off, time_dim=1, cell_dim=3, inverse=True), x)


def test_pattern_c_source_frames_match_the_paper_figure():
    # Pattern C (paper Fig. 2c): offsets [[-4, 1, 2], [-1, 0, 3], [-2, -3, 4]]; a patch with offset p moves
    # p frames forward, so output frame t reads input frame (t - p) mod 9 (cyclic padding).
    off = cell_offsets("C", (3, 3))
    assert off.tolist() == [-4, 1, 2, -1, 0, 3, -2, -3, 4]
    expected = torch.tensor(
        [
            [4, 8, 7, 1, 0, 6, 2, 3, 5],
            [5, 0, 8, 2, 1, 7, 3, 4, 6],
            [6, 1, 0, 3, 2, 8, 4, 5, 7],
            [7, 2, 1, 4, 3, 0, 5, 6, 8],
            [8, 3, 2, 5, 4, 1, 6, 7, 0],
            [0, 4, 3, 6, 5, 2, 7, 8, 1],
            [1, 5, 4, 7, 6, 3, 8, 0, 2],
            [2, 6, 5, 8, 7, 4, 0, 1, 3],
            [3, 7, 6, 0, 8, 5, 1, 2, 4],
        ]
    )
    assert torch.equal(source_frames(off, 9), expected)
    # on a clip whose frame t is filled with the value t, shifting yields exactly that table
    clip = torch.arange(9.0).view(1, 9, 1, 1).expand(1, 9, 9, 1)  # (B, T, cells, C)
    shifted = patch_shift(clip, off, time_dim=1, cell_dim=2)
    assert torch.equal(shifted[0, :, :, 0].long(), expected)
    # every frame of the 3x3 grid sees 9 different frames: the "C-9" of the paper
    assert all(len(set(row.tolist())) == 9 for row in expected)


@pytest.mark.parametrize("pattern, frames", [("A", 3), ("B", 4), ("C", 9), ("D", 16)])
def test_patterns_cover_the_paper_frame_counts(pattern, frames):
    assert len(set(cell_offsets(pattern, (4, 4) if pattern == "D" else (6, 6)).tolist())) == frames


def test_pattern_tiles_from_window_origin():
    off = cell_offsets("C", (7, 7)).view(7, 7)
    assert off[0, 0] == off[3, 3] == off[6, 6] == -4
    assert off[2, 2] == off[5, 5] == 4


def test_channel_shift_moves_a_quarter_of_each_heads_channels_and_keeps_edges():
    T, heads, c = 4, 2, 16
    x = torch.arange(T, dtype=torch.float).view(1, T, 1).expand(1, T, heads * c).contiguous()
    y = channel_shift(x, heads, fold_div=8, time_dim=1)[0].view(T, heads, c)
    fold = c // 8
    for t in range(T):
        assert (y[t, :, :fold] == max(t - 1, 0)).all()  # from t-1; frame 0 keeps its own
        assert (y[t, :, fold : 2 * fold] == min(t + 1, T - 1)).all()  # from t+1; last frame keeps its own
        assert (y[t, :, 2 * fold :] == t).all()


def test_unknown_pattern_is_named():
    with pytest.raises(ValueError, match="unknown shift pattern 'Z'"):
        cell_offsets("Z", (3, 3))


def test_temporal_shift_attention_moves_cells_keeps_prefix_and_shifts_back():
    from kinetoscope.layers import TemporalShiftAttention

    B, T, W, N, C = 2, 5, 3, 9, 8
    x = torch.randn(B * T * W, 1 + N, C)  # clip-major rows: clips, frames, windows
    seen = []

    def record(rows, scale):
        seen.append(rows)
        return rows * scale

    patch = TemporalShiftAttention(kind="patch", num_heads=2, grid=(3, 3), prefix=1, num_frames=T, windows=W)
    out = patch(x, 2.0, attn=record)
    cells = x.view(B, T, W, 1 + N, C)[:, :, :, 1:]
    expected_in = patch_shift(cells, cell_offsets("C", (3, 3)), time_dim=1, cell_dim=3)
    torch.testing.assert_close(seen[0].view(B, T, W, 1 + N, C)[:, :, :, 1:], expected_in)
    torch.testing.assert_close(seen[0].view(B, T, W, 1 + N, C)[:, :, :, 0], x.view(B, T, W, 1 + N, C)[:, :, :, 0])
    torch.testing.assert_close(out, 2.0 * x)  # shifted back: each token at home, through the attention
    channel = TemporalShiftAttention(kind="channel", num_heads=2, prefix=1, grid=(3, 3))
    out = channel(x, 1.0, attn=record, num_frames=T, windows=W)  # the geometry given per call
    expected = channel_shift(cells, 2, time_dim=1)
    torch.testing.assert_close(out.view(B, T, W, 1 + N, C)[:, :, :, 1:], expected)  # not moved back (released)
    with pytest.raises(ValueError, match="whole clips"):
        patch(x[:-1], 1.0, attn=record)
    with pytest.raises(ValueError, match="'patch' or 'channel'"):
        TemporalShiftAttention(kind="bayer", num_heads=2)
