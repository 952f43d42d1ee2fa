import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from kinetoscope.data import (
    VideoDataset,
    VideoMixup,
    build_transform,
    check_videos,
    collate_valid,
    detect_format,
    load_annotations,
    open_video,
    parse_protocol,
    parse_views,
    read_bad_files,
    torchcodec_status,
    write_synthetic_dataset,
    write_video,
)
from kinetoscope.data.decoding import FrameFolderReader, PyAVReader, TorchCodecReader
from kinetoscope.data.synthetic import render_clip

T, H, W = 40, 32, 48


def _known_frames() -> np.ndarray:
    """Every frame distinct: a frame number in the red channel, a gradient in green."""
    frames = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        frames[t, ..., 0] = t * 6
        frames[t, ..., 1] = np.arange(W)[None] * 5
        frames[t, t % H, :, 2] = 255
    return frames


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    d = tmp_path_factory.mktemp("lossless")
    frames = _known_frames()
    files = {
        "x264rgb": d / "a.mkv",  # keyframe every 8 frames: random access must seek and decode forward
        "ffv1": d / "b.mkv",
    }
    write_video(files["x264rgb"], frames, codec="libx264rgb", qp=0, g=8, bf=2)
    write_video(files["ffv1"], frames, codec="ffv1")
    folder = d / "frames"
    folder.mkdir()
    for t in range(T):
        Image.fromarray(frames[t]).save(folder / f"img_{t + 1:05d}.png")
    return frames, files, folder


INDEX_SETS = [[0, 1, 2], [39, 3, 17, 17, 5], list(range(0, 40, 7)), [38, 39], [8, 16, 24], [20]]
READERS = [PyAVReader, pytest.param(TorchCodecReader, marks=pytest.mark.skipif(
    not torchcodec_status()[0], reason=f"torchcodec cannot load: {torchcodec_status()[1]}"))]  # fmt: skip


@pytest.mark.parametrize("reader_cls", READERS)
@pytest.mark.parametrize("codec", ["x264rgb", "ffv1"])
def test_decoding_is_frame_exact(lossless, reader_cls, codec):
    frames, files, _ = lossless
    reader = reader_cls(files[codec])
    assert reader.num_frames == T and reader.fps == pytest.approx(12.0, rel=1e-3)
    for idx in INDEX_SETS:
        got = reader.get_frames(idx, layout="THWC").numpy()
        np.testing.assert_array_equal(got, frames[idx], err_msg=f"{codec} {idx}")
    assert reader.get_frames([1, 2]).shape == (2, 3, H, W)  # TCHW default


def test_frame_folder_source(lossless):
    frames, _, folder = lossless
    reader = open_video(folder)
    assert isinstance(reader, FrameFolderReader) and reader.num_frames == T
    np.testing.assert_array_equal(reader.get_frames([39, 0, 9], layout="THWC").numpy(), frames[[39, 0, 9]])


def test_out_of_range_indices_are_named(lossless):
    _, files, _ = lossless
    with pytest.raises(IndexError, match="out of range for a video of 40 frames"):
        PyAVReader(files["ffv1"]).get_frames([40])


# ------------------------------------------------------------------------------------------- sampling
def test_dense_sampling_train_and_test():
    s = parse_protocol("dense:8x4")
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = s.train(100, rng)
        assert len(idx) == 8 and (np.diff(idx) == 4).all() and idx[0] >= 0 and idx[-1] < 100
    clips = s.test(100, clips=4)
    starts = [c[0] for c in clips]
    assert starts == sorted(starts) and len(set(starts)) == 4 and clips[-1][-1] < 100
    assert s.test(100, 1)[0][0] == (100 - 29) // 2  # centred window


