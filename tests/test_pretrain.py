"""Image pretraining with the video engine, and its inflation into the video model (issue 14, item 3).

An image run trains a family on a class-per-folder image tree, each image a clip of identical frames;
``kinetoscope convert RUN/best.pth OUT.safetensors --model NAME`` inflates it; ``--set pretrained=OUT``
starts a video run from it. References: torchvision's ``ImageFolder`` (the listing), Pillow (pixels), the
models' own run-time resampling (what a resampled tensor must compute), a hand count of which kernel slices
meet a frame, and the image model itself (what a clip of identical frames must give).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torchvision.datasets import ImageFolder

from kinetoscope import create_model
from kinetoscope.cli import main as cli_main
from kinetoscope.data import ImageDataset, VideoDecodeError, detect_format, load_annotations, write_synthetic_dataset
from kinetoscope.data.decoding import open_video
from kinetoscope.engine import TrainConfig, load_trained, train
from kinetoscope.engine.config import resolve
from kinetoscope.engine.evaluate import eval_dataset
from kinetoscope.engine.train import build_model
from kinetoscope.models import adapt_state_dict, load_checkpoint
from kinetoscope.models._weights import frames_met_by_kernels

CLASSES = ["cat", "dog", "fox"]
BROKEN = b"\x89PNG\r\n\x1a\n" + b"not an image" * 4


def _png(path: Path, rng: np.random.Generator, shade: int) -> None:
    """A PNG of 40-64 px whose brightness depends on its class."""
    h, w = (int(v) for v in rng.integers(40, 65, size=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((h, w, 3)) * 60 + shade).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """train: 3 classes x 4 PNGs, one of them unreadable; val: 3 x 2 PNGs and one unreadable."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                _png(root / split / name / f"{i}.png", rng, 60 * c)
    (root / "train/cat/3.png").write_bytes(BROKEN)
    (root / "val/dog/broken.png").write_bytes(BROKEN)
    return root


@pytest.fixture(scope="module")
def image_run(images, tmp_path_factory):
    """sct_nano trained on the image tree for one epoch (3 steps of 4 images), then validated; with the paper's
    linear embedding ``E``, whose inflation is exact (the nano's conv stem pads its 3D convs with zeros at the
    clip's ends, as STAT's and DualFormer's do)."""
    out = tmp_path_factory.mktemp("image_run")
    cfg = TrainConfig(model="sct_nano", model_kwargs={"stem": None}, train=str(images / "train"),
                      val=str(images / "val"), size=32, epochs=1, batch_size=4, workers=0, output=str(out),
                      seed=1)  # fmt: skip
    return out, train(cfg)


# ------------------------------------------------------------------------------------------- data
def test_image_tree_is_listed_as_torchvision_imagefolder_does(tmp_path):
    rng = np.random.default_rng(1)
    for rel in ("b/x.png", "b/sub/a.png", "b/sub/deeper/c.JPG", "a/z.bmp", "a/y.tiff", "b/notes.txt", "c/a/b.png"):
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            _png(tmp_path / rel, rng, 0)
    ann = load_annotations(tmp_path)  # detected
    reference = ImageFolder(tmp_path)
    assert ann.format == "images" and ann.classes == reference.classes
    assert ann.samples == [(str(p), c) for p, c in reference.samples]


def test_image_trees_are_told_from_video_trees_and_dataset_roots(tmp_path):
    _png(tmp_path / "frames/jump/video1/img_00001.jpg", np.random.default_rng(0), 0)  # frame folders: videos
    (tmp_path / "videos/jump").mkdir(parents=True)
    (tmp_path / "videos/jump/a.mp4").write_bytes(b"")
    _png(tmp_path / "root/train/jump/a.png", np.random.default_rng(0), 0)
    (tmp_path / "empty/jump").mkdir(parents=True)
    _png(tmp_path / "empty/run/a.png", np.random.default_rng(0), 0)
    assert detect_format(tmp_path / "frames") == detect_format(tmp_path / "videos") == "folder"
    assert detect_format(tmp_path / "empty") == "images"
    with pytest.raises(ValueError, match="looks like a dataset root.*split folder such as"):
        load_annotations(tmp_path / "root", format="images")
    with pytest.raises(ValueError, match="class folders with no images.*jump"):
        load_annotations(tmp_path / "empty")


