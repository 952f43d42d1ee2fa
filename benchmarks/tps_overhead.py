"""What temporal patch shift costs: 2D Swin frame by frame vs PST vs PST-dagger, side by side.

Paper Table 6 claims PST-T adds ~0 FLOPs and ~2 ms (7%) latency over 2D Swin-T on a V100. We count
GMACs at the paper's input (meta device) and time all three in one run on the same machine, reporting
medians of repeats and ratios to the 2D baseline. Writes docs/benchmarks/tps_overhead.md.

    python benchmarks/tps_overhead.py [--device cuda] [--frames 32 --size 224] [--repeats 10]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from kinetoscope import create_model, profile
from kinetoscope.profiling import compare_latency

VARIANTS = [
    ("2D Swin-T (tps=None)", "pst_t", {"tps": None}),
    ("PST-T", "pst_t", {}),
    ("PST-T† (window 2)", "pst_t_dagger", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--frames", type=int, default=None, help="timed input frames (default 8 on CPU, 32 on GPU)")
    ap.add_argument("--size", type=int, default=None, help="timed crop (default 112 on CPU, 224 on GPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks/tps_overhead.md")
    a = ap.parse_args()
    gpu = a.device.startswith("cuda")
    frames, size = a.frames or (32 if gpu else 8), a.size or (224 if gpu else 112)
    models, counts = {}, {}
    for label, name, kwargs in VARIANTS:
        with torch.device("meta"):
            counts[label] = profile(create_model(name, **kwargs), (1, 3, 32, 224, 224))
        models[label] = create_model(name, num_frames=frames, img_size=size, **kwargs)
    timed = compare_latency(models, (a.batch, 3, frames, size, size), a.device, a.dtype, a.repeats)
    rows = [(label, counts[label].params_m, counts[label].gmacs, *timed[label]) for label in models]
    for label, _, gmacs, ms, _ in rows:
        print(f"{label:24s} {gmacs:7.2f} GMACs  {ms:8.1f} ms")
    base = rows[0][3]
    lines = [
        "# Temporal patch shift overhead",
        "",
        f"`python benchmarks/tps_overhead.py --device {a.device} --dtype {a.dtype}`; "
        f"GMACs at 1x3x32x224x224 (meta device), latency of one forward at {a.batch}x3x{frames}x{size}x{size}, "
        f"median of {a.repeats} interleaved repeats after warm-up, "
        f"{a.device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}.",
        "",
        "| model | params M | GMACs (32x224) | latency ms | vs 2D | peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for label, params, gmacs, ms, mem in rows:
        peak = "-" if mem is None else f"{mem:.0f}"
        lines.append(f"| {label} | {params:.2f} | {gmacs:.2f} | {ms:.1f} | {ms / base:.2f}x | {peak} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
