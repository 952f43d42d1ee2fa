"""Temporal truth: does every family's nano learn the direction of time?

``kinetoscope synth`` writes eight classes in four time-reversal pairs (left/right, up/down,
grow/shrink, clockwise/counter-clockwise): the two classes of a pair hold the same frames in opposite
orders, so a model blind to frame order is capped at 50% (it can name the pair, not the direction).
For every ``*_nano`` this trains, through the public CLI and with exactly the flags an outside user
would type (the registered nano carries its own recipe),

    kinetoscope train --model NAME --train T --val V --root R --frames 16 --size 64 --sampling uniform:16 --epochs 15

three runs, and reports validation top-1 (the nano's 2x1 views), accuracy per pair and minutes:

* ``main``: the synthetic set as written;
* ``shuffled``: the same videos with the frames of every video permuted (one fixed permutation per
  video, in train and val alike): the order-blind control, which must stay near 50%;
* ``ablation``: the main data with the family's temporal mechanism switched off by its own argument
  (``--set model_kwargs={...}``).

Runs are resumable: a finished run (its record ``RUN.json`` beside the run folder) is skipped, an
interrupted one is resumed from its ``last.pth``. ``--models`` / ``--runs`` pick a subset; the table
always lists all five families and marks what was not run. Writes the table between the markers of
``docs/benchmarks/temporal_truth.md`` (prose around them is kept) and a bar chart beside it.

    python benchmarks/temporal_truth.py [--models pst_nano,dualformer_nano] [--runs main,shuffled]
        [--out benchmarks_out/temporal_truth] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from kinetoscope._files import replace_between_markers
from kinetoscope.data.synthetic import PAIRS

# nano -> (what the ablation switches off, the model_kwargs that do it)
ABLATIONS: dict[str, tuple[str, dict]] = {
    "pst_nano": ("tps=None: 2D Swin frame by frame", {"tps": None}),
    "dualformer_nano": ("block_kinds='LL': local windows only, no global priors", {"block_kinds": "LL"}),
    "stat_nano": ("attention='CA': current-frame attention only", {"attention": "CA"}),
    "sct_nano": ("shift_frames=0: standard MSA in place of shifted MSA", {"shift_frames": 0}),
    "cst_nano": ("cross_stage=False: no cross-stage attention", {"cross_stage": False}),
}
MODELS = list(ABLATIONS)
RUNS = ("main", "shuffled", "ablation")
TRAIN_FLAGS = ["--frames", "16", "--size", "64", "--sampling", "uniform:16", "--epochs", "15"]
PAIR_NAMES = {"move_left": "left/right", "move_up": "up/down", "grow": "grow/shrink", "rotate_cw": "cw/ccw"}
TARGET, CAP = 95.0, 50.0  # the bar; what a frame-order-blind model can reach
BEGIN, END = "<!-- temporal_truth:begin -->", "<!-- temporal_truth:end -->"
README_MARKERS = ("<!-- temporal_truth_readme:begin -->", "<!-- temporal_truth_readme:end -->")


# ------------------------------------------------------------------------------------ pure functions
def pair_accuracy(report: dict) -> dict[str, dict]:
    """Per time-reversal pair from an ``eval.json`` report: ``{pair: {"acc", "first", "second"}}``, the
    share of the pair's videos given their exact label, and each direction's own accuracy (percent)."""
    classes, cm = report["classes"], np.asarray(report["confusion_matrix"])
    out = {}
    for first, second in PAIRS.items():
        if first not in classes or second not in classes:
            continue
        i, j = classes.index(first), classes.index(second)
        rows = cm[i].sum(), cm[j].sum()
        hits = cm[i, i], cm[j, j]
        out[PAIR_NAMES[first]] = {
            "acc": float(100.0 * sum(hits) / sum(rows)) if sum(rows) else None,
            "first": float(100.0 * hits[0] / rows[0]) if rows[0] else None,
            "second": float(100.0 * hits[1] / rows[1]) if rows[1] else None,
        }
    return out


def run_command(model: str, run: str, data: dict[str, Path], output: Path) -> list[str]:
    """The ``kinetoscope train`` arguments of one run (after ``python -m kinetoscope``)."""
    root = data["shuffled" if run == "shuffled" else "main"]
    cmd = ["train", "--model", model, "--train", str(root / "train.csv"), "--val", str(root / "val.csv"),
           "--root", str(root), *TRAIN_FLAGS, "--output", str(output)]  # fmt: skip
    if run == "ablation":
        cmd += ["--set", f"model_kwargs={json.dumps(ABLATIONS[model][1])}"]  # JSON is YAML
    return cmd


def run_state(record: Path, output: Path) -> str:
    """``"done"`` (finished record and report), ``"resume"`` (a checkpoint to go on from), ``"fresh"``
    (nothing yet) or ``"restart"`` (a folder without a checkpoint: an attempt that died early)."""
    if record.exists() and json.loads(record.read_text()).get("returncode") == 0 and (output / "eval.json").exists():
        return "done"
    if (output / "last.pth").exists():
        return "resume"
    return "restart" if output.exists() and any(output.iterdir()) else "fresh"


def row_cells(model: str, run: str, result: dict | None) -> list[str]:
    """One table row: model, run, top-1, the four pairs ("acc (first/second)"), minutes."""
    what = ABLATIONS[model][0] if run == "ablation" else {"main": "main", "shuffled": "frames shuffled"}[run]
    if result is None:
        return [model, what, "not run", *["" for _ in PAIR_NAMES], ""]
    pairs = result["pairs"]

    def cell(name: str) -> str:
        p = pairs.get(name)
        if p is None or p["acc"] is None:
            return "-"
        return f"{p['acc']:.0f} ({p['first']:.0f}/{p['second']:.0f})"

    minutes = f"{result['minutes']:.1f}" + ("*" if result.get("resumed") else "")
    return [model, what, f"{result['top1']:.1f}", *[cell(n) for n in PAIR_NAMES.values()], minutes]


def format_table(rows: list[list[str]]) -> str:
    header = ["model", "run", "top-1 % (2x1)", *[f"{n} %" for n in PAIR_NAMES.values()], "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summary_table(results: dict[tuple[str, str], dict]) -> str:
    """The README's table: one row per family, top-1 of the three runs, the rotation pair, minutes."""
    header = ["model", "top-1 %", "cw/ccw %", "frames shuffled %", "ablation %", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for m in MODELS:
        main = results.get((m, "main"))
        top1 = {r: f"{results[m, r]['top1']:.1f}" if (m, r) in results else "not run" for r in RUNS}
        rot = main["pairs"].get("cw/ccw") if main else None
        rotation = f"{rot['first']:.0f}/{rot['second']:.0f}" if rot else ""
        minutes = f"{main['minutes']:.1f}" if main else ""
        lines.append(f"| {m} | {top1['main']} | {rotation} | {top1['shuffled']} | {top1['ablation']} | {minutes} |")
    return "\n".join(lines)


def splice(doc: str, generated: str, markers: tuple[str, str] = (BEGIN, END)) -> str:
    """Replace what lies between the markers of ``doc`` (append the block when they are missing)."""
    return replace_between_markers(doc, generated.strip(), *markers, append_missing=True)


# ------------------------------------------------------------------------------------- data and runs
def shuffle_permutation(rel_path: str, frames: int, seed: int = 0) -> np.ndarray:
    """The fixed frame permutation of one video, from its path (so re-running gives the same copy)."""
    return np.random.default_rng([seed, zlib.crc32(rel_path.encode())]).permutation(frames)


def write_shuffled_copy(src: Path, dst: Path) -> None:
    """Decode every video of ``src``, permute its frames, re-encode (H.264, crf 18 as synth) into ``dst``."""
    from kinetoscope.data.decoding import open_video
    from kinetoscope.data.synthetic import write_video

    for split in ("train", "val"):
        with open(src / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            out = dst / row["path"]
            if out.exists():
                continue
            reader = open_video(str(src / row["path"]))
            frames = reader.get_frames(list(range(reader.num_frames)), layout="THWC").numpy()
            out.parent.mkdir(parents=True, exist_ok=True)
            write_video(out.with_suffix(".tmp.mp4"), frames[shuffle_permutation(row["path"], len(frames))],
                        fps=reader.fps, crf=18)  # fmt: skip
            out.with_suffix(".tmp.mp4").replace(out)
        shutil.copy(src / f"{split}.csv", dst / f"{split}.csv")


def prepare_data(out: Path, env: dict) -> dict[str, Path]:
    data = {"main": out / "data" / "main", "shuffled": out / "data" / "shuffled"}
    if not (data["main"] / "val.csv").exists():
        print(f"writing the synthetic set to {data['main']} ...", flush=True)
        subprocess.run([sys.executable, "-m", "kinetoscope", "synth", str(data["main"])], check=True, env=env)
    if not (data["shuffled"] / "val.csv").exists():
        print(f"writing the frame-shuffled copy to {data['shuffled']} ...", flush=True)
        write_shuffled_copy(data["main"], data["shuffled"])
    return data


def train_one(model: str, run: str, data: dict[str, Path], runs: Path, env: dict) -> None:
    output, record = runs / f"{model}-{run}", runs / f"{model}-{run}.json"
    state = run_state(record, output)
    if state == "done":
        print(f"{model} {run}: done, skipped")
        return
    cmd = [sys.executable, "-m", "kinetoscope", *run_command(model, run, data, output)]
    cmd += {"resume": ["--resume"], "restart": ["--overwrite"], "fresh": []}[state]
    print(f"{model} {run}: {state} ... ({' '.join(cmd[1:])})", flush=True)
    t0 = time.perf_counter()
    with open(runs / f"{model}-{run}.log", "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    minutes = (time.perf_counter() - t0) / 60
    done = {"model": model, "run": run, "returncode": rc, "minutes": minutes, "resumed": state == "resume",
            "threads": env.get("OMP_NUM_THREADS"), "command": cmd[1:]}  # fmt: skip
    record.write_text(json.dumps(done, indent=1))
    print(f"{model} {run}: exit {rc} after {minutes:.1f} min", flush=True)


def collect(runs: Path) -> dict[tuple[str, str], dict]:
    results = {}
    for model in MODELS:
        for run in RUNS:
            record, report = runs / f"{model}-{run}.json", runs / f"{model}-{run}" / "eval.json"
            if run_state(record, runs / f"{model}-{run}") != "done":
                continue
            rec, rep = json.loads(record.read_text()), json.loads(report.read_text())
            results[model, run] = {"top1": rep["top1"], "pairs": pair_accuracy(rep), "minutes": rec["minutes"],
                                   "resumed": rec.get("resumed", False), "threads": rec.get("threads")}  # fmt: skip
    return results


def plot(results: dict[tuple[str, str], dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    width = 0.27
    for k, run in enumerate(RUNS):
        xs = [i + (k - 1) * width for i in range(len(MODELS))]
        ys = [results.get((m, run), {}).get("top1", 0.0) for m in MODELS]
        ax.bar(xs, ys, width, label={"main": "main", "shuffled": "frames shuffled", "ablation": "ablation"}[run])
        for x, m in zip(xs, MODELS):
            if (m, run) not in results:
                ax.text(x, 2, "not run", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.axhline(TARGET, color="green", ls="--", lw=1, label=f"target {TARGET:.0f}%")
    ax.axhline(CAP, color="grey", ls=":", lw=1, label=f"order-blind cap {CAP:.0f}%")
    ax.set_xticks(range(len(MODELS)), MODELS)
    ax.set_ylabel("val top-1 %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("kinetoscope synth, 8 classes, 15 epochs from scratch (kinetoscope train defaults)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of nanos")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma list of main, shuffled, ablation")
    ap.add_argument("--out", default="benchmarks_out/temporal_truth", help="data and run folders")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each training run")
    ap.add_argument("--doc", default="docs/benchmarks/temporal_truth.md")
    ap.add_argument("--readme", default="README.md", help="gets the summary table between its markers, if it has them")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table from finished runs only")
    a = ap.parse_args()
    models, runs = [m for m in a.models.split(",") if m], [r for r in a.runs.split(",") if r]
    bad = [m for m in models if m not in MODELS] + [r for r in runs if r not in RUNS]
    if bad:
        sys.exit(f"unknown models/runs {bad}: choose from {MODELS} and {list(RUNS)}")
    out = Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}))
    if not a.report_only:
        data = prepare_data(out, env)
        for model in models:
            for run in runs:
                train_one(model, run, data, out / "runs", env)
    results = collect(out / "runs")
    rows = [row_cells(m, r, results.get((m, r))) for m in MODELS for r in RUNS]
    doc, chart = Path(a.doc), Path(a.doc).with_suffix(".png")
    generated = "\n".join([
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS of the "
        f"runs: {', '.join(sorted({str(r['threads'] or 'unset') for r in results.values()})) or '-'}; "
        "pairs as `all (first/second)` %, "
        "minutes of wall time (`*`: resumed, the last part only).", "",
        format_table(rows), "", f"![temporal truth]({chart.name})",
    ])  # fmt: skip
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(splice(doc.read_text() if doc.exists() else "# Temporal truth\n", generated))
    plot(results, chart)
    print(f"wrote {doc} and {chart}")
    readme = Path(a.readme)
    if readme.exists() and all(m in readme.read_text() for m in README_MARKERS):
        readme.write_text(splice(readme.read_text(), summary_table(results), README_MARKERS))
        print(f"updated the table in {readme}")


if __name__ == "__main__":
    main()
