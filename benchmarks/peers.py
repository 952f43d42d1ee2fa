"""Our flagships against torchvision and timm peers: latency, GMACs, share of the GEMM peak, training cost.

Inference (batch 1): ours (pst_t, dualformer_t, stat_16, cst_v2, sct_s at their paper inputs) and the peers
torchvision ``swin3d_t`` (32x224), ``mvit_v2_s`` (16x224) and timm ViT-B/16 run over the frames as a batch of
images (8 frames beside cst_v2, 24 beside sct_s), all timed round-robin in one process, in fp32 and under bf16
autocast. GMACs are counted with FlopCounterMode on the meta device, attention matmuls included
(``kinetoscope.profiling.count_macs``); the achieved rate ``2 x GMACs / latency`` is given as a share of the
GEMM peak of this machine, measured in the same run before and after the models (the higher of the two).

Training (batch 2, fp32): forward + backward time of one step and peak memory, for every flagship and for
``swin3d_t``, with and without gradient checkpointing. Each configuration runs in a child process of its own:
peak memory is the child's maximum resident set size (``VmHWM``), and its rise over the resident set
just before the first step (activations, gradients and temporaries; the weights excluded). The
configurations run round-robin over ``--train-rounds`` rounds, one warm-up and ``--train-steps`` timed
steps each. Writes docs/benchmarks/peers.md and docs/benchmarks/peers.png.

    python benchmarks/peers.py                                     # full size: long on a CPU
    python benchmarks/peers.py --size 64 --frames 4 --repeats 1 --train-models pst_t swin3d_t   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CLOCKS,
    achieved_fraction,
    current_rss_mib,
    gemm_peak_gflops,
    interleaved_ms,
    median_and_spread,
    peak_rss_mib,
)

FLAGSHIPS = {"pst_t": 32, "dualformer_t": 32, "stat_16": 16, "cst_v2": 8, "sct_s": 24}  # paper input frames
PEER_OF = {
    "pst_t": "swin3d_t",
    "dualformer_t": "swin3d_t",
    "stat_16": "mvit_v2_s",
    "cst_v2": "vit_b16",
    "sct_s": "vit_b16",
}
PEER_FRAMES = {"swin3d_t": 32, "mvit_v2_s": 16}  # the ViT runs over its partner's frames


@dataclass(frozen=True)
class Entry:
    """One timed model: a registry name or a peer (``vit_b16`` over ``frames`` images)."""

    model: str
    frames: int
    ours: bool

    @property
    def label(self) -> str:
        return f"vit_b16 x{self.frames}" if self.model == "vit_b16" else self.model


def entries(frames: int | None = None, ours: list[str] | None = None) -> tuple[list[Entry], dict[str, str]]:
    """The models to time (ours first, then their peers, no duplicates) and ``{our label: peer label}``."""
    rows, pairs = [], {}
    for name in ours or list(FLAGSHIPS):
        rows.append(Entry(name, frames or FLAGSHIPS[name], True))
    for entry in list(rows):
        peer_model = PEER_OF[entry.model]
        peer = Entry(peer_model, frames or PEER_FRAMES.get(peer_model, entry.frames), False)
        if peer not in rows:
            rows.append(peer)
        pairs[entry.label] = peer.label
    return rows, pairs


class FramesAsImages(nn.Module):
    """An image classifier over every frame of ``(B, C, T, H, W)``; the frames' logits are averaged."""

    def __init__(self, image_model: nn.Module) -> None:
        super().__init__()
        self.image_model = image_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[0], x.shape[2]
        return self.image_model(x.transpose(1, 2).flatten(0, 1)).view(B, T, -1).mean(1)