def test_an_image_is_a_one_frame_video_with_pillows_pixels(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("a.png", "a.bmp", "a.jpg"):
        _png(tmp_path / name, rng, 0)
        reader = open_video(tmp_path / name)
        frames = reader.get_frames([0, 0, 0])  # (T, C, H, W)
        expected = torch.from_numpy(np.array(Image.open(tmp_path / name).convert("RGB"))).permute(2, 0, 1)
        assert reader.num_frames == 1 and frames.shape[0] == 3
        assert torch.equal(frames[0], expected) and torch.equal(frames[2], expected), name
    (tmp_path / "bad.png").write_bytes(BROKEN)
    with pytest.raises(VideoDecodeError, match="bad.png: cannot decode image"):
        open_video(tmp_path / "bad.png").get_frames([0])


def test_image_dataset_gives_clips_of_identical_frames_and_reports_bad_images(images, tmp_path):
    ds = ImageDataset(images / "val", frames=3, crops=3, train=False, crop_size=32, on_error="skip",
                      report_dir=tmp_path)  # fmt: skip
    assert ds.classes == CLASSES and len(ds) == 7
    item = ds[0]
    assert item["video"].shape == (3, 3, 3, 32, 32)  # 3 crops x (C, T, H, W)
    assert torch.equal(item["video"][:, :, :1].expand(-1, -1, 3, -1, -1), item["video"])
    bad = [ds[i] for i in range(len(ds)) if "error" in ds[i]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.png") and "cannot decode image" in bad[0]["error"]
    rows = (tmp_path / "bad_files.csv").read_text().splitlines()
    assert rows[0] == "path,reason" and rows[1].startswith(str(images / "val/dog/broken.png"))
    train = ImageDataset(images / "train", frames=2, train=True, crop_size=32, spatial="rrc")
    clip = train[1]["video"]
    assert clip.shape == (3, 2, 32, 32) and torch.equal(clip[:, 0], clip[:, 1])  # one random draw per clip


def test_image_runs_resolve_frames_per_image_sampling_and_views(images):
    def resolved(**kw):
        return resolve(TrainConfig(train=str(images / "train"), **kw))

    sct, pst = resolved(model="sct_s"), resolved(model="pst_nano")
    assert (sct.format, sct.frames, sct.sampling, sct.views) == ("images", 1, "dense:1x1", "1x1")
    assert (pst.frames, pst.sampling) == (2, "dense:2x1")  # PST's temporal patch of 2
    assert resolved(model="sct_nano").frames == resolved(model="cst_nano").frames == 2  # their tubelets of 2
    assert resolved(model="pst_t_dagger", size=64).frames == 4  # and its temporal window of 2 token frames
    assert resolved(model="pst_nano", frames=4).sampling == "dense:4x1"
    with pytest.raises(ValueError, match="shows an image as 2 identical frames"):
        resolved(model="pst_nano", frames=3)
    with pytest.raises(ValueError, match="one temporal view"):
        resolved(model="sct_nano", views="4x3")
    with pytest.raises(ValueError, match="leave sampling unset"):
        resolved(model="sct_nano", sampling="uniform:8")
    assert resolve(TrainConfig(train=str(images / "train"), format="folder")).format == "folder"  # explicit wins


# ----------------------------------------------------------------------------------------- engine
def test_image_run_trains_evaluates_and_excludes_the_unreadable_image(images, image_run):
    out, result = image_run
    assert result["steps"] == 3
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["format"], config["frames"], config["sampling"]) == ("images", 2, "dense:2x1")  # 1 tubelet
    report = json.loads((out / "eval.json").read_text())
    assert report["num_total"] == 7 and report["num_videos"] == 6 and report["num_unreadable"] == 1
    assert report["unreadable"][0]["path"] == str(images / "val/dog/broken.png")
    bad = {line.split(",")[0] for line in (out / "bad_files.csv").read_text().splitlines()[1:]}
    assert bad == {str(images / "train/cat/3.png"), str(images / "val/dog/broken.png")}
    model, classes, cfg, _ = load_trained(out / "best.pth")  # top-1 by hand over the readable images
    ds = eval_dataset(cfg, cfg.val, classes)
    assert isinstance(ds, ImageDataset)
    items = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        hits = [int(model(it["video"])[0].argmax()) == it["label"] for it in items if "error" not in it]
    assert len(hits) == 6 and report["top1"] == pytest.approx(100.0 * sum(hits) / 6)


def test_image_run_resumes_and_its_checkpoint_evaluates_and_predicts_images(images, tmp_path, capsys):
    args = ["train", "--model", "sct_nano", "--train", str(images / "train"), "--size", "32", "--epochs", "1",
            "--batch-size", "4", "--output", str(tmp_path / "run"), "--set", "workers=0", "max_steps=2"]  # fmt: skip
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert cli_main(["train", "--output", str(tmp_path / "run"), "--resume"]) == 0  # its own config.yaml
    printed = capsys.readouterr().out
    assert "resumed from" in printed and json.loads(printed[printed.index("{") :])["steps"] == 3
    last = str(tmp_path / "run/last.pth")
    assert cli_main(["eval", "--checkpoint", last, "--data", str(images / "val"), "--workers", "0"]) == 0
    assert "over 6 videos (1 of 7 videos unreadable, excluded)" in capsys.readouterr().out
    image = str(images / "val/fox/0.png")
    assert cli_main(["predict", image, "--checkpoint", last, "--topk", "2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] in CLASSES


def test_image_run_inflates_into_the_video_model_and_starts_a_video_run(image_run, tmp_path, capsys):
    out, _ = image_run
    inflated = tmp_path / "sct_nano_images.safetensors"
    assert cli_main(["convert", str(out / "best.pth"), str(inflated), "--model", "sct_nano", "--frames", "4",
                     "--size", "32"]) == 0  # fmt: skip
    assert "from a kinetoscope image run of sct_nano (2x32, 3 classes)" in capsys.readouterr().out
    video = create_model("sct_nano", num_classes=3, num_frames=4, img_size=32, stem=None)
    load_checkpoint(video, inflated)  # strict
    image, _, _, _ = load_trained(out / "best.pth")
    own, trained = video.state_dict(), image.state_dict()
    assert all(torch.equal(own[k], trained[k]) for k in trained if k != "clip_pos_embed")  # the frame encoder, ...
    # sct_nano's tubelets of 2: the image was 2 identical frames = 1 token frame, the 4-frame clip has 2
    pos = trained["clip_pos_embed"]  # (1, 1 + 1, D) -> (1, 1 + 2, D): [CLS] row kept, the frame row repeated
    assert torch.equal(own["clip_pos_embed"], torch.cat([pos[:, :1], pos[:, 1:].expand(-1, 2, -1)], dim=1))
    video.eval()
    x = torch.randn(2, 3, 1, 32, 32).expand(-1, -1, 2, -1, -1)  # an image as the run fed it
    with torch.no_grad():
        frames = video.forward_features(x.repeat(1, 1, 2, 1, 1))  # a clip of identical frames
        still = image.forward_features(x)
        torch.testing.assert_close(frames, still.expand(-1, 2, -1, -1), rtol=0, atol=1e-5)  # exact: every frame
        torch.testing.assert_close(video(x), image(x), rtol=0, atol=1e-5)  # one token frame: the whole image model
    assert cli_main(["convert", str(out / "best.pth"), str(tmp_path / "x.safetensors"), "--model", "pst_nano"]) == 2
    assert "is a kinetoscope sct_nano run; its weights fit --model sct_nano" in capsys.readouterr().err

    data = write_synthetic_dataset(tmp_path / "videos", ["grow", "shrink"], per_class=2, val_per_class=1, frames=8,
                                   size=40)  # fmt: skip
    args = ["train", "--model", "sct_nano", "--train", str(data["train"]), "--frames", "4", "--size", "32",
            "--epochs", "1", "--batch-size", "2", "--output", str(tmp_path / "video_run"),
            "--set", "workers=0", f"pretrained={inflated}", "model_kwargs={stem: null}"]  # fmt: skip
    assert cli_main(args) == 0
    run = yaml.safe_load((tmp_path / "video_run/config.yaml").read_text())
    assert run["pretrained"] == str(inflated) and run["format"] == "auto"
    start = build_model(TrainConfig(**run), num_classes=2)  # what the run started from: the classifier dropped
    assert all(torch.equal(start.state_dict()[k], own[k]) for k in own if not k.startswith("head."))


# ------------------------------------------------------------------------------------ inflation rules
@pytest.mark.parametrize(
    ("name", "built", "run_at", "kwargs"),
    [
        ("sct_nano", (2, 64), (6, 64), {}),  # (frames in whole 2-frame tubelets: 1 token frame -> 3)
        ("sct_nano", (4, 64), (8, 64), {}),
        ("pst_nano", (2, 64), (16, 64), {}),
        ("pst_nano", (4, 64), (16, 64), {"window": (2, 4, 4)}),  # PST-dagger's bias table: offsets clamped
        ("cst_nano", (2, 64), (4, 96), {}),
        ("stat_nano", (2, 64), (8, 64), {}),  # (its K/V stride follows the built size: frames only)
        ("deit_s_tps", (1, 32), (4, 48), dict(embed_dim=32, depth=2, num_heads=2, temporal_pos_embed=True)),
    ],
)
def test_resampled_weights_compute_what_the_model_computes_at_run_time(name, built, run_at, kwargs):
    """A model built for one input and run on another resamples its embeddings on the fly; the same model
    built for the other input, with the resampled weights, must compute exactly that."""
    source = create_model(name, num_classes=5, num_frames=built[0], img_size=built[1], **kwargs).eval()
    target = create_model(name, num_classes=5, num_frames=run_at[0], img_size=run_at[1], **kwargs).eval()
    target.load_state_dict(adapt_state_dict(target, source.state_dict()))
    x = torch.randn(2, 3, run_at[0], run_at[1], run_at[1])
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("pst_nano", {}),
        ("cst_nano", dict(stem=None)),  # tubelets' linear embedding (the registered conv stem pads, below)
        ("deit_s_tps", dict(embed_dim=32, depth=2, num_heads=2)),
    ],
)
def test_a_clip_of_identical_frames_gives_the_image_models_features_where_exact(name, kwargs):
    """PST (temporal window 1), CST and DeiT-TPS reduce to their image model on identical frames: the
    temporal patch embedding sums two identical frames, shifts move identical patches, temporal attention
    averages identical tokens. (SCT: its frame encoder, tested above; DualFormer, STAT and cst_nano's conv
    stem pad their 3D convs with zeros at the clip's ends, so theirs is not exact.)"""
    size = 32 if name == "deit_s_tps" else 64
    with torch.device("meta"):
        fpi = create_model(name, num_classes=5, img_size=size, **kwargs).frames_per_image
        meta = create_model(name, num_classes=5, num_frames=fpi, img_size=size, **kwargs)
    image = create_model(name, num_classes=5, num_frames=fpi, img_size=size, **kwargs).eval()
    video = create_model(name, num_classes=5, num_frames=8, img_size=size, **kwargs).eval()
    video.load_state_dict(adapt_state_dict(video, image.state_dict(), meta, (fpi, size, size)))
    x = torch.randn(2, 3, 1, size, size)
    with torch.no_grad():
        still = image.forward_head(image.forward_features(x.expand(-1, -1, fpi, -1, -1)), pre_logits=True)
        clip = video.forward_head(video.forward_features(x.expand(-1, -1, 8, -1, -1)), pre_logits=True)
    torch.testing.assert_close(clip, still, rtol=0, atol=2e-5)


def test_still_frame_kernels_keep_the_slices_that_met_a_frame():
    """Which temporal slices of a 3D kernel meet a frame, counted by hand, and the inflated kernel's
    response to identical frames away from the clip's ends."""
    convs = nn.Sequential(
        nn.Conv3d(2, 4, (2, 1, 1), stride=(2, 1, 1)),  # 2 frames -> 1: both slices meet a frame
        nn.Conv3d(4, 4, 3, padding=1),  # 1 frame, zero padding: only the centre slice
        nn.Conv3d(4, 4, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),  # 1 frame: the centre slice
        nn.Conv3d(4, 4, 3, padding=1, padding_mode="replicate"),  # padded frames copy the frame: all three
    )
    convs.in_chans = 2
    assert frames_met_by_kernels(convs, (2, 5, 5)) == {"0.weight": [0, 1], "1.weight": [1], "2.weight": [1],
                                                       "3.weight": [0, 1, 2]}  # fmt: skip
    later = convs[1:]
    later.in_chans = 4
    assert frames_met_by_kernels(later, (3, 5, 5))["1.weight"] == [0, 1, 2]  # 3 frames: every slice
    inflated = nn.Sequential(*(nn.Conv3d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                                         padding_mode=c.padding_mode) for c in convs))  # fmt: skip
    inflated.load_state_dict(adapt_state_dict(inflated, convs.state_dict(), convs, (2, 5, 5)))
    x = torch.randn(1, 2, 1, 5, 5)
    with torch.no_grad():
        image = convs(x.expand(-1, -1, 2, -1, -1))  # (1, 4, 1, 5, 5)
        clip = inflated(x.expand(-1, -1, 24, -1, -1))  # 24 frames -> 12 -> 12 -> 6 -> 6
    # frames 2 and 3 of 6 never met a zero-padded end through the stack: there the clip is the image
    torch.testing.assert_close(clip[:, :, 2:4], image.expand(-1, -1, 2, -1, -1), rtol=0, atol=1e-5)
    assert not torch.allclose(clip[:, :, 0], image[:, :, 0], atol=1e-3)  # the first frame met the padding


