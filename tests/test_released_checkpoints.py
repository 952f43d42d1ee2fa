"""Released checkpoints (MartinXM/TPS, sail-sg/dualformer) enter through load_checkpoint / convert.

The layouts come from tests/fixtures/released_layouts.json: key names and shapes read from the released
modules (no values, no released code). Feature equality with the released modules themselves is
checked outside the repository (issue 14, "Verify outside the repository").
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from kinetoscope import create_model
from kinetoscope.cli import main as cli_main
from kinetoscope.models import get_model_config, identify_checkpoint, load_checkpoint, read_state_dict
from kinetoscope.models.dualformer import to_released_dualformer
from kinetoscope.models.pst import to_released_tps
from kinetoscope.profiling import paper_comparison

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "released_layouts.json").read_text())


def released(name: str, layout: str = "mmaction2") -> dict[str, torch.Tensor]:
    """A released checkpoint of the fixture's layout on the meta device (shapes only)."""
    sd = {k: torch.empty(shape, device="meta") for k, shape in FIXTURE[name].items()}
    if layout == "backbone":
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("layout", ["mmaction2", "backbone"])
@pytest.mark.parametrize("name", ["dualformer_t", "pst_t"])
def test_released_layout_converts_to_exactly_our_tensors(name, layout):
    from kinetoscope.models._weights import convert_state_dict

    model = meta_model(name)
    sd, found = convert_state_dict(released(name, layout), model)
    own = model.state_dict()
    expected = set(own) if layout == "mmaction2" else {k for k in own if not k.startswith("head.")}
    assert set(sd) == expected  # no missing, no unexpected key
    assert all(sd[k].shape == own[k].shape for k in sd)
    assert (found.model, found.layout, found.num_classes) == (name, layout, 400 if layout == "mmaction2" else None)
    load_checkpoint(model, released(name, layout))  # strict


def test_released_head_of_another_size_is_dropped_with_a_log_line(caplog):
    model = meta_model("pst_t", num_classes=174)
    with caplog.at_level(logging.INFO):
        load_checkpoint(model, released("pst_t"))
    assert "dropping head.weight" in caplog.text


@pytest.mark.parametrize(
    ("checkpoint", "model", "hint"),
    [
        ("dualformer_t", "dualformer_s", "released DualFormer-T checkpoint (mmaction2 layout, 32x224 clips)"),
        ("dualformer_t", "pst_t", "released DualFormer-T checkpoint (mmaction2 layout, 32x224 clips)"),
        ("pst_t", "pst_b", "released PST-T (Swin-T TPS) checkpoint (mmaction2 layout, 32-frame clips)"),
        ("pst_t", "dualformer_t", "released PST-T (Swin-T TPS) checkpoint (mmaction2 layout, 32-frame clips)"),
    ],
)
def test_checkpoint_of_another_family_or_variant_is_named_in_one_line(checkpoint, model, hint):
    target = meta_model(model)
    before = {k: v.shape for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_checkpoint(target, released(checkpoint))
    assert str(err.value) == f"checkpoint does not fit {model}: this looks like a {hint}; pass --model {checkpoint}"
    assert {k: v.shape for k, v in target.state_dict().items()} == before


def test_released_checkpoint_for_another_input_names_the_input():
    with pytest.raises(ValueError, match=r"fine_pool.*32x224 clips\): build the model for that input"):
        load_checkpoint(meta_model("dualformer_t", num_frames=16), released("dualformer_t"))


def test_our_checkpoint_of_another_variant_is_named():
    sd = meta_model("dualformer_nano").state_dict()
    with pytest.raises(
        ValueError, match=r"looks like a kinetoscope dualformer_nano checkpoint .*--model dualformer_nano$"
    ):
        load_checkpoint(meta_model("pst_nano"), sd)


@pytest.mark.parametrize(
    ("name", "kwargs", "to_released"),
    [
        ("dualformer_nano", {}, to_released_dualformer),
        ("pst_t", {"num_frames": 32, "img_size": 64}, to_released_tps),  # the release's 16 token frames
    ],
)
def test_round_trip_through_the_released_layout_gives_identical_logits(tmp_path, name, kwargs, to_released):
    ours = create_model(name, num_classes=7, **kwargs).eval()
    path = tmp_path / "released.pth"
    # mmcv writes numpy scalars and arrays into `meta`: plain data that weights_only loading must accept
    meta = {"epoch": 30, "iter": np.int64(12_000), "best_score": np.float64(0.79), "hist": np.arange(3.0)}
    torch.save({"meta": meta, "state_dict": to_released(ours.state_dict())}, path)
    assert identify_checkpoint(read_state_dict(path)).layout == "mmaction2"
    back = create_model(name, num_classes=7, pretrained=str(path), **kwargs).eval()
    x = torch.randn(1, 3, kwargs.get("num_frames", 16), kwargs.get("img_size", 64), kwargs.get("img_size", 64))
    with torch.no_grad():
        assert torch.equal(ours(x), back(x))
    bare = to_released(ours.state_dict(), layout="backbone")
    assert not any(k.startswith(("backbone.", "cls_head.")) for k in bare)


def _image_checkpoint(model) -> dict[str, torch.Tensor]:
    """Random 2D weights under the release's names (its ImageNet checkpoints share the video names)."""
    sd = {}
    for k, v in to_released_dualformer(model.state_dict(), layout="backbone").items():
        sd[k] = torch.randn(v.shape[:2] + v.shape[3:]) / 4 if v.dim() == 5 else v.clone()
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, model.num_features), torch.zeros(1000)
    return sd