class Checkpointed(nn.Module):
    """Recompute ``block`` in the backward pass (for peers without a checkpointing switch)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False)


def build(entry: Entry, size: int) -> nn.Module:
    """The model of ``entry`` for ``size x size`` crops, random weights, 400 classes."""
    if entry.ours:
        from kinetoscope import create_model

        return create_model(entry.model, num_frames=entry.frames, img_size=size)
    if entry.model == "vit_b16":
        import timm

        return FramesAsImages(timm.create_model("vit_base_patch16_224", img_size=size, num_classes=400))
    from torchvision.models import video

    if entry.model == "mvit_v2_s" and (size, entry.frames) != (224, 16):
        # mvit_v2_s fixes its input at 16x224 (position tables); smaller smoke runs reuse its builder at their size
        from torchvision.models.video import mvit

        build_mvit = mvit._mvit
        mvit._mvit = lambda **kw: build_mvit(**{**kw, "spatial_size": (size, size), "temporal_size": entry.frames})
        try:
            return mvit.mvit_v2_s()
        finally:
            mvit._mvit = build_mvit
    return getattr(video, entry.model)()


def enable_checkpointing(model: nn.Module) -> None:
    """Gradient checkpointing per block: our models' switch, or each torchvision Swin3D block wrapped."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return
    stages = [m for m in model.features if isinstance(m, nn.Sequential)]  # torchvision SwinTransformer3d
    if not stages:
        raise ValueError(f"no way to checkpoint {type(model).__name__}")
    for stage in stages:
        for i, block in enumerate(stage):
            stage[i] = Checkpointed(block)


# ------------------------------------------------------------------------------------------- inference
def inference_rows(
    rows: list[Entry], pairs: dict[str, str], gmacs: dict[str, float], times: dict, peaks: dict[str, float]
) -> list[dict]:
    """Table rows from ``times[(label, dtype)] = [ms, ...]`` and ``peaks[dtype] = GFLOP/s``."""
    out = []
    for entry in rows:
        row = {"model": entry.label, "ours": entry.ours, "frames": entry.frames, "gmacs": gmacs[entry.label]}
        for dtype in ("fp32", "bf16"):
            samples = times.get((entry.label, dtype))
            if not samples:
                continue
            ms, spread = median_and_spread(samples)
            row[dtype] = {"ms": ms, "spread": spread, "peak": achieved_fraction(row["gmacs"], ms, peaks[dtype])}
        if "fp32" in row and "bf16" in row:
            row["bf16_gain"] = row["fp32"]["ms"] / row["bf16"]["ms"]
        out.append(row)
    by_label = {row["model"]: row for row in out}
    for row in out:
        peer = by_label.get(pairs.get(row["model"], ""))
        if peer is not None:
            row["peer"] = peer["model"]
            for dtype in ("fp32", "bf16"):
                if dtype in row and dtype in peer:
                    row[dtype]["vs_peer"] = row[dtype]["ms"] / peer[dtype]["ms"]
    return out


def time_inference(rows: list[Entry], size: int, repeats: int, dtypes: list[str], clock: str = "wall") -> dict:
    """``{(label, dtype): [ms, ...]}`` for batch-1 forwards, every model and dtype interleaved."""
    runs = {}
    for entry in rows:
        model = build(entry, size).eval()
        x = torch.randn(1, 3, entry.frames, size, size)
        for dtype in dtypes:

            def run(model=model, x=x, bf16=dtype == "bf16"):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    model(x)

            runs[(entry.label, dtype)] = run
    return interleaved_ms(runs, repeats, warmup=1, clock=clock)


def count_gmacs(rows: list[Entry], size: int) -> dict[str, float]:
    from kinetoscope.profiling import count_macs

    gmacs = {}
    for entry in rows:
        with torch.device("meta"):
            model = build(entry, size)
        gmacs[entry.label] = count_macs(model, (1, 3, entry.frames, size, size))[0]
    return gmacs


# -------------------------------------------------------------------------------------------- training
def train_child(entry: Entry, size: int, checkpointing: bool, steps: int, clock: str = "wall", warmup: int = 1) -> dict:
    """Inside the child: ``warmup`` untimed and ``steps`` timed forward + backward steps at batch 2."""
    now = CLOCKS[clock]

    torch.manual_seed(0)
    model = build(entry, size).train()
    if checkpointing:
        enable_checkpointing(model)
    x, y = torch.randn(2, 3, entry.frames, size, size), torch.tensor([0, 1])
    rss_before = current_rss_mib()
    times = []
    for i in range(warmup + steps):
        t0 = now()
        nn.functional.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append((now() - t0) * 1000)
    return {"step_ms": times, "max_rss_mib": peak_rss_mib(), "rss_before_mib": rss_before}


