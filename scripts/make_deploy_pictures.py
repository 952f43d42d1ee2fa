"""Remake the pictures of the README's "Deploy and inspect" (docs/deploy/): a timeline and an explanation.

Trains two pst_nano runs on synthetic `move_left` / `move_up` clips (tests/test_deploy.py trains on the same
set with the same recipe, imported from here),
draws new clips of the same generator, then runs `kinetoscope predict --window` and `kinetoscope explain`
through the CLI and copies their pictures into docs/deploy/. About three minutes on one CPU thread:

    make pictures       # or: python scripts/make_deploy_pictures.py [--work DIR] [--docs docs/deploy]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from kinetoscope.cli import main as cli
from kinetoscope.data.synthetic import render_clip, write_video
from kinetoscope.engine import train
from kinetoscope.engine.config import TrainConfig

CLASSES = ["move_left", "move_up"]
FPS, FRAMES, SIZE = 12, 32, 64
RECIPE = dict(size=SIZE, short_side=SIZE, views="1x1", flip=False, batch_size=8, lr=1e-3, warmup_epochs=1,
              weight_decay=0.05, workers=0, eval_every=100, log_every=20)  # fmt: skip
# name: (clips, frames per clip, epochs); "explain" is tests/test_deploy.py's run (84 steps)
RUNS = {"explain": (48, 4, 14), "timeline": (96, 8, 20)}


def clip(label: str, seed: int, frames: int = FRAMES) -> np.ndarray:
    return render_clip(label, frames, SIZE, np.random.default_rng(seed))


def write_training_set(folder: Path, clips: int) -> Path:
    """``clips`` videos ``0.mp4 ...`` alternating over ``CLASSES`` (clip ``k`` drawn with seed ``k``) and their
    ``train.csv``; returns the csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for k in range(clips):
        label = CLASSES[k % 2]
        write_video(folder / f"{k}.mp4", clip(label, k), fps=FPS, crf=18)
        rows.append(f"{k}.mp4,{label}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def train_run(work: Path, name: str) -> Path:
    clips, frames, epochs = RUNS[name]
    csv = write_training_set(work / f"{name}_data", clips)
    torch.manual_seed(0)
    out = work / f"{name}_run"
    train(TrainConfig(model="pst_nano", train=str(csv), frames=frames, sampling=f"uniform:{frames}", epochs=epochs,
                      output=str(out), overwrite=True, **RECIPE))  # fmt: skip
    return out / "last.pth"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=None, help="folder for the clips and runs (default: a temporary one)")
    ap.add_argument("--docs", default=str(Path(__file__).resolve().parents[1] / "docs" / "deploy"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work or tempfile.mkdtemp(prefix="deploy_pictures_"))
    work.mkdir(parents=True, exist_ok=True)
    docs = Path(a.docs)
    print(f"working in {work}", flush=True)
    write_video(work / "move_up.mp4", clip("move_up", 7100), fps=FPS, crf=18)
    long = np.concatenate([clip("move_left", 7000), clip("move_up", 7001)])  # 64 frames: left, then up
    write_video(work / "long.mp4", long, fps=FPS, crf=18)
    checkpoints = {name: train_run(work, name) for name in RUNS}
    timeline = work / "timeline.csv"
    rc = cli(["predict", str(work / "long.mp4"), "--checkpoint", str(checkpoints["timeline"]), "--window", "2.67",
              "--stride", "0.17", "--output", str(timeline), "--overwrite"])  # fmt: skip
    rc = rc or cli(["explain", str(work / "move_up.mp4"), "--checkpoint", str(checkpoints["explain"]),
                    "--output", str(work / "why"), "--overwrite"])  # fmt: skip
    if rc:
        raise SystemExit(rc)
    docs.mkdir(parents=True, exist_ok=True)
    for src, dst in [(timeline.with_suffix(".png"), "timeline.png"), (work / "why" / "strip.png", "explain_strip.png"),
                     (work / "why" / "explanation.gif", "explain.gif")]:  # fmt: skip
        shutil.copyfile(src, docs / dst)
        print(f"wrote {docs / dst}")


if __name__ == "__main__":
    main()
