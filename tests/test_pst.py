import copy
import json

import pytest
import timm
import torch
from einops import rearrange
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from kinetoscope import add_temporal_patch_shift, create_model, load_pretrained_2d
from kinetoscope.cli import main as cli_main
from kinetoscope.layers import TemporalShiftAttention
from kinetoscope.models.pst import ShiftWindowAttention, block_shift_kinds, shift_rpe_index

PATTERN_C = ((-4, 1, 2), (-1, 0, 3), (-2, -3, 4))  # the release's rolls per 3x3 cell class (models.md)


def released_index_loop(num_frames, window, table_frames, table_window, patch):
    """The released bias index, written as the release builds it: coordinates of a (num_frames, wh, ww) window,
    whose frame coordinate patch-shift blocks roll per cell class by its pattern offset, the index of every
    (query, key) pair, and of that the slice [::num_frames]: (query frame f, key frame 0). Offsets beyond the
    table are clamped (the release never has any)."""
    wh, ww = window
    Wh, Ww = table_window
    cells = [(h, w) for h in range(wh) for w in range(ww)]

    def frame(d, h, w):  # torch.roll(coords[:, :, h::3, w::3], shifts=P, dims=1): frame d reads d - P
        return (d - PATTERN_C[h % 3][w % 3]) % num_frames if patch else d

    out = []
    for f in range(num_frames):
        rows = []
        for hq, wq in cells:
            row = []
            for hk, wk in cells:
                dt = frame(f, hq, wq) - frame(0, hk, wk)
                dt = max(-(table_frames - 1), min(table_frames - 1, dt))
                row.append(
                    (dt + table_frames - 1) * (2 * Wh - 1) * (2 * Ww - 1)
                    + (hq - hk + Wh - 1) * (2 * Ww - 1)
                    + wq
                    - wk
                    + Ww
                    - 1
                )
            rows.append(row)
        out.append(rows)
    return torch.tensor(out)


def _dt(index, table_frames=16, table_window=(7, 7)):
    return index // ((2 * table_window[0] - 1) * (2 * table_window[1] - 1)) - (table_frames - 1)


def _static_clip(img: torch.Tensor, frames: int) -> torch.Tensor:
    return img[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


@pytest.mark.parametrize("tps", [None, "pst"])
def test_pst_t_reproduces_timm_swin_on_static_clip(tps):
    timm_model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=400).eval()
    model = create_model("pst_t", tps=tps, num_frames=4).eval()
    report = load_pretrained_2d(model, timm_model.state_dict())
    assert report["missing"] == [] and report["unexpected"] == []
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = timm_model(img), model(_static_clip(img, 4))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_deit_s_tps_reproduces_timm_deit_on_static_clip():
    timm_model = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=400).eval()
    for tps in (None, "patch"):
        model = create_model("deit_s_tps", tps=tps, num_frames=4).eval()
        load_pretrained_2d(model, timm_model.state_dict())
        img = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(model(_static_clip(img, 4)), timm_model(img), rtol=1e-4, atol=1e-5)


