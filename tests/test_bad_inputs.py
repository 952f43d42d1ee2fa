"""Bad input through the CLI, in-process: each case exits with its code and one line, and touches no file.

Plus the promises about results: a run killed at any step resumes bit for bit (EMA, accumulation,
bf16 autocast and mixup on), and evaluation leaves unreadable videos out instead of counting others.
"""

import hashlib
import importlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from kinetoscope.cli import main as cli_main
from kinetoscope.data import write_synthetic_dataset
from kinetoscope.engine import checkpoint as ckpt
from kinetoscope.engine import load_trained
from kinetoscope.engine.evaluate import eval_dataset
from kinetoscope.engine.logging import read_metrics


def _train_args(ws, output, *extra):
    return ["train", "--model", "pst_nano", "--train", str(ws["train"]), "--val", str(ws["val"]), "--frames", "8",
            "--size", "32", "--epochs", "1", "--batch-size", "4", "--output", str(output),
            "--set", "workers=0", "views=1x1", "short_side=36", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A dataset, a trained run, and a folder of broken things."""
    d = tmp_path_factory.mktemp("bad_inputs")
    data = write_synthetic_dataset(d / "data", per_class=1, val_per_class=1, frames=16, size=40, workers=2)
    run = d / "run"
    assert cli_main(_train_args({"train": data["train"], "val": data["val"]}, run)) == 0
    last = (run / "last.pth").read_bytes()
    bad = d / "bad"
    bad.mkdir()
    (bad / "truncated.pth").write_bytes(last[: len(last) // 2])
    flipped = bytearray(last)
    flipped[-30] ^= 0x10  # inside the zip directory
    (bad / "flipped.pth").write_bytes(bytes(flipped))
    (bad / "empty.pth").write_bytes(b"")
    (bad / "text.pth").write_text("this is not a checkpoint\n")
    torch.save(ckpt.load(run / "last.pth")["model"], bad / "plain.pth")
    shutil.copy(run / "last.pth", bad / "pickle.safetensors")
    torch.save({"model": {}, "config": {"model": "pst_nano"}, "hook": pytest.Module}, bad / "evil.pth")
    (bad / "malformed.yaml").write_text("model: pst_nano\nlr: [0.1\n")
    root = Path(data["root"])
    (bad / "empty_label.csv").write_text(
        f"path,label\n{root}/train/grow_0000.mp4,grow\n{root}/train/shrink_0000.mp4,\n"
    )
    (bad / "ragged.csv").write_text(f"path,label\n{root}/train/grow_0000.mp4,grow\n{root}/train/shrink_0000.mp4\n")
    (bad / "binary.csv").write_bytes(b"path,label\n\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    (bad / "existing.json").write_text("{}")
    (bad / "existing.csv").write_text("path,reason\n")
    (bad / "unreadable.mp4").write_bytes(b"")
    (bad / "val_broken.csv").write_text(f"path,label\n{root}/val/grow_0000.mp4,grow\n{bad}/unreadable.mp4,shrink\n")
    run_trunc = d / "run_trunc"
    shutil.copytree(run, run_trunc)
    (run_trunc / "last.pth").write_bytes(last[: len(last) // 3])
    run_no_last = d / "run_no_last"
    shutil.copytree(run, run_no_last)
    (run_no_last / "last.pth").unlink()
    return {
        "dir": d, "run": run, "run_trunc": run_trunc, "run_no_last": run_no_last, "bad": bad, "train": data["train"],
        "val": data["val"], "root": root, "video": str(root / "val/grow_0000.mp4"),
    }  # fmt: skip


def _snapshot(folder: Path) -> dict:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# (id, argv from the workspace, exit code, a piece of the one-line message)
CASES = [
    ("frames-0", lambda w: _train_args(w, w["dir"] / "new", "--frames", "0"), 2,
     "argument --frames: must be a positive integer, got 0"),
    ("size-negative", lambda w: _train_args(w, w["dir"] / "new", "--size=-5"), 2,
     "argument --size: must be a positive integer, got -5"),
    ("frames-not-whole-tubelets", lambda w: [*_train_args(w, w["dir"] / "new", "--frames", "7"), "--model", "cst_nano"],
     2, "input frames 7 is not divisible by the tubelet size 2; use a multiple of 2 (e.g. 6 or 8)"),
    ("train-short-side-below-crop", lambda w: _train_args(w, w["dir"] / "new", "train_short_side=[0.9, 1.1]"), 2,
     "config train_short_side: expected [low, high] multiples of the crop size with 1 <= low <= high"),
    ("convert-frames-0", lambda w: ["convert", str(w["run"] / "best.pth"), str(w["dir"] / "x.safetensors"), "--model",
                                    "pst_nano", "--frames", "0"], 2,
     "argument --frames: must be a positive integer, got 0"),
    ("epochs-0", lambda w: _train_args(w, w["dir"] / "new", "--epochs", "0"), 2, "argument --epochs"),
    ("train-device", lambda w: _train_args(w, w["dir"] / "new", "--device", "foo"), 2,
     "argument --device: invalid choice: 'foo'"),
    ("eval-device", lambda w: ["eval", "--checkpoint", str(w["run"] / "last.pth"), "--device", "foo"], 2,
     "argument --device: invalid choice: 'foo'"),
    ("predict-device", lambda w: ["predict", w["video"], "--checkpoint", str(w["run"] / "last.pth"), "--device", "foo"],
     2, "argument --device: invalid choice: 'foo'"),
    ("models-unknown", lambda w: ["models", "nonexistent"], 2, "no registered model matches 'nonexistent'"),
    ("profile-repeats-0", lambda w: ["profile", "pst_nano", "--repeats", "0"], 2, "argument --repeats"),
    ("set-lr-string", lambda w: _train_args(w, w["dir"] / "new", "lr=abc"), 2,
     "config lr: expected a number, got 'abc'"),
    ("set-epochs-word", lambda w: _train_args(w, w["dir"] / "new", "epochs=one"), 2,
     "config epochs: expected an integer"),
    ("set-amp-fp8", lambda w: _train_args(w, w["dir"] / "new", "amp=fp8"), 2, "'fp8' is not one of none, bf16, fp16"),
    ("set-no-equals", lambda w: _train_args(w, w["dir"] / "new", "lr"), 2, "--set expects key=value"),
    ("set-unknown-key", lambda w: _train_args(w, w["dir"] / "new", "lrate=0.1"), 2,
     "unknown config keys ['lrate']"),
    ("mixup-odd-batch", lambda w: _train_args(w, w["dir"] / "new", "mixup=0.8", "batch_size=3"), 2,
     "even batch_size"),
    ("malformed-yaml", lambda w: ["train", "--config", str(w["bad"] / "malformed.yaml")], 2,
     "malformed.yaml:3: malformed YAML"),
    ("model-kwargs-typo", lambda w: _train_args(w, w["dir"] / "new", "model_kwargs={drop_pth_rate: 0.1}"), 2,
     "'drop_pth_rate' not an argument of PatchShiftSwin"),
    ("run-folder-not-empty", lambda w: _train_args(w, w["run"]), 2, "already holds a run"),
    ("resume-other-model", lambda w: ["train", "--output", str(w["run"]), "--resume", "--model", "stat_nano"], 2,
     "model differs (checkpoint 'pst_nano', now 'stat_nano')"),
    ("resume-other-frames", lambda w: ["train", "--output", str(w["run"]), "--resume", "--frames", "16"], 2,
     "frames differs (checkpoint 8, now 16)"),
    ("resume-other-batch", lambda w: ["train", "--output", str(w["run"]), "--resume", "--batch-size", "2"], 2,
     "batch_size differs (checkpoint 4, now 2)"),
    ("resume-without-last-keeps-best", lambda w: ["train", "--output", str(w["run_no_last"]), "--resume"], 2,
     "has no last.pth to resume from but holds best.pth"),
    ("resume-truncated-last", lambda w: ["train", "--output", str(w["run_trunc"]), "--resume"], 2,
     "cannot resume: cannot read"),
    ("eval-truncated", lambda w: ["eval", "--checkpoint", str(w["bad"] / "truncated.pth")], 2, "damaged"),
    ("eval-bit-flipped", lambda w: ["eval", "--checkpoint", str(w["bad"] / "flipped.pth")], 2, "cannot read"),
    ("eval-empty", lambda w: ["eval", "--checkpoint", str(w["bad"] / "empty.pth")], 2, "empty file, not a checkpoint"),
    ("eval-text", lambda w: ["eval", "--checkpoint", str(w["bad"] / "text.pth")], 2, "cannot read"),
    ("eval-plain-state-dict", lambda w: ["eval", "--checkpoint", str(w["bad"] / "plain.pth")], 2, "a plain state_dict"),
    ("eval-pickle-as-safetensors", lambda w: ["eval", "--checkpoint", str(w["bad"] / "pickle.safetensors")], 2,
     "not a safetensors file"),
    ("eval-pickled-object", lambda w: ["eval", "--checkpoint", str(w["bad"] / "evil.pth")], 2, "`kinetoscope convert`"),
    ("eval-missing", lambda w: ["eval", "--checkpoint", str(w["bad"] / "nope.pth")], 2, "checkpoint not found"),
    ("eval-output-exists", lambda w: ["eval", "--checkpoint", str(w["run"] / "last.pth"), "--output",
                                      str(w["bad"] / "existing.json")], 2, "exists; pass --overwrite"),  # fmt: skip
    ("eval-unreadable-raise", lambda w: ["eval", "--checkpoint", str(w["run"] / "last.pth"), "--data",
                                         str(w["bad"] / "val_broken.csv"), "--on-error", "raise"], 2,
     "unreadable.mp4"),  # fmt: skip
    ("export-over-input", lambda w: ["export", "--checkpoint", str(w["run"] / "best.pth"), "--output",
                                     str(w["run"] / "best.pth")], 2, "over its input"),  # fmt: skip
    ("export-over-file", lambda w: ["export", "--checkpoint", str(w["run"] / "best.pth"), "--output",
                                    str(w["bad"] / "existing.json")], 2, "exists; pass --overwrite"),  # fmt: skip
    ("check-videos-report-exists", lambda w: ["check-videos", str(w["val"]), "--report",
                                              str(w["bad"] / "existing.csv")], 2, "exists; pass --overwrite"),
    ("train-dataset-root", lambda w: [*_train_args(w, w["dir"] / "new"), "--train", str(w["root"])], 2,
     "looks like a dataset root"),
    ("train-missing-annotations", lambda w: [*_train_args(w, w["dir"] / "new"), "--train", str(w["bad"] / "no.csv")],
     2, "annotation file not found"),
    ("train-empty-label", lambda w: [*_train_args(w, w["dir"] / "new"), "--train", str(w["bad"] / "empty_label.csv")],
     2, "empty_label.csv:3: empty label"),
    ("train-ragged-row", lambda w: [*_train_args(w, w["dir"] / "new"), "--train", str(w["bad"] / "ragged.csv")], 2,
     "ragged.csv:3: expected 'path,label', got 1 field"),
    ("train-binary-annotations", lambda w: [*_train_args(w, w["dir"] / "new"), "--train", str(w["bad"] / "binary.csv")],
     2, "binary.csv:2: not a text annotation file"),
    ("synth-over-dataset", lambda w: ["synth", str(w["root"])], 2, "already holds"),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(ws, capsys, argv, code, message):
    args = argv(ws)
    before = _snapshot(ws["dir"])
    assert cli_main(args) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"kinetoscope {args[0]}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(ln.startswith("kinetoscope: ") for ln in lines[:-1]), err  # only "loading ..." status lines
    assert message in errors[0], errors[0]
    assert "weights_only=False" not in err and "will likely succeed" not in err
    assert _snapshot(ws["dir"]) == before, "a file was written or changed"
    assert not (ws["dir"] / "new").exists()


def test_overwrite_replaces_the_run_and_its_logs(ws, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ws["run"], out)
    (out / "notes.txt").write_text("mine")
    assert cli_main([*_train_args(ws, out), "--overwrite", "--batch-size", "2"]) == 0
    steps = [s for s, _ in read_metrics(out / "metrics.csv")["train/loss"]]
    assert steps == [1, 4]  # the new run's (first and last of its 4 steps), not appended to the old run's [1, 2]
    assert ckpt.load(out / "last.pth")["config"]["batch_size"] == 2
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_debug_shows_the_traceback(ws, capsys):
    with pytest.raises(ValueError, match="empty file"):
        cli_main(["--debug", "eval", "--checkpoint", str(ws["bad"] / "empty.pth")])


# --------------------------------------------------------------------------------------- evaluation
def _naive(checkpoint: Path, annotations: Path, readable: list[str]) -> float:
    """Top-1 over the readable videos by hand (views through the model one at a time)."""
    model, classes, cfg, _ = load_trained(checkpoint)
    ds = eval_dataset(cfg, annotations, classes)
    hits = n = 0
    with torch.no_grad():
        for i, (path, label) in enumerate(ds.samples):
            if path not in readable:
                continue
            views = ds[i]["video"]
            probs = torch.stack([model(v[None])[0].softmax(-1) for v in views]).mean(0)
            hits += int(probs.argmax()) == label
            n += 1
    return 100.0 * hits / n


def test_eval_excludes_unreadable_videos_and_scores_the_readable_ones_exactly(ws, tmp_path, capsys):
    root, bad = ws["root"], tmp_path / "broken"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video\n" * 10)
    good = (root / "val.csv").read_text().splitlines()[1:]
    rows = [f"{root / p},{label}" for p, label in (r.split(",") for r in good)]
    rows += [f"{bad / 'empty.mp4'},grow", f"{bad / 'text.mp4'},shrink", f"{bad / 'missing.mp4'},move_left"]
    data = tmp_path / "val_broken.csv"
    data.write_text("path,label\n" + "\n".join(rows) + "\n")
    readable = [r.split(",")[0] for r in rows[:8]]
    expected = _naive(ws["run"] / "last.pth", data, readable)
    report = tmp_path / "report.json"
    args = ["eval", "--checkpoint", str(ws["run"] / "last.pth"), "--data", str(data), "--output", str(report)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "over 8 videos (3 of 11 videos unreadable, excluded)" in printed
    got = json.loads(report.read_text())
    assert got["top1"] == pytest.approx(expected)
    assert (got["num_videos"], got["num_unreadable"], got["num_total"]) == (8, 3, 11)
    assert sorted(u["path"] for u in got["unreadable"]) == sorted(r.split(",")[0] for r in rows[8:])
    assert all(u["reason"] for u in got["unreadable"])
    assert sorted(v["path"] for v in got["per_video"]) == sorted(readable)


def test_training_validation_excludes_unreadable_videos(ws, tmp_path):
    out = tmp_path / "run"
    args = _train_args({"train": ws["train"], "val": ws["bad"] / "val_broken.csv"}, out)
    assert cli_main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert (report["num_videos"], report["num_unreadable"]) == (1, 1)
    expected = _naive(out / "best.pth", ws["bad"] / "val_broken.csv", [ws["video"]])
    assert report["top1"] == pytest.approx(expected)
    assert str(ws["bad"] / "unreadable.mp4") in (out / "bad_files.csv").read_text()


# ------------------------------------------------------------------------------------ kill + resume
def _resume_args(ws, output):
    """EMA, two accumulated micro-batches, bf16 autocast, mixup and cutmix, drop-path: 2 steps per epoch."""
    return ["train", "--model", "pst_nano", "--train", str(ws["train"]), "--val", str(ws["val"]), "--frames", "8",
            "--size", "32", "--epochs", "2", "--batch-size", "2", "--output", str(output), "--set", "workers=0",
            "views=1x1", "short_side=36", "accum_steps=2", "ema_decay=0.9", "amp=bf16", "mixup=0.8", "cutmix=1.0",
            "log_every=1", "deterministic=true", "model_kwargs={drop_path_rate: 0.1}"]  # fmt: skip


@pytest.fixture(scope="module")
def straight(ws):
    # module fixtures run before conftest's per-test thread setting, and float sums depend on the thread
    # count: the reference run must use the count the resumed runs use
    torch.set_num_threads(1)
    out = ws["dir"] / "straight"
    assert cli_main(_resume_args(ws, out)) == 0
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    sa, sb = ckpt.load(a / "last.pth"), ckpt.load(b / "last.pth")
    assert (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"]) == (2, 4)
    for part in ("model", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), f"{part} {k}"
    la, lb = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert la["train/loss"] == lb["train/loss"]  # each step logged once, with the same loss
    assert la["val/top1"] == lb["val/top1"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [1, 2, 3], ids=["mid-epoch-1", "epoch-boundary", "mid-epoch-2"])
def test_a_run_stopped_at_any_step_resumes_bit_for_bit(ws, straight, tmp_path, stop_at):
    out = tmp_path / "run"
    assert cli_main([*_resume_args(ws, out), f"max_steps={stop_at}"]) == 0
    assert ckpt.load(out / "last.pth")["step"] == stop_at
    assert cli_main(["train", "--output", str(out), "--resume"]) == 0  # settings from out/config.yaml
    _assert_same_run(straight, out)


def test_ctrl_c_saves_says_how_to_resume_and_the_resumed_run_is_exact(ws, straight, tmp_path, capsys, monkeypatch):
    train_module = importlib.import_module("kinetoscope.engine.train")  # the package's `train` is the function

    real_step, calls = train_module.optimizer_step, []

    def interrupting_step(*args, **kwargs):
        real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while step 3 runs

    monkeypatch.setattr(train_module, "optimizer_step", interrupting_step)
    out = tmp_path / "run"
    capsys.readouterr()
    handler = signal.getsignal(signal.SIGINT)
    assert cli_main(_resume_args(ws, out)) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"SIGINT: stopped at step 3 (epoch 2/2), saved {out / 'last.pth'}; resume with: kinetoscope train " \
           f"--output {out} --resume" in err  # fmt: skip
    assert ckpt.load(out / "last.pth")["step"] == 3
    monkeypatch.setattr(train_module, "optimizer_step", real_step)
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is put back
    assert cli_main(["train", "--output", str(out), "--resume"]) == 0
    _assert_same_run(straight, out)


def test_periodic_checkpoints_during_an_epoch(ws, tmp_path, monkeypatch):
    train_module = importlib.import_module("kinetoscope.engine.train")  # the package's `train` is the function

    saves = []
    real_save = train_module.Saver.save

    def spy(self, path, parts, pos):
        saves.append((path.name, pos.step))
        real_save(self, path, parts, pos)

    monkeypatch.setattr(train_module.Saver, "save", spy)
    out = tmp_path / "run"
    assert cli_main([*_train_args(ws, out), "save_every_minutes=1e-9", "batch_size=2"]) == 0
    # 4 steps: mid-epoch saves after steps 1-3, then last.pth (and best.pth) at the epoch's end
    assert [s for s in saves if s[0] == "last.pth"] == [("last.pth", 1), ("last.pth", 2), ("last.pth", 3),
                                                        ("last.pth", 4)]  # fmt: skip
