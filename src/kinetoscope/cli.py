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
    except (ValueError, FileNotFoundError) as err:
        print(f"kinetoscope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