def test_plug_and_play_helper_equals_our_models_on_moving_clips():
    T = 4
    clip = torch.randn(2, 3, T, 224, 224)
    frames = rearrange(clip, "b c t h w -> (b t) c h w")
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10).eval()
    ours = create_model("pst_t", tps="patch", shift_rpe=False, patch_size=(1, 4, 4), num_frames=T, num_classes=10)
    load_pretrained_2d(ours.eval(), swin.state_dict())
    with torch.no_grad():
        static = swin(frames).reshape(2, T, -1).mean(1)
        add_temporal_patch_shift(swin, T, "patch")
        shifted = swin(frames).reshape(2, T, -1).mean(1)
        torch.testing.assert_close(shifted, ours(clip), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(static, shifted, atol=1e-3)  # the shift really mixes frames


def test_shift_uses_frame_order():
    model = create_model("pst_nano", num_classes=5, rel_pos_index="shift").eval()
    clip = torch.randn(1, 3, 16, 64, 64)
    # reverse the order of the 8 tubelets (pairs of frames), keeping each tubelet intact
    reversed_clip = clip.view(1, 3, 8, 2, 64, 64).flip(2).reshape(1, 3, 16, 64, 64)
    no_shift = copy.deepcopy(model)  # before any forward: no geometry cached yet
    for module in no_shift.modules():
        if isinstance(module, ShiftWindowAttention):  # 2D Swin frame by frame, same weights
            module.temporal_shift = module.shift = None
    with torch.no_grad():
        out, rev = model(clip), model(reversed_clip)
        a, b = no_shift(clip), no_shift(reversed_clip)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # frame-wise 2D model ignores order
    assert (out - rev).abs().max() > 1e-3  # TPS does not


def test_block_shift_kinds():
    assert block_shift_kinds(4, "pst") == ["channel", "patch", "channel", "patch"]
    assert block_shift_kinds(3, "patch") == [None, "patch", None]
    assert block_shift_kinds(2, "patch", alternate=False) == ["patch", "patch"]
    assert block_shift_kinds(2, None) == [None, None]


def test_bias_groups_per_index_mode():
    """One bias per token frame where the index depends on the frame, one shared bias elsewhere."""
    for mode, channel_groups in (("shift", 1), ("released", 8)):  # released channel blocks: dt = f
        model = create_model("pst_nano", num_classes=5, rel_pos_index=mode)
        chan_attn, patch_attn = model.layers[0].blocks[0].attn, model.layers[0].blocks[1].attn
        assert patch_attn.shift == "patch" and chan_attn.shift == "channel"
        assert patch_attn.position_bias(8, (1, 4, 4)).shape == (8, 2, 16, 16)
        assert chan_attn.position_bias(8, (1, 4, 4)).shape == (channel_groups, 2, 16, 16)
    patch_attn.shift_rpe = False  # coordinates no longer travel with the patches: released dt = f again
    assert patch_attn.relative_position_index(8, (1, 4, 4)).shape[0] == 8
    shift_model = create_model("pst_nano", num_classes=5, rel_pos_index="shift", shift_rpe=False)
    assert shift_model.layers[0].blocks[1].attn.position_bias(8, (1, 4, 4)).shape[0] == 1


def test_paper_numbers_via_cli_json(capsys):
    assert cli_main(["models", "pst_*", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    # PST-T 28.5 M with a 400-class head, 72 GMACs; PST-B 88.8 M with a 174-class head, 247 GMACs
    for name, params, gmacs in [("pst_t", 28.5, 72), ("pst_b", 88.8, 247), ("pst_t_dagger", 28.5, 74)]:
        assert abs(rows[name]["params_m"] - params) / params < 0.02, rows[name]
        assert abs(rows[name]["gflops"] - gmacs) / gmacs < 0.02, rows[name]
        assert rows[name]["flop_convention"] == "mac"
    assert cli_main(["models", "deit_s_tps", "--format", "json"]) == 0
    deit = json.loads(capsys.readouterr().out)[0]
    assert abs(deit["params_m"] - 22) / 22 < 0.03 and abs(deit["gflops"] - 74) / 74 < 0.03


def test_dagger_needs_even_token_frames():
    model = create_model("pst_t_dagger", num_frames=8, num_classes=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 3, 6, 64, 64))
    with pytest.raises(ValueError, match="multiple of 4"):
        create_model("pst_t_dagger", num_frames=6)


def test_pst_handles_sizes_the_window_does_not_divide():
    model = create_model("pst_nano", num_classes=3).eval()
    assert model(torch.randn(1, 3, 5, 50, 70)).shape == (1, 3)


def test_pst_nano_overfits_eight_clips(fit_eight_clips):
    torch.manual_seed(0)
    losses = fit_eight_clips(create_model("pst_nano", num_classes=4), frames=16, lr=2e-3)
    assert losses[-1] < 0.1 * losses[0], losses


@pytest.mark.parametrize("kind", ["channel", "patch"])
@pytest.mark.parametrize("frames, table", [(16, 16), (8, 16), (5, 3)])  # released size; fewer frames; clamped
def test_released_index_matches_the_release_construction(kind, frames, table):
    ours = shift_rpe_index(frames, (1, 7, 7), (table, 7, 7), shift=kind, mode="released")
    expected = released_index_loop(frames, (7, 7), table, (7, 7), patch=kind == "patch")
    assert ours.shape == (frames, 49, 49)
    assert torch.equal(ours, expected)


def test_released_index_hand_computed_example_and_the_blocks_of_pst_t():
    """Frame 1, query cell (1, 1), key cell (0, 0) (models.md): patch shift: src(1, (1,1)) = 1 - 0 = 1,
    src(0, (0,0)) = 0 + 4 = 4, dt = -3 (shift-aware: src(1, (0,0)) = 5, dt = -4); channel shift: dt = f = 1
    (shift-aware: 0)."""
    q, k = 1 * 7 + 1, 0
    with torch.device("meta"):
        model = create_model("pst_t")  # 32 frames -> 16 token frames, 7x7 windows: the released geometry
    channel, patch = model.layers[0].blocks[0].attn, model.layers[0].blocks[1].attn
    assert (channel.shift, patch.shift, patch.rel_pos_index) == ("channel", "patch", "released")
    released_patch = patch.relative_position_index(16, (1, 7, 7))
    released_channel = channel.relative_position_index(16, (1, 7, 7))
    assert _dt(released_patch[1, q, k]) == -3 and _dt(released_channel[1, q, k]) == 1
    assert (_dt(released_patch[1, q, k] - (q // 7 - k // 7 + 6) * 13 - (q % 7 - k % 7 + 6))) == -3
    assert torch.equal(released_patch, released_index_loop(16, (7, 7), 16, (7, 7), patch=True))
    assert torch.equal(released_channel, released_index_loop(16, (7, 7), 16, (7, 7), patch=False))
    shift_patch = shift_rpe_index(16, (1, 7, 7), (16, 7, 7), shift="patch", mode="shift")
    shift_channel = shift_rpe_index(16, (1, 7, 7), (16, 7, 7), shift="channel", mode="shift")
    assert _dt(shift_patch[1, q, k]) == -4 and _dt(shift_channel[0, q, k]) == 0


def test_index_modes_agree_when_the_bias_table_is_constant_over_time():
    """A start inflated from 2D Swin repeats the 2D table at every dt: then 'released' and 'shift' coincide."""
    torch.manual_seed(0)
    released = create_model("pst_nano", num_classes=4, num_frames=8).eval()
    shift = create_model("pst_nano", num_classes=4, num_frames=8, rel_pos_index="shift").eval()
    clip = torch.randn(1, 3, 8, 64, 64)
    tables = [m.relative_position_bias_table for m in released.modules() if isinstance(m, ShiftWindowAttention)]
    with torch.no_grad():
        for table in tables:
            table.normal_(std=2.0)  # large, as trained tables are
        shift.load_state_dict(released.state_dict())
        assert (released(clip) - shift(clip)).abs().max() > 1e-3  # different functions
        for model in (released, shift):
            for m in model.modules():
                if isinstance(m, ShiftWindowAttention):
                    table = m.relative_position_bias_table.view(2 * m.table_frames - 1, -1, m.num_heads)
                    table.copy_(table[m.table_frames - 1].expand_as(table).clone())  # the dt = 0 rows everywhere
        torch.testing.assert_close(released(clip), shift(clip), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tps", ["patch", "channel"])
def test_plug_in_on_a_timm_vit_equals_patch_shift_vit(tps):
    T = 4
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=4, num_heads=4, num_classes=6).eval()
    ours = create_model(
        "deit_s_tps", num_classes=6, num_frames=T, img_size=64, embed_dim=48, depth=4, num_heads=4, tps=tps
    ).eval()
    report = load_pretrained_2d(ours, vit.state_dict())
    assert report["missing"] == [] and report["unexpected"] == []
    clip = torch.randn(2, 3, T, 64, 64)
    frames = rearrange(clip, "b c t h w -> (b t) c h w")
    with torch.no_grad():
        static = vit(frames).reshape(2, T, -1).mean(1)
        add_temporal_patch_shift(vit, T, tps)
        shifted = vit(frames).reshape(2, T, -1).mean(1)
        torch.testing.assert_close(shifted, ours(clip), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(static, shifted, atol=1e-4)  # the shift really mixes frames
    wrapped = [blk.attn for blk in vit.blocks]
    assert [isinstance(a, TemporalShiftAttention) for a in wrapped] == [False, True, False, True]
    assert not any(blk._forward_pre_hooks for blk in vit.blocks)  # no hidden state fed by hooks
    with pytest.raises(ValueError, match="whole clips"):
        vit(frames[:3])


def test_deit_temporal_pos_embed_is_added_per_frame_and_resampled():
    torch.manual_seed(0)
    model = create_model(
        "deit_s_tps", num_classes=3, num_frames=4, img_size=32, depth=2, tps=None, temporal_pos_embed=True
    ).eval()
    assert model.time_embed.shape == (1, 4, 1, 384) and "time_embed" in model.no_weight_decay()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        for frames in (4, 6):
            clip = torch.randn(1, 3, frames, 32, 32)
            seen.clear()
            model.time_embed.zero_()
            b = model(clip)
            model.time_embed.copy_(embed := torch.randn(1, 4, 1, 384))
            c = model(clip)
            diff = (seen[1] - seen[0]).view(frames, 5, 384)  # (frames, class token + 2x2 patches, C)
            # every token of frame t moves by the embedding of frame t, linearly resampled to the clip's frames
            expected = torch.nn.functional.interpolate(embed[0, :, 0].T[None], size=frames, mode="linear")[0].T
            torch.testing.assert_close(diff, expected[:, None].expand_as(diff), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(b, c)
        # a frame-wise ViT ignores frame order; the per-frame embedding is what breaks the symmetry
        clip = torch.randn(1, 3, 4, 32, 32)
        assert (model(clip) - model(clip.flip(2))).abs().max() > 1e-4
        model.time_embed.zero_()
        torch.testing.assert_close(model(clip), model(clip.flip(2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_2d_from_a_file(tmp_path, suffix):
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=4, num_classes=6).eval()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save({"model": vit.state_dict()}, path)  # nested, as training scripts save
    else:
        save_file(vit.state_dict(), str(path))
    model = create_model(
        "deit_s_tps", num_classes=6, num_frames=2, img_size=64, embed_dim=48, depth=2, num_heads=4, tps=None
    ).eval()
    report = load_pretrained_2d(model, path)
    assert report["missing"] == [] and report["unexpected"] == [] and "pos_embed" in report["loaded"]
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(img[:, :, None].expand(-1, -1, 2, -1, -1)), vit(img), rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_pretrained_2d(model, tmp_path / "missing.pth")