def test_short_videos_loop_or_repeat():
    loop = parse_protocol("dense:8x2", short_video="loop")
    assert loop.test(5)[0].tolist() == [0, 2, 4, 1, 3, 0, 2, 4]
    rep = parse_protocol("dense:8x2", short_video="repeat")
    assert rep.test(5)[0].tolist() == [0, 2, 4, 4, 4, 4, 4, 4]
    uni = parse_protocol("uniform:8", short_video="repeat")
    assert uni.test(4)[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert parse_protocol("uniform:6").train(3, np.random.default_rng(0)).tolist() == [0, 1, 2, 0, 1, 2]


def test_uniform_sampling_segments():
    s = parse_protocol("uniform:4")
    assert s.test(40)[0].tolist() == [5, 15, 25, 35]  # middle of each segment
    a, b = s.test(40, clips=2)
    assert a.tolist() == [2, 12, 22, 32] and b.tolist() == [7, 17, 27, 37]
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = s.train(40, rng)
        assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(idx))


@pytest.mark.parametrize("bad", ["dense:8", "uniform:0", "random:8", "dense:0x2"])
def test_bad_protocols_are_named(bad):
    with pytest.raises(ValueError, match="protocol|positive"):
        parse_protocol(bad)


def test_views():
    assert parse_views("4x3") == (4, 3) and parse_views("1x1") == (1, 1)
    with pytest.raises(ValueError, match="CLIPSxCROPS"):
        parse_views("4x2")


# ----------------------------------------------------------------------------------------- transforms
def test_train_transform_applies_one_draw_to_every_frame():
    torch.manual_seed(0)
    frame = torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8)
    clip = frame.unsqueeze(0).repeat(8, 1, 1, 1)  # identical frames
    tf = build_transform(True, crop_size=64, randaugment=(2, 9), erasing=1.0, spatial="rrc")
    for _ in range(5):
        out = tf(tv_tensors.Video(clip))
        assert out.shape == (3, 8, 64, 64) and out.dtype == torch.float32
        assert torch.equal(out[:, :1].expand_as(out), out), "frames got different random parameters"


@pytest.mark.parametrize("spatial", ["jitter", "multiscale"])
def test_train_presets_shapes(spatial):
    clip = torch.randint(0, 255, (6, 3, 72, 96), dtype=torch.uint8)
    out = build_transform(True, crop_size=48, spatial=spatial)(tv_tensors.Video(clip))
    assert out.shape == (3, 6, 48, 48)


def test_eval_three_crops_cover_the_long_side():
    clip = torch.arange(100, dtype=torch.uint8).view(1, 1, 1, 100).expand(4, 3, 50, 100).contiguous()
    out = build_transform(False, crop_size=50, crops=3, mean=(0, 0, 0), std=(1, 1, 1))(tv_tensors.Video(clip))
    assert out.shape == (3, 3, 4, 50, 50)
    firsts = (out[:, 0, 0, 0, 0] * 255).round().tolist()
    assert firsts == [0, 25, 50]  # left, centre, right
    assert build_transform(False, crop_size=50)(tv_tensors.Video(clip)).shape == (3, 4, 50, 50)


def _smoothed(labels, k, smoothing):
    """One-hot targets with label smoothing, written out by hand."""
    t = torch.full((len(labels), k), smoothing / k)
    t[torch.arange(len(labels)), labels] += 1 - smoothing
    return t


def test_cutmix_box_is_shared_by_all_frames_and_lambda_is_the_kept_area():
    np.random.seed(0)  # noqa: NPY002  (timm draws from NumPy's global generator)
    mix = VideoMixup(5, mixup_alpha=0, cutmix_alpha=1.0, label_smoothing=0.1)
    video = torch.randn(4, 3, 6, 16, 20)
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(5):
        v, t = mix(video.clone(), labels)
        pasted = (v != video).any(dim=1)  # (B, T, H, W)
        assert pasted.any(), "nothing pasted"
        box = pasted[0, 0]
        assert all(torch.equal(pasted[b, f], box) for b in range(4) for f in range(6)), "box differs across frames"
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert box.sum() == (y1 - y0) * (x1 - x0)  # a rectangle
        torch.testing.assert_close(v[..., y0:y1, x0:x1], video.flip(0)[..., y0:y1, x0:x1], rtol=0, atol=0)
        lam = 1 - float((y1 - y0) * (x1 - x0)) / (16 * 20)
        smooth = _smoothed(labels, 5, 0.1)
        torch.testing.assert_close(t, lam * smooth + (1 - lam) * smooth.flip(0))


