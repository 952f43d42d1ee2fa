"""The ``kinetoscope`` command. Thin: each subcommand parses its flags and calls the library.

Subcommands register themselves with ``@command(name, help)``; each gets an ``argparse`` parser to
fill and returns the function that runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]]] = {}


def command(name: str, help: str):
    def wrap(fn):
        _COMMANDS[name] = (help, fn)
        return fn

    return wrap


# --------------------------------------------------------------------------------------------- models
@command("models", "list registered models with params and GFLOPs beside the paper's")
def _models(p: argparse.ArgumentParser):
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'pst_*'")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table")

    def run(a: argparse.Namespace) -> int:
        from .models import list_models
        from .profiling import paper_comparison

        rows = [paper_comparison(n) for n in list_models(a.pattern)]
        if a.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            print(format_zoo_table(rows, markdown=a.format == "markdown"))
        return 0

    return run


def _fmt(x, spec=".2f", signed=False) -> str:
    if x is None:
        return "-"
    return format(x, ("+" if signed else "") + spec)


def format_zoo_table(rows: list[dict], markdown: bool = False) -> str:
    head = ["model", "input", "params M", "paper", "Δ%", "GFLOPs", "paper", "Δ%", "convention", "views", "top-1"]
    body = [
        [
            r["name"],
            r["input"],
            _fmt(r["params_m"]),
            _fmt(r["paper_params_m"]),
            _fmt(r["params_delta_pct"], ".1f", True),
            _fmt(r["gflops"]),
            _fmt(r["paper_gflops"]),
            _fmt(r["gflops_delta_pct"], ".1f", True),
            r["flop_convention"],
            r["views"],
            f"{r['paper_top1']} ({r['dataset']})" if r["paper_top1"] is not None else "-",
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in body])


# -------------------------------------------------------------------------------------------- profile
@command("profile", "params, GMACs, latency, clips/s and peak memory of one model")
def _profile(p: argparse.ArgumentParser):
    p.add_argument("name")
    p.add_argument("--frames", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-latency", action="store_true", help="count params and GMACs only")
    p.add_argument("--format", choices=["table", "json"], default="table")

    def run(a: argparse.Namespace) -> int:
        from .models import create_model, get_model_config
        from .profiling import profile

        cfg = get_model_config(a.name)
        frames, size = a.frames or cfg.num_frames, a.size or cfg.img_size
        model = create_model(a.name, num_frames=frames, img_size=size)
        shape = (a.batch, 3, frames, size, size)
        prof = profile(
            model, shape, latency=not a.no_latency, device=a.device, dtype=a.dtype, repeats=a.repeats, compile=a.compile
        )
        if a.format == "json":
            print(json.dumps({"name": a.name, **prof.to_dict()}, indent=2))
        else:
            print(f"{a.name}  input {tuple(shape)}")
            print(f"  params          {prof.params_m:.3f} M ({prof.params_no_head_m:.3f} M without head)")
            print(f"  GMACs           {prof.gmacs:.2f} (without attention matmuls {prof.gmacs_no_attn:.2f})")
            if prof.latency_ms is not None:
                print(f"  latency         {prof.latency_ms:.1f} ms (median of {a.repeats}, {a.device} {a.dtype})")
                print(f"  throughput      {prof.clips_per_s:.2f} clips/s")
                if prof.peak_memory_mb is not None:
                    print(f"  peak memory     {prof.peak_memory_mb:.0f} MiB")
        return 0

    return run


# ---------------------------------------------------------------------------------------------- train
@command("train", "train a model (flags override the YAML recipe; torchrun for several processes)")
def _train(p: argparse.ArgumentParser):
    p.add_argument("--config", help="flat YAML recipe, e.g. configs/pst_t_k400.yaml")
    p.add_argument("--model")
    p.add_argument("--train", help="training annotations (any supported format)")
    p.add_argument("--val", help="validation annotations")
    p.add_argument("--root", help="folder the annotation paths are relative to")
    p.add_argument("--frames", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--sampling", help="'dense:32x2' or 'uniform:16'")
    p.add_argument("--views", help="test views CLIPSxCROPS, e.g. 4x3")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--output", help="run folder (checkpoints, logs, plots)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUTPUT/last.pth")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any config key, e.g. amp=bf16")

    def run(a: argparse.Namespace) -> int:
        from .engine import load_config, parse_set, train

        flags = {k: getattr(a, k) for k in ("model", "train", "val", "root", "frames", "size", "sampling", "views",
                                           "epochs", "batch_size", "lr", "output", "resume")}  # fmt: skip
        overrides = {k: v for k, v in flags.items() if v is not None} | parse_set(a.set)
        result = train(load_config(a.config, overrides))
        print(json.dumps({k: v for k, v in result.items() if k != "per_video"}, indent=1, default=str))
        return 0

    return run


@command("eval", "evaluate a checkpoint with multi-view testing")
def _eval(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", required=True, help="last.pth / best.pth / exported .safetensors")
    p.add_argument("--data", help="annotations (default: the run's validation set)")
    p.add_argument("--root")
    p.add_argument("--views", help="CLIPSxCROPS (default: the run's)")
    p.add_argument("--batch-size", type=int, default=4, dest="batch_size")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", help="write the full report (per-class, confusion, per-video) as JSON")

    def run(a: argparse.Namespace) -> int:
        from .engine.distributed import cleanup, init_distributed
        from .engine.evaluate import eval_dataset, evaluate, load_trained

        info = init_distributed(a.device)
        model, classes, cfg = load_trained(a.checkpoint, info.device)
        if not (a.data or cfg.val):
            raise ValueError("no evaluation data: pass --data ANNOTATIONS")
        root = a.root if a.data else (a.root or cfg.root)
        ds = eval_dataset(cfg, a.data or cfg.val, classes, root, a.views)
        metrics = evaluate(model, ds, info, a.batch_size, a.workers)
        cleanup()
        if not info.is_main:
            return 0
        print(f"videos {metrics['num_videos']}  top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}  "
              f"mean class accuracy {metrics['mean_class_accuracy']:.2f}")  # fmt: skip
        for name, acc in zip(classes, metrics["per_class_accuracy"]):
            print(f"  {name:30s} {'-' if acc is None else f'{acc:.1f}'}")
        if a.output:
            from pathlib import Path

            Path(a.output).write_text(json.dumps(dict(metrics, classes=classes), indent=1))
            print(f"report written to {a.output}")
        return 0

    return run


@command("predict", "class probabilities for video files")
def _predict(p: argparse.ArgumentParser):
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--views", help="CLIPSxCROPS (default: the run's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", choices=["text", "json"], default="text")

    def run(a: argparse.Namespace) -> int:
        from .engine.evaluate import eval_dataset, load_trained, predict_views

        model, classes, cfg = load_trained(a.checkpoint, a.device)
        ds = eval_dataset(cfg, [(v, 0) for v in a.videos], classes, views=a.views, on_error="raise")
        results = []
        for i, path in enumerate(a.videos):
            probs = predict_views(model, ds[i]["video"].unsqueeze(0).to(a.device))[0]
            top = probs.topk(min(a.topk, len(classes)))
            ranked = [{"class": classes[j], "probability": round(float(v), 4)} for v, j in zip(top.values, top.indices)]
            results.append({"video": path, "top": ranked})
        if a.format == "json":
            print(json.dumps(results, indent=1))
        else:
            for r in results:
                print(r["video"])
                for t in r["top"]:
                    print(f"  {t['probability']:6.3f}  {t['class']}")
        return 0

    return run


@command("export", "write a checkpoint's weights only (safetensors), with model name and classes")
def _export(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["safetensors"], default="safetensors")
    p.add_argument("--output", help="default: the checkpoint path with .safetensors")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        from safetensors.torch import save_file

        from .engine.checkpoint import load_model_weights

        weights, meta = load_model_weights(a.checkpoint)
        out = Path(a.output or Path(a.checkpoint).with_suffix(".safetensors"))
        info = {"config": meta.get("config"), "classes": meta.get("classes")}
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out), metadata={"kinetoscope": json.dumps(info)})
        print(f"wrote {out} ({len(weights)} tensors)")
        return 0

    return run


@command("convert", "convert a released checkpoint (TPS, DualFormer: mmaction2, backbone or image) to safetensors")
def _convert(p: argparse.ArgumentParser):
    p.add_argument("input", help="released or kinetoscope checkpoint (.pth/.pt/.safetensors)")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--model", required=True, help="registered variant, e.g. dualformer_t")
    p.add_argument("--frames", type=int, help="clip length the model is built for (default: the variant's)")
    p.add_argument("--size", type=int, help="crop size the model is built for (default: the variant's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    def run(a: argparse.Namespace) -> int:
        from .models import convert_checkpoint

        info = convert_checkpoint(a.input, a.output, a.model, a.overwrite, a.frames, a.size)
        classes = f"{info['num_classes']}-class head" if info["num_classes"] else "no classifier"
        print(f"wrote {a.output}: {info['model']} ({info['num_frames']}x{info['img_size']}, {classes}, "
              f"{info['tensors']} tensors) from {info['source']}")  # fmt: skip
        return 0

    return run


@command("demo", "synthetic videos -> train pst_nano on CPU -> multi-view evaluation (what `make demo` runs)")
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--output", default="demo_out")
    p.add_argument("--epochs", type=int)
    p.add_argument("--per-class", type=int, default=40, dest="per_class")

    def run(a: argparse.Namespace) -> int:
        from .engine.demo import run_demo

        result = run_demo(a.output, a.epochs, a.per_class)
        top1 = result.get("metrics", {}).get("top1", 0.0)
        return 0 if top1 >= 90.0 or a.epochs is not None else 1

    return run


# ----------------------------------------------------------------------------------------------- data
@command("synth", "write the synthetic time-direction video dataset (real H.264 files + CSVs)")
def _synth(p: argparse.ArgumentParser):
    p.add_argument("out")
    p.add_argument("--classes", nargs="*", help="subset of the classes, in time-reversed pairs")
    p.add_argument("--per-class", type=int, default=40, dest="per_class")
    p.add_argument("--val-per-class", type=int, default=10, dest="val_per_class")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)

    def run(a: argparse.Namespace) -> int:
        from .data import write_synthetic_dataset

        info = write_synthetic_dataset(a.out, a.classes, a.per_class, a.val_per_class, a.frames, a.size, a.seed)
        print(f"wrote {a.out}: train {info['train']}, val {info['val']}, classes {', '.join(info['classes'])}")
        return 0

    return run


@command("check-videos", "scan a dataset in parallel; list unreadable videos with reasons")
def _check_videos(p: argparse.ArgumentParser):
    p.add_argument("annotations")
    p.add_argument("--root")
    p.add_argument("--format", default="auto")
    p.add_argument("--workers", type=int)
    p.add_argument("--report", help="write path,reason CSV of the unreadable files")

    def run(a: argparse.Namespace) -> int:
        import csv

        from .data import check_videos

        result = check_videos(a.annotations, a.root, a.format, a.workers)
        print(f"{result['total']} videos: {result['readable']} readable, {len(result['unreadable'])} unreadable")
        for path, reason in result["unreadable"]:
            print(f"  {path}: {reason}")
        if a.report:
            with open(a.report, "w", newline="") as f:
                csv.writer(f).writerows([("path", "reason"), *result["unreadable"]])
        return 0 if not result["unreadable"] else 1

    return run


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="kinetoscope", description="Efficient video transformers.")
    parser.add_argument("--version", action="version", version=f"kinetoscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, setup) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_run=setup(sp))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as err:  # bad input: a clear message, no traceback
        print(f"kinetoscope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
