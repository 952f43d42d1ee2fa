"""Parameters, multiply-adds, latency and memory of a model.

Multiply-adds are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device:
no memory is allocated and no arithmetic runs, so a ViT-B video model is counted in milliseconds.
On ``meta``, ``F.scaled_dot_product_attention`` decomposes into ``bmm``, so attention is counted.

Conventions (GMACs = GFLOPs / 2 in FlopCounterMode's multiply-and-add counting):

* ``gmacs``          every matmul and convolution (fvcore / mmcv style; most video papers);
* ``gmacs_no_attn``  linear and conv layers only (``mm``/``addmm``/``convolution``); the matmuls
  between activations (``bmm``: attention scores and their product with values) are left out, as
  the SCT paper counts.

Latency is timed with ``torch.utils.benchmark.Timer`` (CUDA synchronised, the caller's thread count).
The model-zoo rows of ``kinetoscope models`` (:func:`zoo_rows`) are read from the table ``make zoo``
ships when it was computed from the very model sources installed, and counted afresh otherwise. torch
is imported inside the functions that need it, so ``kinetoscope models`` and ``--help`` start at once.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import importlib.metadata
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ATTENTION_OPS = ("bmm", "baddbmm", "_scaled_dot_product")


@dataclass
class Profile:
    params_m: float
    params_no_head_m: float
    gmacs: float
    gmacs_no_attn: float
    input_shape: tuple[int, ...]
    latency_ms: float | None = None
    clips_per_s: float | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    dtype: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module, exclude_head: bool = False) -> int:
    from torch import nn

    head = getattr(model, "head", None) if exclude_head else None
    skip = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> tuple[float, float]:
    """``(GMACs, GMACs without attention matmuls)`` of one forward pass, counted on ``meta``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = model if _on_meta(model) else copy.deepcopy(model).to("meta")
    meta_model.eval()
    x = torch.zeros(*input_shape, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(x)
    by_op = counter.get_flop_counts()["Global"]
    total = sum(by_op.values())
    attn = sum(v for op, v in by_op.items() if any(a in str(op) for a in ATTENTION_OPS))
    return total / 2e9, (total - attn) / 2e9


def _on_meta(model: nn.Module) -> bool:
    p = next(iter(model.parameters()), None)
    return p is not None and p.device.type == "meta"


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    latency: bool = False,
    device: str = "cpu",
    dtype: str = "fp32",
    repeats: int = 10,
    warmup: int = 3,
    compile: bool = False,
) -> Profile:
    """Params (M), GMACs and GMACs without attention for ``input_shape = (B, C, T, H, W)``.

    With ``latency=True`` also times the forward pass on ``device`` (median of ``repeats`` after
    ``warmup`` runs, inference mode) and records peak memory (CUDA only).
    """
    gmacs, gmacs_no_attn = count_macs(model, input_shape)
    result = Profile(
        params_m=count_params(model) / 1e6,
        params_no_head_m=count_params(model, exclude_head=True) / 1e6,
        gmacs=gmacs,
        gmacs_no_attn=gmacs_no_attn,
        input_shape=tuple(input_shape),
    )
    if latency:
        if _on_meta(model):
            raise ValueError("latency needs a model with real weights, not one on the meta device")
        result.latency_ms, result.peak_memory_mb = _time_forward(
            model, input_shape, device, dtype, repeats, warmup, compile
        )
        result.clips_per_s = input_shape[0] * 1000.0 / result.latency_ms
        result.device, result.dtype = device, dtype
    return result


def _time_forward(model, input_shape, device, dtype, repeats, warmup, compile) -> tuple[float, float | None]:
    result = compare_latency({"model": model}, input_shape, device, dtype, repeats, warmup, compile)
    return result["model"]


def compare_latency(
    models: dict[str, nn.Module],
    input_shape: Sequence[int],
    device: str = "cpu",
    dtype: str = "fp32",
    repeats: int = 10,
    warmup: int = 3,
    compile: bool = False,
) -> dict[str, tuple[float, float | None]]:
    """``{name: (median forward ms, peak CUDA MiB or None)}`` for models timed side by side.

    Repeats are interleaved (model A, B, C, A, B, C, ...) so drift in machine load falls on all models
    alike; ratios between them are the honest quantity to report. Each forward is timed by
    ``torch.utils.benchmark.Timer`` (which synchronises CUDA), under inference mode and autocast.
    """
    import torch
    from torch.utils.benchmark import Timer

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but CUDA is not available on this machine")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    x = torch.randn(*input_shape, device=dev)
    runs = {}
    for name, model in models.items():
        model = model.to(dev).eval()
        run = torch.compile(model) if compile else model

        def forward(run=run):
            with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                run(x)

        runs[name] = forward
    times: dict[str, list[float]] = {name: [] for name in models}
    peaks: dict[str, float | None] = dict.fromkeys(models)
    for name, forward in runs.items():  # warm-up, and peak memory of each model alone
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(warmup):
            forward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            peaks[name] = torch.cuda.max_memory_allocated(dev) / 2**20
    timers = {name: Timer("forward()", globals={"forward": f}, num_threads=torch.get_num_threads())
              for name, f in runs.items()}  # fmt: skip
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer.timeit(1).median * 1000)
    return {name: (statistics.median(t), peaks[name]) for name, t in times.items()}