def run_train_child(
    entry: Entry, size: int, checkpointing: bool, steps: int, clock: str = "wall", warmup: int = 1
) -> dict:
    spec = json.dumps({"model": entry.model, "frames": entry.frames, "ours": entry.ours})
    cmd = [sys.executable, __file__, "--train-child", spec, "--size", str(size), "--train-steps", str(steps)]
    cmd += ["--clock", clock, "--train-warmup", str(warmup)]
    cmd += ["--threads", str(torch.get_num_threads())]
    if checkpointing:
        cmd.append("--checkpointing")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # recorded, not raised: one configuration out of memory must not lose the run
        killed = done.returncode == -9
        return {"error": "killed (SIGKILL: out of memory?)" if killed else f"exit {done.returncode}",
                "stderr": done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []}  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_rows(results: dict[tuple[str, bool], list[dict]], frames: dict[str, int]) -> list[dict]:
    """Rows from ``results[(label, checkpointing)] = [child result per round]``, with checkpointing ratios."""
    rows = []
    for (label, ckpt), all_runs in results.items():
        runs = [r for r in all_runs if "error" not in r]
        if not runs:
            rows.append({"model": label, "frames": frames[label], "ckpt": ckpt, "error": all_runs[0]["error"]})
            continue
        ms, spread = median_and_spread([t for r in runs for t in r["step_ms"]])
        peak = max(r["max_rss_mib"] for r in runs)
        rise = max(r["max_rss_mib"] - r["rss_before_mib"] for r in runs)
        rows.append({"model": label, "frames": frames[label], "ckpt": ckpt, "ms": ms, "spread": spread,
                     "peak_mib": peak, "rise_mib": rise})  # fmt: skip
    plain = {r["model"]: r for r in rows if not r["ckpt"] and "error" not in r}
    for r in rows:
        base = plain.get(r["model"])
        if r["ckpt"] and base is not None and "error" not in r:
            r["rise_vs_plain"] = r["rise_mib"] / base["rise_mib"]
            r["time_vs_plain"] = r["ms"] / base["ms"]
    return rows


