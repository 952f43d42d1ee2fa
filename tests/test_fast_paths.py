"""Fast paths against their reference paths, and torch.compile on every family (nothing here is timed)."""

import pytest
import torch

from kinetoscope import create_model
from kinetoscope.models.pst import ShiftWindowAttention, window_layout_index

SMALL_PST = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2), drop_path_rate=0.0, head_drop_rate=0.0)


@pytest.fixture
def reference_layout():
    """Run PST's window attention on its step-by-step path (roll, partition, shift; and back) in the test."""

    def run(fn):
        ShiftWindowAttention.fused_layout = False
        try:
            return fn()
        finally:
            ShiftWindowAttention.fused_layout = True

    return run


@pytest.mark.parametrize(
    ("kwargs", "frames", "size"),
    [
        ({}, 8, 64),  # divisible maps, shifted windows, channel and patch shift (PST)
        ({}, 8, 60),  # zero padding to the window, cropped afterwards
        ({"window": (2, 7, 7)}, 8, 56),  # PST-dagger: windows over two frames
        ({"shift_back": False}, 4, 70),  # ablation (d): the output stays on the shifted frames
        ({"tps": "patch", "alternate": False, "pattern": "D"}, 8, 45),  # patch shift in every block, pattern D
        ({"tps": None}, 4, 64),  # 2D Swin frame by frame
    ],
)
def test_pst_fused_layout_equals_reference_path(reference_layout, kwargs, frames, size):
    model = create_model("pst_t", num_frames=frames, img_size=size, **{**SMALL_PST, **kwargs})
    x = torch.randn(2, 3, frames, size, size)

    def features_and_grads():
        model.zero_grad()
        out = model.forward_features(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, ref_grads = reference_layout(features_and_grads)
    out, grads = features_and_grads()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)  # both only move rows: the same numbers
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_window_layout_is_built_once_per_geometry(monkeypatch):
    """A geometry's two gathers come from one window_layout_index call, kept; the next forward builds none."""
    from kinetoscope.models import pst

    calls = []
    monkeypatch.setattr(pst, "window_layout_index", lambda *a: calls.append(a) or window_layout_index(*a))
    model = create_model("pst_t", num_frames=4, img_size=64, **SMALL_PST).eval()
    attentions = [m for m in model.modules() if isinstance(m, ShiftWindowAttention)]
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 64, 64))
        assert len(calls) == len(attentions)  # one geometry per attention layer at this size
        model(torch.randn(1, 3, 4, 64, 64))
    assert len(calls) == len(attentions)


def test_window_layout_index_against_a_loop():
    D, Hp, Wp, wh, ww, sh, sw, crop = 3, 6, 4, 3, 2, 1, 1, (5, 4)
    offsets = torch.tensor([0, 1, -1, 2, 0, 1])  # pattern ((0, 1), (-1, 2), (0, 1)) tiled over the 3x2 window
    index_in, index_out = window_layout_index((D, Hp, Wp), crop, (wh, ww), (sh, sw), ((0, 1), (-1, 2), (0, 1)))
    rows = []
    for d in range(D):
        for hi in range(Hp // wh):
            for wi in range(Wp // ww):
                for a in range(wh):
                    for b in range(ww):
                        src = (d - offsets[a * ww + b].item()) % D  # output frame d reads frame d - offset
                        rows.append((src * Hp + (hi * wh + a + sh) % Hp) * Wp + (wi * ww + b + sw) % Wp)
    assert index_in.tolist() == rows
    assert sorted(index_in.tolist()) == list(range(D * Hp * Wp))  # a permutation of the map's rows
    # the way back: gathering the rows out again restores the map (cropped to (5, 4))
    grid = torch.arange(D * Hp * Wp).view(D, Hp, Wp)
    back = grid.flatten()[index_in][index_out].view(D, *crop)
    assert torch.equal(back, grid[:, : crop[0], : crop[1]])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pst_nano", "dualformer_nano", "stat_nano", "cst_nano", "sct_nano"])
def test_compile_captures_every_family(name):
    """dynamo's capture (the cheap "eager" backend: no code generation) runs each family unchanged."""
    model = create_model(name, num_frames=4, img_size=32).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x)  # builds the cached geometry first, as any first call does
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(model, backend="eager")(x), ref, rtol=0, atol=0)
