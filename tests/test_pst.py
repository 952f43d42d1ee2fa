import copy
import json

import pytest
import timm
import torch
from einops import rearrange

from kinetoscope import add_temporal_patch_shift, create_model, load_pretrained_2d
from kinetoscope.cli import main as cli_main
from kinetoscope.models.pst import block_shift_kinds


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
    model = create_model("pst_nano", num_classes=5).eval()
    clip = torch.randn(1, 3, 16, 64, 64)
    # reverse the order of the 8 tubelets (pairs of frames), keeping each tubelet intact
    reversed_clip = clip.view(1, 3, 8, 2, 64, 64).flip(2).reshape(1, 3, 16, 64, 64)
    with torch.no_grad():
        out, rev = model(clip), model(reversed_clip)
        no_shift = copy.deepcopy(model)
        for module in no_shift.modules():
            if hasattr(module, "shift") and not isinstance(module.shift, bool):
                module.shift = None
        a, b = no_shift(clip), no_shift(reversed_clip)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # frame-wise 2D model ignores order
    assert (out - rev).abs().max() > 1e-3  # TPS does not


def test_block_shift_kinds():
    assert block_shift_kinds(4, "pst") == ["channel", "patch", "channel", "patch"]
    assert block_shift_kinds(3, "patch") == [None, "patch", None]
    assert block_shift_kinds(2, "patch", alternate=False) == ["patch", "patch"]
    assert block_shift_kinds(2, None) == [None, None]


def test_shift_rpe_changes_bias_only_for_patch_shift_blocks():
    model = create_model("pst_nano", num_classes=5)
    patch_attn = model.layers[0].blocks[1].attn
    chan_attn = model.layers[0].blocks[0].attn
    assert patch_attn.shift == "patch" and chan_attn.shift == "channel"
    bias_patch = patch_attn.position_bias(8, (1, 4, 4), torch.device("cpu"))
    bias_chan = chan_attn.position_bias(8, (1, 4, 4), torch.device("cpu"))
    assert bias_patch.shape == (8, 2, 16, 16) and bias_chan.shape == (1, 2, 16, 16)
    # with shift RPE the temporal offset between cells of different source frames is used
    patch_attn.shift_rpe = False
    assert patch_attn.position_bias(8, (1, 4, 4), torch.device("cpu")).shape[0] == 1


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