# --------------------------------------------------------------------------------------------- writing
def markdown(
    args,
    inf: list[dict],
    peaks: dict[str, list[float]],
    train: list[dict],
    threads: int,
    cmd: str,
    load: list[tuple[float, float, float]] = (),
) -> list[str]:
    clock = getattr(args, "clock", "wall")
    lines = [
        "# Flagships against their peers",
        "",
        f"`{cmd}`; {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}. "
        + (
            "Times are this process's CPU time (user + system), not wall time: the machine was shared with other "
            "jobs, and CPU time counts the work done rather than the time spent waiting for a core. "
            if clock == "cpu"
            else ""
        )
        + (
            "Load average (1, 5, 15 min) at the start / after inference / at the end: "
            + " / ".join(", ".join(f"{v:.1f}" for v in la) for la in load)
            + f" on {os.cpu_count()} cores. "
            if load
            else ""
        )
        + (
            "No GPU was available to this run (CPU figures only). "
            if not torch.cuda.is_available()
            else f"GPU present ({torch.cuda.get_device_name()}) but not used by this CPU benchmark. "
        )
        + "Batch 1 inference, random weights, 400 classes; every model and dtype timed round-robin in one process "
        f"({args.repeats} repeats after one warm-up; median, spread = (max - min) / median). GMACs: "
        "FlopCounterMode on meta, attention matmuls included. % peak = 2 x GMACs / latency over the GEMM peak "
        f"measured in the same run ({args.gemm_size}^3 matmul, before / after the models: "
        + ", ".join(f"{d} {' / '.join(f'{g:.0f}' for g in v)} GFLOP/s" for d, v in peaks.items())
        + "; the higher is used). bf16 = autocast. vs peer = our latency / the peer's, same dtype.",
        "",
        "| model | input | GMACs | fp32 ms (spread) | % fp32 peak | bf16 ms (spread) | % bf16 peak | bf16 gain | "
        "peer | vs peer fp32 | vs peer bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, dtype, key, fmt):
        return fmt.format(row[dtype][key]) if dtype in row and key in row[dtype] else "-"

    for r in inf:
        name = f"**{r['model']}**" if r["ours"] else r["model"]
        gain = f"{r['bf16_gain']:.2f}x" if "bf16_gain" in r else "-"
        lines.append(
            f"| {name} | {r['frames']}x{args.size} | {r['gmacs']:.1f} | "
            f"{cell(r, 'fp32', 'ms', '{:.0f}')} ({cell(r, 'fp32', 'spread', '{:.0%}')}) | "
            f"{cell(r, 'fp32', 'peak', '{:.0%}')} | "
            f"{cell(r, 'bf16', 'ms', '{:.0f}')} ({cell(r, 'bf16', 'spread', '{:.0%}')}) | "
            f"{cell(r, 'bf16', 'peak', '{:.0%}')} | {gain} | {r.get('peer', '-')} | "
            f"{cell(r, 'fp32', 'vs_peer', '{:.2f}x')} | {cell(r, 'bf16', 'vs_peer', '{:.2f}x')} |"
        )
    if train:
        lines += [
            "",
            f"Training, batch 2, fp32, forward + backward (no optimiser step), {args.size} crops: one child "
            f"process per configuration, {args.train_rounds} round(s) round-robin, {args.train_steps} timed step(s) "
            + (
                f"after {getattr(args, 'train_warmup', 1)} warm-up step(s) each. "
                if getattr(args, "train_warmup", 1)
                else "with no warm-up (the time includes the first call's allocations and cached geometry). "
            )
            + "Peak = the child's max RSS (VmHWM); rise = peak minus the RSS before the "
            "first step (activations, gradients, temporaries).",
            "",
            "| model | input | checkpointing | step ms (spread) | peak MiB | rise MiB | rise vs plain | "
            "time vs plain |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in train:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['frames']}x{args.size} | {'yes' if r['ckpt'] else 'no'} | "
                             f"failed: {r['error']} | - | - | - | - |")  # fmt: skip
                continue
            ratio = f"{r['rise_vs_plain']:.2f}x | {r['time_vs_plain']:.2f}x" if "rise_vs_plain" in r else "- | -"
            lines.append(
                f"| {r['model']} | {r['frames']}x{args.size} | {'yes' if r['ckpt'] else 'no'} | {r['ms']:.0f} "
                f"({r['spread']:.0%}) | {r['peak_mib']:.0f} | {r['rise_mib']:.0f} | {ratio} |"
            )
        plain = {r["model"]: r for r in train if not r["ckpt"] and "error" not in r}
        if "pst_t" in plain and "swin3d_t" in plain:
            pst, swin = plain["pst_t"], plain["swin3d_t"]
            lines += [
                "",
                f"PST-T / swin3d_t training memory rise: {pst['rise_mib'] / swin['rise_mib']:.2f}x (peak RSS "
                f"{pst['peak_mib'] / swin['peak_mib']:.2f}x), step time {pst['ms'] / swin['ms']:.2f}x.",
            ]
    return lines


def scatter(inf: list[dict], peaks: dict[str, list[float]], path: Path, size: int) -> None:
    """Latency against GFLOPs (2 x GMACs), fp32 filled and bf16 hollow, with lines of equal share of the peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7.5, 5))
    gflops = [2 * r["gmacs"] for r in inf]
    span = torch.logspace(torch.tensor(min(gflops) / 1.5).log10(), torch.tensor(max(gflops) * 1.5).log10(), 50)
    fp32_peak = max(peaks.get("fp32", [float("nan")]))
    for share, style in ((1.0, "-"), (0.5, "--"), (0.25, ":")) if "fp32" in peaks else ():
        ax.plot(span, span / (fp32_peak * share) * 1000, style, color="0.6", lw=0.8)
        ax.annotate(f"{share:.0%} fp32 peak", (span[-1], span[-1] / (fp32_peak * share) * 1000), fontsize=7,
                    color="0.4", ha="right", va="bottom")  # fmt: skip
    for r, g in zip(inf, gflops):
        color = "tab:red" if r["ours"] else "tab:blue"
        for dtype, face in (("fp32", color), ("bf16", "none")):
            if dtype in r:
                ax.scatter(g, r[dtype]["ms"], s=36, facecolors=face, edgecolors=color)
        if "fp32" in r:
            ax.annotate(r["model"], (g, r["fp32"]["ms"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    title = f"ours (red) vs peers (blue), {size} crops: fp32 filled, bf16 hollow"
    ax.set(xscale="log", yscale="log", xlabel="GFLOPs per clip (2 x GMACs, attention included)",
           ylabel="latency, batch 1 (ms)", title=title)  # fmt: skip
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="crop size of every model")
    ap.add_argument("--frames", type=int, default=None, help="one frame count for every model (default: paper inputs)")
    ap.add_argument("--models", nargs="+", default=list(FLAGSHIPS), choices=list(FLAGSHIPS), help="ours to time")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--train-models", nargs="*", default=[*FLAGSHIPS, "swin3d_t"],
                    help="training configurations (none: skip training)")  # fmt: skip
    ap.add_argument("--train-rounds", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=1)
    ap.add_argument("--train-warmup", type=int, default=1, help="untimed steps before the timed ones")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall time, or this process's CPU time (honest with 1 thread on a busy machine)")  # fmt: skip
    ap.add_argument("--out", default="docs/benchmarks/peers.md")
    ap.add_argument("--train-child", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.train_child:
        spec = json.loads(a.train_child)
        print(json.dumps(train_child(Entry(**spec), a.size, a.checkpointing, a.train_steps, a.clock, a.train_warmup)))
        return

    load = [os.getloadavg()]
    rows, pairs = entries(a.frames, a.models)
    gmacs = count_gmacs(rows, a.size)
    peaks = {d: [gemm_peak_gflops(d, a.gemm_size, clock=a.clock)] for d in a.dtypes}
    print("GEMM peak before:", {d: round(v[0]) for d, v in peaks.items()}, "GFLOP/s", flush=True)
    times = time_inference(rows, a.size, a.repeats, a.dtypes, a.clock)
    for d in a.dtypes:
        peaks[d].append(gemm_peak_gflops(d, a.gemm_size, clock=a.clock))
    load.append(os.getloadavg())
    print("GEMM peak after:", {d: round(v[1]) for d, v in peaks.items()}, "GFLOP/s", flush=True)
    inf = inference_rows(rows, pairs, gmacs, times, {d: max(v) for d, v in peaks.items()})
    for r in inf:
        print(r["model"], {d: round(r[d]["ms"]) for d in a.dtypes if d in r}, flush=True)

    train_entries = []
    for name in a.train_models:
        if name in FLAGSHIPS:
            train_entries.append(Entry(name, a.frames or FLAGSHIPS[name], True))
        else:
            train_entries.append(Entry(name, a.frames or PEER_FRAMES[name], False))
    results: dict[tuple[str, bool], list[dict]] = {}
    for _ in range(a.train_rounds):
        for entry in train_entries:
            for ckpt in (False, True):
                res = run_train_child(entry, a.size, ckpt, a.train_steps, a.clock, a.train_warmup)
                results.setdefault((entry.label, ckpt), []).append(res)
                print(entry.label, "ckpt" if ckpt else "plain", res, flush=True)
    train = train_rows(results, {e.label: e.frames for e in train_entries})
    load.append(os.getloadavg())

    cmd = "python benchmarks/peers.py " + " ".join(sys.argv[1:])
    lines = markdown(a, inf, peaks, train, torch.get_num_threads(), cmd.strip(), load)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    scatter(inf, peaks, out.with_suffix(".png"), a.size)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
