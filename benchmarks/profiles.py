"""Where each flagship's inference time goes: torch.profiler top-10 operators, fp32 and bf16 autocast.

Batch 1, inference mode, every flagship at its paper input. Per model and dtype: one warm-up forward, then
``--repeats`` profiled forwards; operators ranked by self CPU time (their own work, children excluded), with
their share of the total, and the total split into kinds: GEMM-like kernels (linear, matmul, conv, the fused
attention kernels), layout copies (copy, cat, pad, gather, index, roll), and the rest (norms, activations,
softmax, masks, other elementwise). The kernel's page faults and system time per forward come from
``getrusage`` around an unprofiled forward (fresh large allocations fault in their pages on first touch).
Rewrites the tables between the markers of docs/benchmarks/profiles.md and keeps the text around them.

    python benchmarks/profiles.py [--models pst_t sct_s] [--size 112 --frames 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from kinetoscope import create_model
from kinetoscope._files import replace_between_markers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import FLAGSHIPS  # noqa: E402

GEMM_OPS = {
    "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution", "aten::convolution",
    "aten::_convolution", "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_mkldnn_linear",
    "aten::mkldnn_rnn_layer", "aten::_efficient_attention_forward", "aten::_flash_attention_forward",
}  # fmt: skip
COPY_OPS = {
    "aten::copy_", "aten::clone", "aten::cat", "aten::constant_pad_nd", "aten::gather", "aten::index",
    "aten::index_select", "aten::roll", "aten::scatter", "aten::scatter_", "aten::index_put_", "aten::_to_copy",
    "aten::contiguous", "aten::repeat", "aten::stack", "aten::flip", "aten::narrow_copy", "aten::_unsafe_view",
}  # fmt: skip
START, END = "<!-- tables:start (written by benchmarks/profiles.py) -->", "<!-- tables:end -->"


def kind(op: str) -> str:
    return "GEMM" if op in GEMM_OPS else "copies" if op in COPY_OPS else "other"


def profile_model(name: str, frames: int, size: int, dtype: str, repeats: int) -> dict:
    """Top operators by self CPU time per forward, the split by kind, latency and page faults per forward."""
    torch.manual_seed(0)
    model = create_model(name, num_frames=frames, img_size=size).eval()
    x = torch.randn(1, 3, frames, size, size)
    bf16 = dtype == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model(x)
        wall_ms = (time.perf_counter() - t0) * 1000
        after = resource.getrusage(resource.RUSAGE_SELF)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(x)
    ops = [(e.key, e.self_cpu_time_total / 1000 / repeats, e.count // repeats) for e in prof.key_averages()]
    total = sum(ms for _, ms, _ in ops)
    kinds = defaultdict(float)
    for op, ms, _ in ops:
        kinds[kind(op)] += ms
    ops.sort(key=lambda t: -t[1])
    return {
        "model": name, "dtype": dtype, "input": f"{frames}x{size}", "total_ms": total, "wall_ms": wall_ms,
        "top": ops[:10], "kinds": {k: v / total for k, v in kinds.items()},
        "faults": after.ru_minflt - before.ru_minflt,
        "cpu_s": (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime),
    }  # fmt: skip


def tables(results: list[dict], cmd: str, threads: int, repeats: int) -> list[str]:
    lines = [
        "",
        f"`{cmd}`; {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}; "
        f"batch 1, inference mode, {repeats} profiled forward(s) after a warm-up. Self CPU time per forward "
        "(the operator's own work, its children excluded; the profiler adds some overhead of its own). Kinds: "
        "GEMM = linear, matmul, conv and fused attention kernels; copies = copy, cat, pad, gather, index, roll; "
        "other = norms, activations, softmax, masks and the rest. Page faults and user/system CPU seconds: one "
        "unprofiled forward.",
        "",
    ]
    for r in results:
        user, system = r["cpu_s"]
        k = r["kinds"]
        lines += [
            f"### {r['model']} {r['input']}, {r['dtype']}",
            "",
            f"Self CPU {r['total_ms']:.0f} ms per forward (unprofiled wall {r['wall_ms']:.0f} ms); GEMM "
            f"{k.get('GEMM', 0):.0%}, copies {k.get('copies', 0):.0%}, other {k.get('other', 0):.0%}; "
            f"{r['faults']} page faults, user {user:.2f} s, system {system:.2f} s.",
            "",
            "| operator | kind | self CPU ms | share | calls |",
            "|---|---|---|---|---|",
            *[f"| `{op}` | {kind(op)} | {ms:.1f} | {ms / r['total_ms']:.1%} | {calls} |" for op, ms, calls in r["top"]],
            "",
        ]
    return lines  # the block between START and END


def write_between_markers(path: Path, generated: list[str]) -> None:
    """Replace the generated block of ``path`` (or create the file with it), keeping the hand-written text."""
    text = path.read_text() if path.exists() else f"# Profiles of the flagships\n\n{START}\n{END}\n"
    try:
        path.write_text(replace_between_markers(text, "\n".join(generated), START, END))
    except ValueError:
        raise ValueError(f"{path} lacks the markers {START} ... {END}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(FLAGSHIPS), choices=list(FLAGSHIPS))
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--frames", type=int, default=None, help="one frame count for all (default: paper inputs)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="docs/benchmarks/profiles.md")
    a = ap.parse_args()
    results = []
    for name in a.models:
        for dtype in a.dtypes:
            r = profile_model(name, a.frames or FLAGSHIPS[name], a.size, dtype, a.repeats)
            print(name, dtype, f"{r['total_ms']:.0f} ms", {k: f"{v:.0%}" for k, v in r["kinds"].items()}, flush=True)
            results.append(r)
    cmd = ("python benchmarks/profiles.py " + " ".join(sys.argv[1:])).strip()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_between_markers(out, tables(results, cmd, torch.get_num_threads(), a.repeats))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