def paper_comparison(name: str) -> dict:
    """Our params and GFLOPs beside the paper's, in the paper's conventions, for a registered variant."""
    import torch

    from .models import create_model, get_model_config

    cfg = get_model_config(name)
    ref = cfg.paper
    head_classes = ref.params_head_classes if ref and ref.params_head_classes else cfg.num_classes
    with torch.device("meta"):
        model = create_model(name, num_classes=head_classes)
    shape = (1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    prof = profile(model, shape)
    convention = ref.flop_convention if ref else "mac"
    ours_gflops = {"mac": prof.gmacs, "mac_no_attn": prof.gmacs_no_attn, "flop": 2 * prof.gmacs}[convention]
    ours_params = prof.params_no_head_m if ref and ref.params_head_classes is None else prof.params_m

    def delta(ours, paper):
        return None if paper is None else 100.0 * (ours - paper) / paper

    return {
        "name": name,
        "input": f"{cfg.num_frames}x{cfg.img_size}",
        "params_m": round(ours_params, 3),
        "paper_params_m": ref.params_m if ref else None,
        "params_delta_pct": _round(delta(ours_params, ref.params_m if ref else None)),
        "params_scope": ("backbone" if ref and ref.params_head_classes is None else f"with {head_classes}-class head"),
        "gflops": round(ours_gflops, 2),
        "paper_gflops": ref.gflops if ref else None,
        "gflops_delta_pct": _round(delta(ours_gflops, ref.gflops if ref else None)),
        "flop_convention": convention,
        "gmacs": round(prof.gmacs, 2),
        "gmacs_no_attn": round(prof.gmacs_no_attn, 2),
        "views": cfg.test_views,
        "paper_top1": ref.top1 if ref else None,
        "dataset": ref.dataset if ref else None,
        "weights": [w.to_dict() for w in cfg.weights],  # what the authors trained; "released": false if unpublished
    }


def _round(x):
    return None if x is None else round(x, 2)


# ------------------------------------------------------------------------------------------- the zoo
def format_zoo_table(rows: list[dict], markdown: bool = False) -> str:
    """The rows of :func:`paper_comparison` as an aligned text table or a Markdown table."""
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


def _fmt(x, spec=".2f", signed=False) -> str:
    if x is None:
        return "-"
    return format(x, ("+" if signed else "") + spec)


def zoo_fingerprint() -> str:
    """A digest of what the zoo numbers depend on: the sources of ``models/`` and ``layers/`` and the
    torch version (read from the package metadata, without importing torch)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(importlib.metadata.version("torch").encode())
    for path in sorted([*(root / "models").glob("*.py"), *(root / "layers").glob("*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def shipped_zoo() -> list[dict] | None:
    """The rows ``make zoo`` wrote into ``kinetoscope/_zoo_table.py``, if they match these sources."""
    try:
        from . import _zoo_table
    except ImportError:
        return None
    if _zoo_table.FINGERPRINT != zoo_fingerprint():
        return None
    return json.loads(_zoo_table.ROWS_JSON)


def zoo_rows(pattern: str = "*", progress: bool = False, recount: bool = False) -> list[dict]:
    """:func:`paper_comparison` of every registered variant matching ``pattern`` (sorted by name): the
    shipped table when it is current (instant), else counted now (a second or so per variant)."""
    rows = None if recount else shipped_zoo()
    if rows is not None:
        return [r for r in rows if fnmatch.fnmatch(r["name"], pattern)]
    from ._progress import progress as progress_bar
    from .models import list_models

    names = list_models(pattern)
    return [paper_comparison(n) for n in progress_bar(names, desc="counting", enabled=progress, leave=False)]


def write_zoo_table(rows: list[dict], path: str | Path | None = None) -> Path:
    """Write the rows as ``kinetoscope/_zoo_table.py`` with the current fingerprint (``make zoo``)."""
    path = Path(path) if path is not None else Path(__file__).resolve().parent / "_zoo_table.py"
    text = (
        '"""The model-zoo rows of `kinetoscope models`, written by `make zoo` (scripts/update_readme_zoo.py).\n\n'
        "Generated; do not edit. Used only while FINGERPRINT matches the model sources "
        '(kinetoscope.profiling.zoo_fingerprint).\n"""\n\n'
        f'FINGERPRINT = "{zoo_fingerprint()}"\n\n'
        f'ROWS_JSON = r"""\n{json.dumps(rows, indent=1, ensure_ascii=False)}\n"""\n'
    )
    path.write_text(text)
    return path