def test_a_tensor_no_rule_resamples_is_named():
    source = create_model("dualformer_nano", num_classes=5, num_frames=16)
    target = create_model("dualformer_nano", num_classes=5, num_frames=32)
    with pytest.raises(ValueError, match=r"cannot resample stages\.\d.*fine_pool\.weight"):
        adapt_state_dict(target, source.state_dict())  # a video run's prior kernels: no rule, named
    with pytest.raises(ValueError, match="has no place in sct_nano"):
        adapt_state_dict(create_model("sct_nano"), {"blocks.9.weight": torch.zeros(1)})


def test_a_checkpoint_built_for_another_input_is_refused_with_the_way_to_resample_it(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file(create_model("pst_nano", num_classes=3, num_frames=4).state_dict(), tmp_path / "four.safetensors")
    with pytest.raises(ValueError, match="built for another input size.*kinetoscope convert IN OUT"):
        load_checkpoint(create_model("pst_nano", num_classes=3, num_frames=16), tmp_path / "four.safetensors")
    out = tmp_path / "sixteen.safetensors"
    assert cli_main(["convert", str(tmp_path / "four.safetensors"), str(out), "--model", "pst_nano"]) == 0
    load_checkpoint(create_model("pst_nano", num_classes=3, num_frames=16), out)  # the variant's 16 frames