def test_image_inflated_dualformer_keeps_the_static_response(caplog):
    """A clip of one repeated image meets the image's kernels: the stage-1 embedding, the fine prior and
    the PEG (away from the clip's ends, where the 3-tap kernel sees zero padding) equal the 2D
    convolutions of the image; the coarse prior's last conv is the mean filter."""
    model = create_model("dualformer_nano", num_classes=5).eval()
    img = _image_checkpoint(model)
    with caplog.at_level(logging.INFO):
        load_checkpoint(model, img)
    assert "dropping head.weight: the ImageNet classifier" in caplog.text
    found = identify_checkpoint(img)
    assert (found.layout, found.num_classes) == ("image", None)

    stage, image = model.stages[0], torch.randn(1, 3, 64, 64)
    clip = image[:, :, None].expand(-1, -1, 16, -1, -1)
    with torch.no_grad():
        tokens = stage.patch_embed(clip)  # (1, 8, 16, 16, C)
        conv = F.conv2d(image, img["patch_embeds.0.proj.weight"], img["patch_embeds.0.proj.bias"], stride=4)
        ref = F.layer_norm(conv.permute(0, 2, 3, 1), (conv.shape[1],), img["patch_embeds.0.norm.weight"],
                           img["patch_embeds.0.norm.bias"])  # fmt: skip
        torch.testing.assert_close(tokens, ref[:, None].expand_as(tokens), rtol=1e-5, atol=1e-5)

        frame = tokens[:, 0].permute(0, 3, 1, 2)  # (1, C, 16, 16): the same map in every token frame
        C = frame.shape[1]
        peg = stage.peg(tokens)
        ref = frame + F.conv2d(frame, img["pos_block.0.proj.0.weight"], img["pos_block.0.proj.0.bias"], padding=1,
                               groups=C)  # fmt: skip
        torch.testing.assert_close(peg[:, 1:-1], ref.permute(0, 2, 3, 1)[:, None].expand_as(peg[:, 1:-1]))

        gp = stage.blocks[1].attn  # GP-MSA: fine then coarse priors, layer-normalised
        k = gp.fine_kernel[1:]
        fine = F.conv2d(frame, img["blocks.0.1.attn.sr.weight"], img["blocks.0.1.attn.sr.bias"], stride=k, groups=C)
        bn = gp.coarse_pool[1]
        first = F.conv2d(frame, img["blocks.0.1.attn.lr.0.weight"], img["blocks.0.1.attn.lr.0.bias"], stride=7,
                         groups=C)  # fmt: skip
        first = F.relu(F.batch_norm(first, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
        coarse = F.avg_pool2d(first, gp.coarse_pool[3].kernel_size[1:])
        frames_fine = tokens.shape[1] // gp.fine_kernel[0]
        frames_coarse = tokens.shape[1] // gp.coarse_pool[3].kernel_size[0]
        ref = torch.cat([fine.flatten(2).repeat(1, 1, frames_fine), coarse.flatten(2).repeat(1, 1, frames_coarse)], 2)
        ref = F.layer_norm(ref.transpose(1, 2), (C,), gp.norm.weight, gp.norm.bias)
        torch.testing.assert_close(gp.priors(tokens), ref, rtol=1e-5, atol=1e-5)
    assert gp.coarse_pool[3].bias.abs().max() == 0
    # as the release's inflate_weights: every temporal tap is the 2D kernel divided by the temporal extent
    inflated = [(stage.patch_embed.proj, "patch_embeds.0.proj"), (stage.peg.proj, "pos_block.0.proj.0"),
                (gp.fine_pool, "blocks.0.1.attn.sr"), (gp.coarse_pool[0], "blocks.0.1.attn.lr.0")]  # fmt: skip
    for ours, theirs in inflated:
        taps = ours.weight.shape[2]
        assert taps == ours.kernel_size[0] and taps >= (1 if "lr" in theirs else 2)
        torch.testing.assert_close(ours.weight, img[f"{theirs}.weight"][:, :, None].expand_as(ours.weight) / taps)


def test_convert_command_writes_safetensors_and_never_overwrites(tmp_path, capsys):
    ours = create_model("dualformer_nano", num_classes=7)
    src = tmp_path / "released.pth"
    torch.save({"state_dict": to_released_dualformer(ours.state_dict())}, src)
    out = tmp_path / "ours.safetensors"

    assert cli_main(["convert", str(src), str(out), "--model", "dualformer_nano"]) == 0
    with safe_open(str(out), framework="pt") as f:
        meta = json.loads(f.metadata()["kinetoscope"])
        assert all(torch.equal(f.get_tensor(k), v) for k, v in ours.state_dict().items())
    assert (meta["model"], meta["source_layout"], meta["num_classes"]) == ("dualformer_nano", "mmaction2", 7)
    written = out.read_bytes()

    assert cli_main(["convert", str(src), str(out), "--model", "dualformer_nano"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == written
    assert cli_main(["convert", str(src), str(out), "--model", "dualformer_nano", "--overwrite"]) == 0

    # the output path is checked before the input is read: a folder that cannot be created is named
    (tmp_path / "plain_file").write_text("not a folder")
    assert cli_main(["convert", str(tmp_path / "absent.pth"), str(tmp_path / "plain_file" / "x.safetensors"),
                     "--model", "dualformer_nano"]) == 2  # fmt: skip
    assert "cannot create its folder" in capsys.readouterr().err

    assert cli_main(["convert", str(src), str(tmp_path / "wrong.safetensors"), "--model", "pst_nano"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "looks like a released DualFormer" in err
    assert not (tmp_path / "wrong.safetensors").exists()


def test_pretrained_metadata_in_models_json():
    row = paper_comparison("dualformer_t")
    k400 = row["weights"][0]
    assert (k400["dataset"], k400["top1"], k400["views"], k400["released"]) == ("Kinetics-400", 79.5, "4x1", True)
    assert k400["url"].startswith("https://drive.google.com/file/d/1dvG6vjC7udHTwTaqmOAfn6U3HNs3T-QF")
    assert k400["file"] == "dualformer_tiny_patch244_window877.pth"
    assert row["weights"][1]["dataset"] == "ImageNet-1K" and not row["weights"][1]["released"]
    # every K400 entry agrees with the paper reference the variant already carries
    for name in ("dualformer_t", "dualformer_s", "dualformer_b", "pst_t", "pst_b", "pst_t_dagger", "deit_s_tps"):
        cfg = get_model_config(name)
        assert next(w for w in cfg.weights if w.dataset == "Kinetics-400").top1 == cfg.paper.top1
    assert not any(w.released for w in get_model_config("pst_t").weights)
