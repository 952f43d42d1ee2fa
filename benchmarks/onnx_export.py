"""ONNX export of every registered model: time, file size and the largest difference from PyTorch.

Each variant (untrained weights, at its smallest input ``min_input`` unless ``--full``) goes through
``kinetoscope.engine.onnx.export_onnx``: traced with batch 2, run in onnxruntime with batch 3 and compared
with PyTorch's logits. Writes docs/benchmarks/onnx_export.md.

    python benchmarks/onnx_export.py [--models 'pst_*'] [--full]
"""

from __future__ import annotations

import argparse
import fnmatch
import platform
import tempfile
import traceback
from pathlib import Path

import onnxruntime
import torch

from kinetoscope.engine.onnx import export_onnx
from kinetoscope.models import get_model_config, list_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="*", help="shell-style filter")
    ap.add_argument("--full", action="store_true", help="export at each variant's own input, not the smallest")
    ap.add_argument("--out", default="docs/benchmarks/onnx_export.md")
    a = ap.parse_args()
    rows = []
    for name in [n for n in list_models() if fnmatch.fnmatch(n, a.models)]:
        cfg = get_model_config(name)
        frames, size = (cfg.num_frames, cfg.img_size) if a.full else cfg.min_input
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = export_onnx(Path(tmp) / f"{name}.onnx", model_name=name, frames=frames, size=size)
                row = (name, f"{frames}x{size}", f"{r['seconds']:.1f}", f"{r['bytes'] / 2**20:.1f}",
                       f"{r['max_abs_diff']:.1e}", "ok")  # fmt: skip
            except Exception as err:  # noqa: BLE001  (a failing model is a row of the table)
                traceback.print_exc()
                row = (name, f"{frames}x{size}", "-", "-", "-", f"{type(err).__name__}: {str(err).splitlines()[0]}")
        print(" | ".join(row), flush=True)
        rows.append(row)
    lines = [
        "# ONNX export of every model",
        "",
        f"`python benchmarks/onnx_export.py{' --full' if a.full else ''}`: untrained weights with the default "
        "400-class head at the input shown (frames x size), `torch.onnx.export(dynamo=True)` with a dynamic batch "
        "(traced with batch 2), checked in onnxruntime with batch 3 against PyTorch's logits. Export time "
        f"includes tracing and serialising, not the check. {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}.",
        "",
        "| model | input | export s | file MiB | max abs diff | result |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