def test_mixup_targets_carry_the_pixel_lambda():
    np.random.seed(1)  # noqa: NPY002
    mix = VideoMixup(4, mixup_alpha=0.8, cutmix_alpha=0)
    video = torch.rand(4, 3, 2, 8, 8) + torch.arange(4.0).view(4, 1, 1, 1, 1) * 3  # clips far apart
    labels = torch.tensor([3, 1, 0, 2])
    v, t = mix(video.clone(), labels)
    partner = video.flip(0)
    lam = ((v - partner) / (video - partner))[0]  # v = lam * x + (1 - lam) * partner, per pixel
    torch.testing.assert_close(lam, torch.full_like(lam, float(lam.mean())), rtol=0, atol=1e-5)
    lam = float(lam.mean())
    assert 0 < lam < 1
    onehot = F.one_hot(labels, 4).float()
    torch.testing.assert_close(t, lam * onehot + (1 - lam) * onehot.flip(0), rtol=0, atol=1e-5)


def test_label_aware_flip_mirrors_the_clip_and_swaps_the_label(synthetic):
    classes = synthetic["classes"]
    left, right = classes.index("move_left"), classes.index("move_right")
    flip_map = {left: right, right: left}
    kw = dict(sampling="uniform:4", crop_size=32, spatial="jitter", train=True, seed=0, mean=(0, 0, 0), std=(1, 1, 1))
    plain = VideoDataset(synthetic["train"], flip=False, **kw)
    aware = VideoDataset(synthetic["train"], flip_map=flip_map, **kw)
    flipped = kept = 0
    for epoch, (i, (_, label)) in ((e, s) for e in range(3) for s in enumerate(aware.samples)):
        plain.set_epoch(epoch)
        aware.set_epoch(epoch)
        a, p = aware[i], plain[i]
        if label not in flip_map:
            assert a["label"] == label and torch.equal(a["video"], p["video"])
            continue
        # the same crop (drawn from (seed, epoch, index)), then a mirror with the partner's label, or nothing
        if a["label"] == label:
            kept += 1
            assert torch.equal(a["video"], p["video"])
        else:
            flipped += 1
            assert a["label"] == flip_map[label] and torch.equal(a["video"], p["video"].flip(-1))
    assert flipped and kept


