"""``torch.compile`` on every family: does it compile, where does dynamo break the graph, and what it gains.

Per model (default: each family's nano at its own input; ``--models pst_t --frames 8 --size 112`` for others),
batch 1, inference mode, random weights:

* ``torch._dynamo.explain``: the graphs, the graph breaks and their reasons (deduplicated);
* ``backend="eager"`` (dynamo's capture without code generation): the output equals the uncompiled model's;
* ``backend="inductor"`` (generated C++; needs a C++ compiler): the compile time, then the uncompiled and the
  compiled forward timed round-robin (``--clock cpu``: this process's CPU time, the honest measure on a machine
  shared with other jobs), and the largest difference of their outputs.

Writes docs/benchmarks/compile.md.

    python benchmarks/compile.py [--models pst_nano sct_nano] [--threads 1] [--repeats 5] [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_ms, median_and_spread  # noqa: E402

NANOS = ["pst_nano", "dualformer_nano", "stat_nano", "cst_nano", "sct_nano"]


def break_reasons(explained) -> list[str]:
    """The distinct graph-break reasons of a ``torch._dynamo.explain`` result, first line of each."""
    seen: list[str] = []
    for reason in explained.break_reasons:
        line = str(getattr(reason, "reason", reason)).strip().splitlines()[0][:160]
        if line not in seen:
            seen.append(line)
    return seen


def study(name: str, frames: int | None, size: int | None, repeats: int, clock: str, inductor: bool) -> dict:
    from kinetoscope import create_model, get_model_config

    cfg = get_model_config(name)
    frames, size = frames or cfg.num_frames, size or cfg.img_size
    torch.manual_seed(0)
    model = create_model(name, num_frames=frames, img_size=size).eval()
    x = torch.randn(1, 3, frames, size, size)
    row: dict = {"model": name, "input": f"{frames}x{size}"}
    with torch.inference_mode():
        ref = model(x)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(x)
        row.update(graphs=explained.graph_count, breaks=explained.graph_break_count, reasons=break_reasons(explained))
        torch._dynamo.reset()
        row["eager_diff"] = (torch.compile(model, backend="eager")(x) - ref).abs().max().item()
        if inductor:
            torch._dynamo.reset()
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            out = compiled(x)
            row["compile_s"] = time.perf_counter() - t0
            row["inductor_diff"] = (out - ref).abs().max().item()
            times = interleaved_ms({"plain": lambda: model(x), "compiled": lambda: compiled(x)}, repeats, clock=clock)
            row["plain_ms"], row["plain_spread"] = median_and_spread(times["plain"])
            row["compiled_ms"], row["compiled_spread"] = median_and_spread(times["compiled"])
    return row


def markdown(rows: list[dict], cmd: str, threads: int, clock: str, repeats: int, load: tuple) -> list[str]:
    lines = [
        "# torch.compile on every family",
        "",
        f"`{cmd}`; {platform.machine()}, {threads} thread(s), torch {torch.__version__}, batch 1, inference mode, "
        f"random weights. Times: {clock} clock, median of {repeats} round-robin repeats after the compiling call "
        "(spread = (max - min) / median). Load average (1, 5, 15 min) before / after: "
        f"{' / '.join(', '.join(f'{v:.1f}' for v in la) for la in load)} on {os.cpu_count()} cores shared with "
        "other jobs. eager diff / inductor diff: largest |output - uncompiled output|. Each model runs once "
        "uncompiled before it is compiled: the first call builds and registers the cached geometry (bias indices, "
        "masks, gather indices), and dynamo traced the nanos 3-8x slower when that happened inside the compiled "
        "call.",
        "",
        "| model | input | graphs | graph breaks | eager diff | inductor compile s | plain ms | compiled ms | gain "
        "| inductor diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('input', '-')} | failed: {r['error']} | | | | | | | |")
            continue
        inductor = (
            f"{r['compile_s']:.0f} | {r['plain_ms']:.1f} ({r['plain_spread']:.0%}) | "
            f"{r['compiled_ms']:.1f} ({r['compiled_spread']:.0%}) | {r['plain_ms'] / r['compiled_ms']:.2f}x | "
            f"{r['inductor_diff']:.1e}"
            if "compile_s" in r
            else "- | - | - | - | -"
        )
        lines.append(
            f"| {r['model']} | {r['input']} | {r['graphs']} | {r['breaks']} | {r['eager_diff']:.1e} | {inductor} |"
        )
    reasons = [(r["model"], why) for r in rows for why in r.get("reasons", [])]
    if reasons:
        lines += ["", "Graph-break reasons (distinct, first line):", ""]
        lines += [f"- {model}: `{why}`" for model, why in reasons]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=NANOS)
    ap.add_argument("--frames", type=int, default=None, help="frames of every model (default: its config's)")
    ap.add_argument("--size", type=int, default=None, help="crop size of every model (default: its config's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--no-inductor", action="store_true", help="skip code generation (no C++ compiler)")
    ap.add_argument("--out", default="docs/benchmarks/compile.md")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    inductor = not a.no_inductor and shutil.which(os.environ.get("CXX", "g++")) is not None
    load = [os.getloadavg()]
    rows = []
    for name in a.models:
        try:
            rows.append(study(name, a.frames, a.size, a.repeats, a.clock, inductor))
        except Exception as err:  # recorded, not raised: one family failing to compile must not lose the others
            rows.append({"model": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"})
        print(rows[-1], flush=True)
    load.append(os.getloadavg())
    cmd = "python benchmarks/compile.py " + " ".join(sys.argv[1:])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(markdown(rows, cmd.strip(), torch.get_num_threads(), a.clock, a.repeats, load)) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
