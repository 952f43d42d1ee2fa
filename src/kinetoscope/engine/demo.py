"""The end-to-end demo behind ``make demo``: synthetic videos -> pst_nano on CPU -> multi-view eval.

The synthetic classes come in pairs that differ only in the direction of time, so the accuracy it
prints is also a check that decoding, sampling, the model's temporal shift and training work together:
a model that ignored frame order would stay near 50% within each pair.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import write_synthetic_dataset
from ..models import list_models
from ..profiling import paper_comparison
from .config import TrainConfig
from .train import train

# The rotation pair is left out of the demo: with global average pooling and no absolute position
# embedding, a Swin-style pst_nano needs far longer than a few CPU minutes to tell clockwise from
# counter-clockwise orbits (measured: 30-40% within that pair after 16 epochs, 100% on the others).
DEMO_CLASSES = ["move_left", "move_right", "move_up", "move_down", "grow", "shrink"]

DEMO_RECIPE = dict(
    model="pst_nano",
    frames=16,
    size=64,
    short_side=64,
    sampling="uniform:16",
    views="2x1",
    spatial="jitter",
    flip=False,  # a mirrored move_left is a move_right: plain flips would corrupt the labels
    epochs=16,
    batch_size=8,
    lr=1.5e-3,
    weight_decay=0.05,
    warmup_epochs=1,
    label_smoothing=0.0,
    workers=2,
    log_every=5,
    eval_every=4,
)


def run_demo(out_dir: str | Path = "demo_out", epochs: int | None = None, per_class: int = 40) -> dict:
    out = Path(out_dir)
    t0 = time.perf_counter()
    print(f"kinetoscope demo: {len(list_models())} registered models; the PST family beside its paper:")
    for name in list_models("pst_*"):
        r = paper_comparison(name)
        paper = f"paper {r['paper_params_m']} M / {r['paper_gflops']} G" if r["paper_gflops"] else "no paper numbers"
        print(f"  {name:14s} {r['params_m']:7.2f} M params  {r['gflops']:7.2f} GMACs  ({paper})")
    data = out / "data"
    if not (data / "val.csv").exists():
        print(f"writing the synthetic time-direction dataset to {data} ...")
        info = write_synthetic_dataset(
            data, DEMO_CLASSES, per_class=per_class, val_per_class=max(per_class // 4, 2), frames=32, size=72
        )
    else:
        info = {"train": data / "train.csv", "val": data / "val.csv"}
    recipe = dict(DEMO_RECIPE, train=str(info["train"]), val=str(info["val"]), output=str(out / "run"))
    if epochs is not None:
        recipe["epochs"] = epochs
        recipe["eval_every"] = max(1, min(recipe["eval_every"], epochs))
    print(f"training pst_nano for {recipe['epochs']} epochs on CPU ...")
    result = train(TrainConfig(**recipe))
    top1 = result.get("metrics", {}).get("top1")
    print(
        f"\nvalidation top-1 {top1:.1f}% (chance {100 / len(DEMO_CLASSES):.1f}%; a frame-order-blind model "
        "is capped at 50%) "
        f"with {recipe['views']} views, in {time.perf_counter() - t0:.0f} s"
    )
    print(f"plots: {Path(result['output']) / 'curves.png'}, {Path(result['output']) / 'confusion.png'}")
    print(f"per-video scores: {Path(result['output']) / 'eval.json'}")
    return result