# ---------------------------------------------------------------------------------------- annotations
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_annotation_formats_and_auto_detection(tmp_path):
    cases = {
        "kinetics": _write(
            tmp_path / "k400/train.csv",
            "label,youtube_id,time_start,time_end,split\nabseiling,abc,5,15,train\nair drumming,x y,0,10,train\n",
        ),
        "ssv2": _write(
            tmp_path / "ssv2/train.json",
            json.dumps([{"id": "7", "template": "Pushing [something] from left to right", "placeholders": []}]),
        ),
        "ssv1": _write(tmp_path / "ssv1/train.csv", "100218;Something falling like a feather\n9;Pushing something\n"),
        "diving48": _write(tmp_path / "d48/train.json", json.dumps([{"vid_name": "a b", "label": 3}])),
        "mit": _write(tmp_path / "mit/trainingSet.csv", "running/v1.mp4,running,3,0\nsinging/v 2.mp4,singing,2,0\n"),
        "ucf101": _write(tmp_path / "ucf/trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"),
        "list": _write(tmp_path / "list.txt", "clips/with space.mp4 1\nclips/b.mp4 0\n"),
        "csv": _write(tmp_path / "plain.csv", 'path,label\n"dir with space/a.mp4",cat\nb.mp4,dog\n'),
    }
    _write(tmp_path / "ssv2/labels.json", json.dumps({"Pushing something from left to right": "0", "Other": "1"}))
    _write(tmp_path / "ucf/classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    for fmt, path in cases.items():
        assert detect_format(path) == fmt, fmt
    k = load_annotations(cases["kinetics"], root=tmp_path / "videos")
    assert k.classes == ["abseiling", "air drumming"]
    assert k.samples[0] == (str(tmp_path / "videos/abc_000005_000015.mp4"), 0)
    s = load_annotations(cases["ssv2"], root="/data")
    assert s.classes == ["Pushing something from left to right", "Other"] and s.samples == [("/data/7.webm", 0)]
    assert load_annotations(cases["ssv1"], root="/f").samples[0] == ("/f/100218", 1)  # classes sorted
    assert load_annotations(cases["diving48"], root="/d").samples == [("/d/a b.mp4", 3)]
    assert load_annotations(cases["mit"], root="/m").samples[1] == ("/m/singing/v 2.mp4", 1)
    u = load_annotations(cases["ucf101"], root="/u")
    assert u.classes == ["ApplyEyeMakeup", "ApplyLipstick"] and u.samples[0][1] == 0
    lst = load_annotations(cases["list"], root="/r")
    assert lst.samples == [("/r/clips/with space.mp4", 1), ("/r/clips/b.mp4", 0)] and lst.classes == ["0", "1"]
    c = load_annotations(cases["csv"], root="/c", classes=["dog", "cat"])
    assert c.samples == [("/c/dir with space/a.mp4", 1), ("/c/b.mp4", 0)]


def test_hmdb_splits_and_class_folders(tmp_path):
    _write(tmp_path / "splits/brush_hair_test_split1.txt", "a.avi 1\nb.avi 2\nc.avi 0\n")
    _write(tmp_path / "splits/cartwheel_test_split1.txt", "d e.avi 1\n")
    ann = load_annotations(tmp_path / "splits", root="/v", subset="train")
    assert ann.format == "hmdb51" and ann.classes == ["brush_hair", "cartwheel"]
    assert ann.samples == [("/v/brush_hair/a.avi", 0), ("/v/cartwheel/d e.avi", 1)]
    assert load_annotations(tmp_path / "splits", root="/v", subset="test").samples == [("/v/brush_hair/b.avi", 0)]
    for cls in ("jump", "run"):
        _write(tmp_path / f"tree/{cls}/x.mp4", "")
    tree = load_annotations(tmp_path / "tree")
    assert tree.format == "folder" and tree.classes == ["jump", "run"] and len(tree) == 2


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_annotations(tmp_path / "nope.csv")


# ----------------------------------------------------------------------------------- bad files, data
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), per_class=2, val_per_class=1, frames=16, size=48)


def test_synthetic_pairs_are_time_reversals():
    a = render_clip("move_left", 8, 32, np.random.default_rng(3))
    b = render_clip("move_right", 8, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b[::-1])


