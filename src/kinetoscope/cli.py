"""The ``kinetoscope`` command. Thin: each subcommand parses its flags and calls the library.

Subcommands register themselves with ``@command(name, help)``; each gets an ``argparse`` parser to
fill and returns the function that runs it. torch and the models are imported inside the commands
that need them, so ``--help`` and ``kinetoscope models`` answer at once.

Bad input (a flag, a config value, a file) is one line on stderr and exit code 2; ``--debug`` (or
``KINETOSCOPE_DEBUG=1``) shows the traceback instead. Ctrl-C is exit code 130 (training first saves a
checkpoint and says how to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]]] = {}
DEVICES = ["auto", "cpu", "cuda"]


def command(name: str, help: str):
    def wrap(fn):
        _COMMANDS[name] = (help, fn)
        return fn

    return wrap


def _status(text: str) -> None:
    """A first line within a second of starting, before the slow imports."""
    print(f"kinetoscope: {text}", file=sys.stderr, flush=True)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else a one-line error naming the value."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# --------------------------------------------------------------------------------------------- models
@command("models", "list registered models with params and GFLOPs beside the paper's")
def _models(p: argparse.ArgumentParser):
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'pst_*'")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--recount", action="store_true", help="count every model now instead of reading the shipped table")

    def run(a: argparse.Namespace) -> int:
        from .profiling import format_zoo_table, zoo_rows

        rows = zoo_rows(a.pattern, progress=True, recount=a.recount)
        if not rows:
            raise ValueError(f"no registered model matches {a.pattern!r}; `kinetoscope models` lists all of them")
        if a.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            print(format_zoo_table(rows, markdown=a.format == "markdown"))
        return 0

    return run


# -------------------------------------------------------------------------------------------- profile
@command("profile", "params, GMACs, latency, clips/s and peak memory of one model")
def _profile(p: argparse.ArgumentParser):
    p.add_argument("name")
    p.add_argument("--frames", type=_positive_int)
    p.add_argument("--size", type=_positive_int)
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=_positive_int, default=10)
    p.add_argument("--no-latency", action="store_true", help="count params and GMACs only")
    p.add_argument("--format", choices=["table", "json"], default="table")

    def run(a: argparse.Namespace) -> int:
        _status(f"profiling {a.name} (loading PyTorch) ...")
        from .engine.distributed import resolve_device
        from .models import create_model, get_model_config
        from .profiling import profile

        cfg = get_model_config(a.name)
        device = resolve_device(a.device).type
        frames, size = a.frames or cfg.num_frames, a.size or cfg.img_size
        model = create_model(a.name, num_frames=frames, img_size=size)
        shape = (a.batch, 3, frames, size, size)
        prof = profile(
            model, shape, latency=not a.no_latency, device=device, dtype=a.dtype, repeats=a.repeats, compile=a.compile
        )
        if a.format == "json":
            print(json.dumps({"name": a.name, **prof.to_dict()}, indent=2))
        else:
            print(f"{a.name}  input {tuple(shape)}")
            print(f"  params          {prof.params_m:.3f} M ({prof.params_no_head_m:.3f} M without head)")
            print(f"  GMACs           {prof.gmacs:.2f} (without attention matmuls {prof.gmacs_no_attn:.2f})")
            if prof.latency_ms is not None:
                print(f"  latency         {prof.latency_ms:.1f} ms (median of {a.repeats}, {device} {a.dtype})")
                print(f"  throughput      {prof.clips_per_s:.2f} clips/s")
                if prof.peak_memory_mb is not None:
                    print(f"  peak memory     {prof.peak_memory_mb:.0f} MiB")
        return 0

    return run


# ---------------------------------------------------------------------------------------------- train
@command("train", "train a model (flags override the YAML recipe; torchrun for several processes)")
def _train(p: argparse.ArgumentParser):
    p.add_argument("--config", help="flat YAML recipe, e.g. configs/pst_t_k400.yaml (default with --resume: "
                   "OUTPUT/config.yaml)")  # fmt: skip
    p.add_argument("--model")
    p.add_argument("--train", help="training annotations (any supported format)")
    p.add_argument("--val", help="validation annotations")
    p.add_argument("--root", help="folder the annotation paths are relative to")
    p.add_argument("--frames", type=_positive_int)
    p.add_argument("--size", type=_positive_int)
    p.add_argument("--sampling", help="'dense:32x2' or 'uniform:16'")
    p.add_argument("--views", help="test views CLIPSxCROPS, e.g. 4x3")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, dest="batch_size", help="clips per process and step")
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--output", help="run folder (checkpoints, logs, plots)")
    p.add_argument("--resume", action="store_true", default=None, help="continue OUTPUT/last.pth")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace the run in a non-empty OUTPUT")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any config key, e.g. amp=bf16")

    def run(a: argparse.Namespace) -> int:
        _status("preparing the run (loading PyTorch and the models) ...")
        from .engine import load_config, parse_set, train

        names = ("model", "train", "val", "root", "frames", "size", "sampling", "views", "epochs", "batch_size", "lr",
                 "device", "output", "resume", "overwrite")  # fmt: skip
        flags = {k: getattr(a, k) for k in names}
        overrides = {k: v for k, v in flags.items() if v is not None} | parse_set(a.set)
        result = train(load_config(a.config, overrides))
        if "interrupted" in result:
            return 128 + int(result.get("signum") or 2)
        print(json.dumps(result, indent=1, default=str))
        return 0

    return run


@command("eval", "evaluate a checkpoint with multi-view testing")
def _eval(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", required=True, help="last.pth / best.pth / exported .safetensors")
    p.add_argument("--data", help="annotations (default: the run's validation set)")
    p.add_argument("--root")
    p.add_argument("--views", help="CLIPSxCROPS (default: the run's)")
    p.add_argument("--batch-size", type=_positive_int, dest="batch_size",
                   help="clips per forward pass, a video's views counted (default: the run's batch size)")  # fmt: skip
    p.add_argument("--workers", type=_non_negative_int, default=2)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--on-error", choices=["exclude", "raise"], default="exclude", dest="on_error",
                   help="unreadable videos: leave them out of the metrics (counted and listed), or stop")  # fmt: skip
    p.add_argument("--topk", type=_positive_int, default=5, help="classes kept per video in the report")
    p.add_argument("--save-probs", action="store_true", help="also store every video's full probability vector")
    p.add_argument("--output", help="write the full report (per-class, confusion, per-video) as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    def run(a: argparse.Namespace) -> int:
        from ._files import check_output_file, write_text_atomic

        if a.output:
            check_output_file(a.output, a.overwrite, "--output")
        _status(f"evaluating {a.checkpoint} (loading PyTorch) ...")
        from .engine import evaluate_checkpoint
        from .engine.evaluate import summary

        metrics = evaluate_checkpoint(a.checkpoint, a.data, a.root, a.views, a.batch_size, a.workers, a.device,
                                      a.on_error, a.topk, a.save_probs)  # fmt: skip
        if metrics is None:  # not the main process under torchrun
            return 0
        print(summary(metrics) + (f"  [{metrics['weights']} weights]" if metrics["weights"] == "ema" else ""))
        for name, acc in zip(metrics["classes"], metrics["per_class_accuracy"]):
            print(f"  {name:30s} {'-' if acc is None else f'{acc:.1f}'}")
        for row in metrics["unreadable"][:20]:
            print(f"  unreadable: {row['path']}: {row['reason']}")
        if len(metrics["unreadable"]) > 20:
            print(f"  ... {len(metrics['unreadable']) - 20} more unreadable videos in the report")
        if a.output:
            write_text_atomic(a.output, json.dumps(metrics, indent=1))
            print(f"report written to {a.output}")
        return 0

    return run


@command("predict", "class probabilities for video files, or a timeline of windows over one long video")
def _predict(p: argparse.ArgumentParser):
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--views", help="CLIPSxCROPS (default: the run's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--window", type=_positive_float, help="seconds per window (fractions allowed): classify "
                   "sliding windows of one long video instead of whole files")  # fmt: skip
    p.add_argument("--stride", type=_positive_float, help="seconds between window starts (default: half the window)")
    p.add_argument("--batch-size", type=_positive_int, dest="batch_size",
                   help="windows per forward pass (default: the run's batch size)")  # fmt: skip
    p.add_argument("--output", help="with --window: the timeline CSV (a PNG plot is written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output and its PNG")

    def run(a: argparse.Namespace) -> int:
        if a.window is not None:
            return _timeline(a)
        if a.output or a.stride or a.batch_size:
            raise ValueError("--output, --stride and --batch-size belong to a timeline: add --window SECONDS")
        _status(f"predicting {len(a.videos)} video(s) with {a.checkpoint} (loading PyTorch) ...")
        from .engine import predict

        results = predict(a.checkpoint, a.videos, a.topk, a.views, a.device, progress=True)
        if a.format == "json":
            print(json.dumps(results, indent=1))
        else:
            for r in results:
                if "error" in r:
                    print(f"kinetoscope predict: error: {r['video']}: {r['error']}", file=sys.stderr)
                    continue
                print(r["video"])
                for t in r["top"]:
                    print(f"  {t['probability']:6.3f}  {t['class']}")
        return 1 if any("error" in r for r in results) else 0

    return run


def _timeline(a: argparse.Namespace) -> int:
    from pathlib import Path

    from ._files import check_output_file

    if len(a.videos) != 1:
        raise ValueError(f"--window makes a timeline of one video; got {len(a.videos)}")
    if a.views:
        raise ValueError("--views does not apply to a timeline: each window is one centre-cropped clip")
    if a.output:
        check_output_file(a.output, a.overwrite, "--output")
        check_output_file(Path(a.output).with_suffix(".png"), a.overwrite, "timeline plot")
    _status(f"classifying windows of {a.videos[0]} with {a.checkpoint} (loading PyTorch) ...")
    from .engine.timeline import format_timeline, plot_timeline, predict_timeline, write_timeline_csv

    result = predict_timeline(a.checkpoint, a.videos[0], a.window, a.stride, a.topk, a.batch_size, a.device,
                              progress=True)  # fmt: skip
    if a.format == "json":
        print(json.dumps({k: v for k, v in result.items() if k != "probs"}, indent=1))
    else:
        print(f"{result['video']}: {len(result['rows'])} windows of {result['window_frames']} frames every "
              f"{result['stride_frames']} frames ({result['fps']:g} fps)")  # fmt: skip
        print("\n".join(format_timeline(result["rows"])))
    if a.output:
        csv_path = write_timeline_csv(result, a.output)
        png = plot_timeline(result, Path(a.output).with_suffix(".png"))
        print(f"wrote {csv_path} and {png}")
    return 0


@command("features", "pooled pre-logits (embeddings) of video files, per video or per clip")
def _features(p: argparse.ArgumentParser):
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", required=True, help="feats.npy (rows named in feats.json beside it) or .safetensors")
    p.add_argument("--per-clip", action="store_true", dest="per_clip",
                   help="one row per view (clip x crop) instead of their mean per video")  # fmt: skip
    p.add_argument("--views", help="CLIPSxCROPS (default: the run's)")
    p.add_argument("--batch-size", type=_positive_int, dest="batch_size",
                   help="clips per forward pass (default: the run's batch size)")  # fmt: skip
    p.add_argument("--workers", type=_non_negative_int, default=2)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (and its sidecar)")

    def run(a: argparse.Namespace) -> int:
        from ._files import check_output_file
        from .engine.features import feature_outputs

        for f in feature_outputs(a.output):
            check_output_file(f, a.overwrite, "--output")
        _status(f"features of {len(a.videos)} video(s) with {a.checkpoint} (loading PyTorch) ...")
        from .engine.features import extract_features, save_features

        result = extract_features(a.checkpoint, a.videos, a.views, a.batch_size, a.workers, a.device, progress=True)
        files = save_features(result, a.output, a.per_clip, a.overwrite)
        for row in result["unreadable"]:
            print(f"kinetoscope features: error: {row['video']}: {row['error']} (left out)", file=sys.stderr)
        shape = result["clip_features"].shape if a.per_clip else result["features"].shape
        print(f"wrote {' and '.join(map(str, files))}: {shape[0]} videos x {' x '.join(map(str, shape[1:]))} "
              f"({result['sampling']}, views {result['views']})")  # fmt: skip
        return 1 if result["unreadable"] else 0

    return run


@command("explain", "heatmaps of where a model looks for a class: PNG frames, a GIF and a strip")
def _explain(p: argparse.ArgumentParser):
    p.add_argument("video")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", required=True, help="folder for the frames, explanation.gif, strip.png, heatmap.npy")
    p.add_argument("--class", dest="class_name", help="explain this class (default: the predicted one)")
    p.add_argument("--method", choices=["auto", "hirescam", "gradcam", "rollout"], default="auto",
                   help="auto: attention rollout where the family allows it (CST), else HiResCAM")  # fmt: skip
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--overwrite", action="store_true", help="replace an explanation already in --output")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        if not Path(a.video).exists():
            raise ValueError(f"{a.video}: file not found")
        _status(f"explaining {a.video} with {a.checkpoint} (loading PyTorch) ...")
        from .engine.explain import check_explanation_dir, explain, write_explanation

        check_explanation_dir(a.output, a.overwrite)
        result = explain(a.checkpoint, a.video, a.class_name, a.method, a.device)
        files = write_explanation(result, a.output, a.overwrite)
        print(f"{result['video']}: {result['class']} (probability {result['probability']:.3f}; predicted "
              f"{result['predicted_class']})")  # fmt: skip
        print(f"method: {result['detail']}")
        print(f"wrote {len(files) - 4} frames, {files[-4].name}, {files[-3].name}, {files[-2].name} and "
              f"{files[-1].name} to {a.output}")  # fmt: skip
        return 0

    return run


@command("export", "write a checkpoint's weights (safetensors) or the model as ONNX, checked with onnxruntime")
def _export(p: argparse.ArgumentParser):
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--model", help="a registered variant with untrained weights (ONNX only)")
    p.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors")
    p.add_argument("--output", help="default: the checkpoint path with .safetensors / .onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output (never the checkpoint)")
    p.add_argument("--frames", type=_positive_int, help="with --model: clip length (default: the variant's)")
    p.add_argument("--size", type=_positive_int, help="with --model: crop size (default: the variant's)")
    p.add_argument("--tolerance", type=_positive_float, default=1e-4,
                   help="largest |onnxruntime - PyTorch| logit accepted (default 1e-4)")  # fmt: skip
    p.add_argument("--opset", type=_positive_int, help="ONNX opset (default: PyTorch's)")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        if a.format == "safetensors":
            if a.model or a.frames or a.size:
                raise ValueError("--model, --frames and --size need --format onnx (safetensors exports a checkpoint)")
            _status(f"exporting {a.checkpoint} (loading PyTorch) ...")
            from .engine import export

            out = export(a.checkpoint, a.output, a.overwrite)
            print(f"wrote {out}")
            return 0
        if a.output is None and a.model:
            raise ValueError("--model needs --output FILE.onnx")
        output = a.output or str(Path(a.checkpoint).with_suffix(".onnx"))
        from ._files import check_output_file

        check_output_file(output, a.overwrite, "--output")
        _status(f"exporting {a.checkpoint or a.model} to ONNX (loading PyTorch; tracing takes a while) ...")
        from .engine.onnx import OnnxMismatchError, export_onnx

        try:
            r = export_onnx(output, a.checkpoint, a.model, a.overwrite, a.tolerance, a.opset, a.frames, a.size)
        except OnnxMismatchError as err:
            print(f"kinetoscope export: error: {err}", file=sys.stderr)
            return 1
        meta = r["metadata"]
        print(f"wrote {r['output']} ({r['bytes'] / 2**20:.1f} MiB, {r['seconds']:.0f} s): {meta['input']} -> "
              f"{meta['output'].split(';')[0]}")  # fmt: skip
        print(f"onnxruntime vs PyTorch: max abs difference {r['max_abs_diff']:.2e} (tolerance {a.tolerance:g})")
        print(f"preprocessing in the file's metadata_props: sampling {meta['sampling']}, views {meta['views']}, "
              f"mean {meta['mean']}, std {meta['std']}")  # fmt: skip
        return 0

    return run


@command("convert", "convert a released checkpoint (TPS, DualFormer: mmaction2, backbone or image), or inflate a "
                    "kinetoscope image run into its video model, to safetensors")  # fmt: skip
def _convert(p: argparse.ArgumentParser):
    p.add_argument("input", help="released checkpoint, or a kinetoscope run's best.pth/last.pth/export")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--model", required=True, help="registered variant, e.g. dualformer_t")
    p.add_argument("--frames", type=_positive_int, help="clip length the model is built for (default: the variant's)")
    p.add_argument("--size", type=_positive_int, help="crop size the model is built for (default: the variant's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    def run(a: argparse.Namespace) -> int:
        from .engine.inflate import convert

        info = convert(a.input, a.output, a.model, a.overwrite, a.frames, a.size)
        classes = f"{info['num_classes']}-class head" if info["num_classes"] else "no classifier"
        print(f"wrote {a.output}: {info['model']} ({info['num_frames']}x{info['img_size']}, {classes}, "
              f"{info['tensors']} tensors) from {info['source']}")  # fmt: skip
        return 0

    return run


@command("demo", "synthetic videos -> train a nano on CPU -> multi-view evaluation (what `make demo` runs)")
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--output", default="demo_out")
    p.add_argument("--model", default="pst_nano", help="any registered model, trained with its own recipe")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--per-class", type=_positive_int, default=40, dest="per_class")

    def run(a: argparse.Namespace) -> int:
        _status("starting the demo (loading PyTorch and the models) ...")
        from .engine.demo import run_demo

        result = run_demo(a.output, a.epochs, a.per_class, a.model)
        if "interrupted" in result:
            return 128 + int(result.get("signum") or 2)
        top1 = result.get("metrics", {}).get("top1", 0.0)
        return 0 if top1 >= 90.0 or a.epochs is not None else 1

    return run


# ----------------------------------------------------------------------------------------------- data
@command("synth", "write the synthetic time-direction video dataset (real H.264 files + CSVs)")
def _synth(p: argparse.ArgumentParser):
    p.add_argument("out")
    p.add_argument("--classes", nargs="*", help="subset of the classes, in time-reversed pairs")
    p.add_argument("--per-class", type=_positive_int, default=40, dest="per_class")
    p.add_argument("--val-per-class", type=_positive_int, default=10, dest="val_per_class")
    p.add_argument("--frames", type=_positive_int, default=32)
    p.add_argument("--size", type=_positive_int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds a dataset")

    def run(a: argparse.Namespace) -> int:
        from pathlib import Path

        existing = [n for n in ("train.csv", "val.csv", "train", "val") if (Path(a.out) / n).exists()]
        if existing and not a.overwrite:
            raise ValueError(f"{a.out} already holds {', '.join(existing)}; pass --overwrite to replace them")
        total = (a.per_class + a.val_per_class) * (len(a.classes) if a.classes else 8)
        _status(f"writing {total} videos to {a.out} ...")
        from .data import write_synthetic_dataset

        info = write_synthetic_dataset(a.out, a.classes, a.per_class, a.val_per_class, a.frames, a.size, a.seed,
                                       progress=True)  # fmt: skip
        print(f"wrote {a.out}: train {info['train']}, val {info['val']}, classes {', '.join(info['classes'])}")
        return 0

    return run


@command("check-videos", "scan a dataset in parallel; list unreadable videos with reasons")
def _check_videos(p: argparse.ArgumentParser):
    p.add_argument("annotations")
    p.add_argument("--root")
    p.add_argument("--format", default="auto")
    p.add_argument("--workers", type=_positive_int)
    p.add_argument("--report", help="write path,reason CSV of the unreadable files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --report")

    def run(a: argparse.Namespace) -> int:
        import csv

        from ._files import atomic_write, check_output_file

        if a.report:
            check_output_file(a.report, a.overwrite, "--report")
        _status(f"checking the videos of {a.annotations} ...")
        from .data import check_videos

        result = check_videos(a.annotations, a.root, a.format, a.workers, progress=True)
        print(f"{result['total']} videos: {result['readable']} readable, {len(result['unreadable'])} unreadable")
        for path, reason in result["unreadable"]:
            print(f"  {path}: {reason}")
        if a.report:
            with atomic_write(a.report, "w") as f:
                csv.writer(f).writerows([("path", "reason"), *result["unreadable"]])
        return 0 if not result["unreadable"] else 1

    return run


# ------------------------------------------------------------------------------------------------ main
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block): ``kinetoscope train: error: argument --frames: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="kinetoscope", description="Efficient video transformers.")
    parser.add_argument("--version", action="version", version=f"kinetoscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also KINETOSCOPE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, setup) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_run=setup(sp))
    return parser


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line. An error re-raised by a DataLoader worker carries the worker's
    traceback in its message; its last line is the message."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, argument errors (already printed)
        return int(exit_.code or 0)
    debug = args.debug or os.environ.get("KINETOSCOPE_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"kinetoscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # bad input: a clear message, no traceback
        if debug:
            raise
        print(f"kinetoscope {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
