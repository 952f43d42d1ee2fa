"""STAT: Shrinking Temporal Attention against a per-frame dense reference, the paper's GFLOPs and its
Table 1 / Table 2 ablation deltas, and the nano model end to end."""

import pytest
import torch
import torch.nn.functional as F

from kinetoscope import create_model
from kinetoscope.layers import dense_attention_reference
from kinetoscope.models.stat import STAT, ShrinkingTemporalAttention, neighbour_frames
from kinetoscope.profiling import count_macs


def _naive_neighbours(i: int, T: int, t_o: int, boundary: str) -> list[int]:
    """Eq. 7 window of frame ``i``, written out: ``i - t_o//2 .. i + t_o//2`` without ``i``."""
    out = []
    for j in range(i - t_o // 2, i + t_o // 2 + 1):
        if j == i:
            continue
        if 0 <= j < T:
            out.append(j)
        elif boundary == "clamp":
            out.append(min(max(j, 0), T - 1))
        elif boundary == "cyclic":
            out.append(j % T)
        # "skip": a frame outside the clip has no keys
    return out


def _reference_sta(sta: ShrinkingTemporalAttention, x, grid, long_term: bool, short_term: bool):
    """For every frame: gather CA keys, SA keys of its neighbours and LA keys one by one, dense softmax."""
    B, T = x.shape[:2]
    q, k, v, _, kv_grid = sta.project(x, grid)  # (BT, h, Nq, d), (BT, h, 1 + N_CA, d)
    q, k, v = (t.reshape(B, T, *t.shape[1:]) for t in (q, k, v))
    h, w = kv_grid

    def sa_pool(t):  # (B, heads, N_CA, d) -> (B, heads, N_SA, d), Eq. 3
        img = t.reshape(B, t.shape[1], h, w, -1).permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B*heads, d, h, w)
        img = F.avg_pool2d(img, sta.sa_pool, sta.sa_pool, ceil_mode=True)
        return img.reshape(B, t.shape[1], img.shape[1], -1).transpose(2, 3)

    outs = []
    for i in range(T):
        keys, values = [k[:, i, :, 1:]], [v[:, i, :, 1:]]  # K_CA of frame i
        if short_term:
            for j in _naive_neighbours(i, T, sta.t_o, sta.sa_boundary):
                keys.append(sa_pool(k[:, j, :, 1:]))
                values.append(sa_pool(v[:, j, :, 1:]))
        if long_term:
            keys += [k[:, j, :, :1] for j in range(T)]  # class tokens of all frames
            values += [v[:, j, :, :1] for j in range(T)]
        else:
            keys.append(k[:, i, :, :1])
            values.append(v[:, i, :, :1])
        o = dense_attention_reference(q[:, i], torch.cat(keys, 2), torch.cat(values, 2))  # (B, h, Nq, d)
        outs.append(sta.merge_heads(o))
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("boundary", ["skip", "clamp", "cyclic"])
@pytest.mark.parametrize(
    "T, t_o, q_stride, components, embed",
    [
        (5, 3, 1, "CA+SA+LA", "cls_token"),
        (4, 5, 2, "CA+SA+LA", "cls_token"),  # window wider than half the clip: both boundaries at once
        (3, 7, 1, "CA+SA", "cls_token"),  # window wider than the clip
        (5, 3, 1, "CA+LA", "avgpool"),
        (2, 3, 2, "CA", "cls_token"),
    ],
)
def test_sta_matches_per_frame_dense_reference(boundary, T, t_o, q_stride, components, embed):
    sa, la = "SA" in components, "LA" in components
    sta = ShrinkingTemporalAttention(
        24, 2, kv_stride=2, q_stride=q_stride, t_o=t_o, short_term=sa, long_term=la,
        sa_boundary=boundary, global_embed=embed,
    ).eval()  # fmt: skip
    grid = (6, 5)
    x = torch.randn(2, T, sta.prefix + grid[0] * grid[1], 24)
    with torch.no_grad():
        for p in sta.parameters():  # non-trivial norms and pooling
            p.add_(0.1 * torch.randn_like(p))
        out = sta(x, grid)
        ref = _reference_sta(sta, x, grid, la, sa)
    q_grid = (3, 3) if q_stride == 2 else grid
    assert out.shape == (2, T, sta.prefix + q_grid[0] * q_grid[1], 24)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_neighbour_table_boundary_modes():
    idx, valid = neighbour_frames(4, 3, "skip")
    assert idx.tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert valid.tolist() == [[False, True], [True, True], [True, True], [True, False]]
    assert neighbour_frames(4, 3, "clamp")[0].tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert neighbour_frames(4, 5, "cyclic")[0].tolist() == [[2, 3, 1, 2], [3, 0, 2, 3], [0, 1, 3, 0], [1, 2, 0, 1]]
    with pytest.raises(ValueError, match="odd"):
        neighbour_frames(4, 4, "skip")
    with pytest.raises(ValueError, match="sa_boundary"):
        neighbour_frames(4, 3, "zero")