def test_dataset_survives_bad_files(synthetic, tmp_path):
    root = synthetic["root"]
    bad = {
        "empty.mp4": b"",
        "random.mp4": np.random.default_rng(0).bytes(5000),
        "text.mp4": b"this is not a video\n" * 20,
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    good = (root / "train/grow_0000.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    rows = ["path,label"] + [f"{n},grow" for n in [*bad, "truncated.mp4", "missing.mp4"]]
    good_rows = (root / "train.csv").read_text().splitlines()[1:]
    (root / "mixed.csv").write_text("\n".join(rows + good_rows) + "\n")
    report = tmp_path / "run"
    ds = VideoDataset(root / "mixed.csv", sampling="uniform:8", crop_size=32, report_dir=report, train=True)
    for epoch in range(2):  # two epochs, two workers: each bad file still appears once
        ds.set_epoch(epoch)
        seen = []
        for batch in DataLoader(ds, batch_size=3, num_workers=2):
            assert batch["video"].shape[1:] == (3, 8, 32, 32)
            seen += batch["index"].tolist()
        assert sorted(seen) == list(range(len(ds)))
    with open(report / "bad_files.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    assert len(rows[1:]) == len({r[0] for r in rows[1:]}), "a file is listed twice"
    reported = dict(read_bad_files(report))
    expected_bad = {str(root / n) for n in [*bad, "missing.mp4"]}
    assert expected_bad <= set(reported), reported
    assert set(reported) <= expected_bad | {str(root / "truncated.mp4")}
    assert all(reason for reason in reported.values())
    # every good file is used: load each good row directly
    for i, (path, _) in enumerate(ds.samples):
        if path not in reported:
            assert ds.load(i)["index"] == i
    strict = VideoDataset(root / "mixed.csv", sampling="uniform:8", crop_size=32, on_error="raise")
    with pytest.raises(Exception, match="missing.mp4|not found"):
        strict[rows.index("missing.mp4,grow") - 1]
    report_scan = check_videos(root / "mixed.csv", workers=2)
    assert report_scan["unreadable"] and report_scan["readable"] == report_scan["total"] - len(
        report_scan["unreadable"]
    )


def test_skip_policy_returns_the_error_and_collate_valid_lists_it(synthetic, tmp_path):
    root = synthetic["root"]
    (root / "skip_empty.mp4").write_bytes(b"")
    (root / "skip.csv").write_text("path,label\nval/grow_0000.mp4,grow\nskip_empty.mp4,grow\n")
    ds = VideoDataset(
        root / "skip.csv", sampling="uniform:4", crop_size=32, on_error="skip", classes=synthetic["classes"]
    )
    bad = ds[1]
    assert bad["index"] == 1 and bad["path"] == str(root / "skip_empty.mp4") and bad["error"]
    batch = collate_valid([ds[0], bad])
    assert batch["video"].shape[0] == 1 and batch["index"].tolist() == [0]
    assert [e["index"] for e in batch["errors"]] == [1]
    assert "video" not in collate_valid([bad])


def test_a_bug_in_a_transform_is_raised_not_substituted(synthetic):
    def broken(frames):
        raise ZeroDivisionError("a bug in the transform")

    ds = VideoDataset(synthetic["train"], sampling="uniform:4", transform=broken, on_error="substitute")
    with pytest.raises(ZeroDivisionError, match="a bug in the transform"):
        ds[0]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty_label.csv", "path,label\na.mp4,cat\nb.mp4,\n", ":3: empty label"),
        ("ragged.csv", "path,label\na.mp4,cat\nb.mp4\n", ":3: expected 'path,label', got 1 field"),
        ("binary.csv", b"path,label\na.mp4,cat\n\xff\xfe\x00garbage\n", ":3: not a text annotation file"),
        ("nul.txt", b"a.mp4 1\n\x00\x00\x00\n", ":2: not a text annotation file"),
        ("list.txt", "a.mp4 1\nb.mp4\n", ":2: expected 'path label'"),
        ("ssv1.csv", "1;Pushing\n2;\n", ":2: empty label"),
        ("mit.csv", "run/v1.mp4,running,3,0\nsing/v2.mp4\n", ":2: expected 'path,label,...'"),
        ("bad.json", '[{"vid_name": "a", "label": 1},\n {"vid_name": ]', ":2: invalid JSON"),
    ],
)
def test_bad_annotation_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as err:
        load_annotations(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_dataset_root_is_not_read_as_class_folders(synthetic):
    with pytest.raises(ValueError, match="looks like a dataset root .*train.csv"):
        load_annotations(synthetic["root"])


def test_eval_dataset_stacks_views(synthetic):
    ds = VideoDataset(synthetic["val"], sampling="uniform:8", views="2x3", train=False, crop_size=32)
    sample = ds[0]
    assert sample["video"].shape == (6, 3, 8, 32, 32) and ds.num_classes == 8


@pytest.mark.parametrize("reader_cls", READERS)
def test_variable_frame_rate_indices_follow_presentation_order(tmp_path, reader_cls):
    """Irregular timestamps (VFR): index i is the i-th frame shown, whatever the gaps between them."""
    import fractions

    import av

    frames = _known_frames()[:20]
    stamps = np.cumsum([0, *np.random.default_rng(0).integers(10, 90, len(frames) - 1)])
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "rgb24"
        stream.options = {"qp": "0", "g": "5"}
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for image, pts in zip(frames, stamps):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(pts), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    reader = reader_cls(path)
    assert reader.num_frames == 20
    idx = [0, 7, 19, 3, 12]
    np.testing.assert_array_equal(reader.get_frames(idx, layout="THWC").numpy(), frames[idx])
