"""The end-to-end demo behind ``make demo``: synthetic videos -> a nano model on CPU -> multi-view eval.

The synthetic classes come in pairs that differ only in the direction of time, so the accuracy it
prints is also a check that decoding, sampling, the model's temporal shift and training work together:
a model that ignored frame order would stay near 50% within each pair. ``pst_nano`` by default; any
registered model with ``model=`` (``kinetoscope demo --model NAME``), trained with its own registered
recipe (``ModelConfig.recipe``: learning rate, warm-up, batch, flips off for the nanos).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from ..data import SYNTHETIC_CLASSES, write_synthetic_dataset
from ..models import list_models
from ..profiling import zoo_rows
from .config import load_config
from .train import train

# All four time-reversal pairs, rotation included: the nanos pool the first moments of their last grid,
# which is what tells a clockwise turn about the frame centre from a counter-clockwise one
# (docs/benchmarks/temporal_truth.md).
DEMO_CLASSES = list(SYNTHETIC_CLASSES)

DEMO_MODEL = "pst_nano"
# The input and schedule of the demo; the optimisation settings (lr, warm-up, batch, weight decay, flips,
# label smoothing) are the model's registered recipe, as a plain `kinetoscope train --model NAME` gets.
DEMO_RECIPE = dict(
    frames=16,
    size=64,
    short_side=64,
    sampling="uniform:16",
    views="2x1",
    spatial="jitter",
    flip=False,  # a mirrored move_left is a move_right: plain flips would corrupt the labels
    epochs=12,
    workers=2,
    log_every=5,
    eval_every=4,
)


def run_demo(
    out_dir: str | Path = "demo_out", epochs: int | None = None, per_class: int = 40, model: str = DEMO_MODEL
) -> dict:
    if model not in list_models():
        raise ValueError(f"unknown model {model!r}; `kinetoscope models` lists them (e.g. {DEMO_MODEL})")
    out = Path(out_dir)
    t0 = time.perf_counter()
    family = model.split("_")[0]
    print(f"kinetoscope demo: {len(list_models())} registered models; the {family} family beside its paper:")
    for r in zoo_rows(f"{family}_*"):
        name = r["name"]
        paper = f"paper {r['paper_params_m']} M / {r['paper_gflops']} G" if r["paper_gflops"] else "no paper numbers"
        print(f"  {name:14s} {r['params_m']:7.2f} M params  {r['gflops']:7.2f} GMACs  ({paper})")
    data = out / "data"
    spec = {"classes": DEMO_CLASSES, "per_class": per_class, "val_per_class": max(per_class // 4, 2), "frames": 32,
            "size": 72}  # fmt: skip
    marker = data / "demo.json"
    if not marker.exists() or json.loads(marker.read_text()) != spec or not (data / "val.csv").exists():
        if data.exists() and not marker.exists() and any(data.iterdir()):
            raise ValueError(f"{data} holds files the demo did not write; choose another --output")
        print(f"writing the synthetic time-direction dataset to {data} ...", flush=True)
        for split in ("train", "val"):
            shutil.rmtree(data / split, ignore_errors=True)  # the demo's own videos, from another --per-class
        write_synthetic_dataset(data, progress=True, **spec)
        marker.write_text(json.dumps(spec))
    run = out / ("run" if model == DEMO_MODEL else f"run_{model}")
    recipe = dict(DEMO_RECIPE, model=model, train=str(data / "train.csv"), val=str(data / "val.csv"),
                  output=str(run), overwrite=_is_demo_run(run, data, model))  # fmt: skip
    if epochs is not None:
        recipe["epochs"] = epochs
        recipe["eval_every"] = max(1, min(recipe["eval_every"], epochs))
    cfg = load_config(None, recipe)  # the model's registered recipe under the demo's settings
    print(f"training {model} for {cfg.epochs} epochs on CPU (lr {cfg.lr:g}, batch {cfg.batch_size}) ...")
    result = train(cfg)
    if "interrupted" in result:
        return result
    top1 = result.get("metrics", {}).get("top1")
    print(
        f"\nvalidation top-1 {top1:.1f}% (chance {100 / len(DEMO_CLASSES):.1f}%; a frame-order-blind model "
        "is capped at 50%) "
        f"with {recipe['views']} views, in {time.perf_counter() - t0:.0f} s"
    )
    print(f"plots: {Path(result['output']) / 'curves.png'}, {Path(result['output']) / 'confusion.png'}")
    print(f"per-video scores: {Path(result['output']) / 'eval.json'}")
    return result


def _is_demo_run(run: Path, data: Path, model: str) -> bool:
    """The demo replaces its own previous run, and nothing else."""
    config = run / "config.yaml"
    if not config.exists():
        return False
    saved = yaml.safe_load(config.read_text()) or {}
    return saved.get("train") == os.path.abspath(data / "train.csv") and saved.get("model") == model