@pytest.mark.parametrize(
    "components, reach",
    [("CA", {2}), ("CA+SA", {1, 2, 3}), ("CA+LA", {0, 1, 2, 3, 4, 5})],
)
def test_temporal_receptive_field_of_each_component(components, reach):
    """Changing frame 2 moves exactly the frames its attention components reach."""
    sa, la = "SA" in components, "LA" in components
    sta = ShrinkingTemporalAttention(16, 2, kv_stride=2, t_o=3, short_term=sa, long_term=la).eval()
    x = torch.randn(1, 6, 1 + 16, 16)
    y = x.clone()
    y[:, 2] += torch.randn_like(y[:, 2])
    with torch.no_grad():
        diff = (sta(x, (4, 4)) - sta(y, (4, 4))).abs().amax(dim=(0, 2, 3))
    assert {t for t in range(6) if diff[t] > 1e-6} == reach


# ------------------------------------------------------------------------------------ FLOPs (meta)
def _gmacs(name: str, frames: int, **kwargs) -> float:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return count_macs(model, (1, 3, frames, 224, 224))[0]


# (GMACs of every variant against the paper: tests/test_models_common.py)


def test_component_ablation_moves_as_table_1():
    """Table 1 (T=16): CA 58.2, +SA 59.0, +LA 58.4, all 59.1 GFLOPs."""
    g = {c: _gmacs("stat_16", 16, attention=c) for c in ("CA", "CA+SA", "CA+LA", "CA+SA+LA")}
    assert g["CA"] < g["CA+LA"] < g["CA+SA"] < g["CA+SA+LA"]
    assert 0.4 < g["CA+SA"] - g["CA"] < 1.2  # paper +0.8
    assert 0.05 < g["CA+LA"] - g["CA"] < 0.4  # paper +0.2
    assert 0.5 < g["CA+SA+LA"] - g["CA"] < 1.4  # paper +0.9
    assert abs(g["CA"] - 58.2) / 58.2 < 0.05


def test_window_size_ablation_moves_as_table_2():
    """Table 2 (T=32): t_o 3, 5, 7, 9 -> 118.6, 120.1, 121.5, 123.0 GFLOPs."""
    paper = {3: 118.6, 5: 120.1, 7: 121.5, 9: 123.0}
    ours = {t: _gmacs("stat_32", 32, t_o=t) for t in paper}
    for t in paper:
        assert abs(ours[t] - paper[t]) / paper[t] < 0.02
    steps = [ours[t + 2] - ours[t] for t in (3, 5, 7)]
    assert all(1.0 < s < 2.0 for s in steps)  # paper +1.4 .. +1.5 per two more neighbour frames


def test_stem_ablation_keeps_the_cost_and_the_grid():
    """Table 5: 1, 3 or 5 convs with the transformer blocks they replace; cost stays about the same."""
    base = _gmacs("stat_16", 16)
    for convs, blocks in ((1, 16), (5, 13)):
        with torch.device("meta"):
            model = create_model("stat_16", stem_convs=convs)
        assert len(model.blocks) == blocks
        assert abs(count_macs(model, (1, 3, 16, 224, 224))[0] - base) / base < 0.05
    with pytest.raises(ValueError, match="stem_convs"):
        create_model("stat_nano", stem_convs=2)


# ------------------------------------------------------------------------------------------ models
def test_stat_nano_forward_backward_and_other_inputs():
    model = create_model("stat_nano", num_classes=5)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    x = torch.randn(2, 3, 16, 64, 64)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.pos_embed_temporal.grad is not None
    assert model.cls_token is None and model.temporal_agg is None  # avgpool global embedding, l_ta = 0
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 7, 40, 48)).shape == (1, 5)  # odd frames, other size: resampled embeddings
        feats = model.forward_features(x)
    # the last STA block's tokens: 8 token frames, 2x2 patches (64 px / stem stride 8, halved by the Q pooling of
    # stages 2 and 3), no class token
    assert feats.shape == (2, 8, 2 * 2, model.num_features)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(attention="CA"),
        dict(attention="CA+SA", sa_boundary="cyclic"),
        dict(global_embed="cls_token"),
        dict(global_embed="cls_token", l_ta=1),
        dict(l_ta=2, t_o=5, sa_boundary="clamp"),
        dict(ta_mlp_ratio=0),
    ],
)
def test_stat_nano_ablations_run(kwargs):
    model = create_model("stat_nano", num_classes=3, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 32, 32))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert (model.cls_token is None) == (kwargs.get("global_embed", "avgpool") == "avgpool")
    assert (model.temporal_agg is None) == (kwargs.get("l_ta", 0) == 0)


def test_invalid_ablation_arguments_are_named():
    with pytest.raises(ValueError, match="attention must be one of"):
        STAT(attention="SA+LA")
    with pytest.raises(ValueError, match="t_o"):
        create_model("stat_nano", t_o=4)
    with pytest.raises(ValueError, match="global_embed"):
        create_model("stat_nano", global_embed="max")
