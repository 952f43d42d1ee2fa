"""ONNX export with a dynamic batch, checked at once with onnxruntime, preprocessing in the metadata.

:func:`export_onnx` traces a trained checkpoint (or a variant's untrained weights) with
``torch.onnx.export(..., dynamo=True)``, runs the graph in onnxruntime on a batch of another size than
the traced one, and writes the file only when the largest absolute difference from PyTorch's logits is
within the tolerance. The model's input is one clip per row, ``video (B, 3, T, H, W)`` float32, output
``logits (B, K)``; :func:`onnx_metadata` is the only definition of what the file carries about the input,
so a user can preprocess without kinetoscope (``metadata_props`` of the ONNX model, read back with
:func:`read_onnx_metadata`).

Three things make every registered model exportable:

* attention runs on 4-D ``(batch, heads, N, d)`` tensors (``layers.attention``), the only rank the ONNX
  translation of ``scaled_dot_product_attention`` takes;
* the graph is traced with PyTorch's math attention kernel: the fused CPU kernel's output has other
  strides than the decomposition the exporter re-runs, and a reshape traced as a view on the former
  fails on the latter under a symbolic batch;
* LSH attention (SCT) switches to its ``"export"`` path, the same function in operators ONNX has
  (``layers.lsh_attention``), with the eval rotations drawn before tracing (the graph holds them as
  constants, as eval mode fixes them anyway).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_write, check_output_file
from .checkpoint import EXPORT_FORMAT, EXPORT_KEY, load_trained
from .config import TrainConfig, load_config, resolve, resolve_inputs

ONNX_TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| logit accepted (float32; measured <= 1e-6 on every model)
INPUT_NAME, OUTPUT_NAME = "video", "logits"
TRACE_BATCH, CHECK_BATCH = 2, 3  # traced with one batch size, checked with another: the batch is truly dynamic


class OnnxMismatchError(RuntimeError):
    """onnxruntime's logits differ from PyTorch's by more than the tolerance (nothing was written)."""


def _require_onnx():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as err:
        raise ValueError(
            f"ONNX export needs the onnx extra ({err.name} is missing): pip install 'kinetoscope[onnx]'"
        ) from None
    return onnx, onnxruntime


def onnx_metadata(cfg: TrainConfig, classes: list[str] | None, weights: str, num_classes: int) -> dict[str, str]:
    """The ``metadata_props`` of an export: the preprocessing spelled out key by key (strings, JSON where a
    value is a list), and under ``"kinetoscope"`` the same metadata a ``.safetensors`` export carries."""
    inputs = resolve_inputs(cfg)
    short_side = cfg.short_side or inputs["size"]
    info = {"format": EXPORT_FORMAT, "model": cfg.model, "config": cfg.to_dict(), "classes": list(classes or []),
            "weights": weights}  # fmt: skip
    return {
        EXPORT_KEY: json.dumps(info),
        "model": cfg.model,
        "classes": json.dumps(list(classes or [])),
        "num_classes": str(num_classes),
        "weights": weights,
        "input": f"{INPUT_NAME}: float32 (batch, 3, {inputs['frames']}, {inputs['size']}, {inputs['size']}) "
        "= (batch, RGB, frames, height, width)",
        "output": f"{OUTPUT_NAME}: float32 (batch, {num_classes}); softmax, then average over a video's views",
        "num_frames": str(inputs["frames"]),
        "img_size": str(inputs["size"]),
        "sampling": inputs["sampling"],
        "views": inputs["views"],
        "preprocess": f"frames chosen by 'sampling' ({inputs['sampling']}; 'views' {inputs['views']} = temporal "
        f"clips x spatial crops), RGB scaled to 0..1, short side resized to {short_side} (bilinear, "
        f"antialiased), centre crop {inputs['size']} (3 crops along the long side for 3 crops), then "
        "(x - mean) / std per channel",
        "short_side": str(short_side),
        "mean": json.dumps(list(inputs["mean"])),
        "std": json.dumps(list(inputs["std"])),
    }


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (onnxruntime reads them too, as custom metadata)."""
    onnx, _ = _require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


@contextlib.contextmanager
def exportable(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its LSH attention on the export path while inside (restored after)."""
    from ..layers.lsh_attention import LSHAttention

    lsh = [m for m in model.modules() if isinstance(m, LSHAttention)]
    before = [m.impl for m in lsh]
    for m in lsh:
        m.impl = "export"
    try:
        yield model
    finally:
        for m, impl in zip(lsh, before):
            m.impl = impl


def to_onnx(model: nn.Module, example: torch.Tensor, opset: int | None = None):
    """Trace ``model`` (eval mode) on ``example`` with a dynamic batch; returns the ``onnx.ModelProto``."""
    from torch.export import Dim
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model.eval()
    with exportable(model), torch.no_grad(), sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(example)  # eval-mode constants (LSH rotations) are drawn before tracing
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's step-by-step chatter
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: Dim("batch")}}, opset_version=opset, verbose=False,
            )  # fmt: skip
    return program.model_proto


def onnx_max_abs_diff(model_bytes: bytes, model: nn.Module, video: torch.Tensor) -> float:
    """Largest ``|onnxruntime - PyTorch|`` over the logits of ``video`` (PyTorch's own fast paths)."""
    _, ort = _require_onnx()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: video.numpy()})
    with torch.no_grad():
        want = model(video).float()
    return float((torch.from_numpy(got) - want).abs().max())


def export_onnx(
    output: str | Path,
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    tolerance: float = ONNX_TOLERANCE,
    opset: int | None = None,
    frames: int | None = None,
    size: int | None = None,
) -> dict:
    """Export ``checkpoint`` (EMA weights when it has them) or, with ``model_name``, a variant's untrained
    weights (``frames``/``size`` default to the variant's) to ``output``, checked with onnxruntime.

    Returns ``{"output", "model", "seconds", "bytes", "max_abs_diff", "metadata"}``. Raises
    :class:`OnnxMismatchError` (and writes nothing) when the difference is above ``tolerance``.
    """
    if (checkpoint is None) == (model_name is None):
        raise ValueError("give either a checkpoint (--checkpoint) or a model name (--model), not both or neither")
    out = Path(output)
    if checkpoint is not None and out.resolve() == Path(checkpoint).resolve():
        raise ValueError(f"export would write over its input {checkpoint}; choose another --output")
    check_output_file(out, overwrite, "export output")
    if checkpoint is not None:
        if frames is not None or size is not None:
            raise ValueError("--frames/--size apply to --model only; a checkpoint's model has its own input size")
        model, classes, cfg, weights = load_trained(checkpoint, "cpu")
        num_classes = len(classes)
    else:
        from .checkpoint import model_from_config

        cfg = resolve(load_config(None, {"model": model_name, "frames": frames, "size": size}))
        from ..models import get_model_config

        classes, weights, num_classes = None, "untrained", get_model_config(cfg.model).num_classes
        model = model_from_config(cfg, num_classes).eval()
    onnx, _ = _require_onnx()  # after the input's checks: a bad checkpoint is named whether or not the extra is there
    inputs = resolve_inputs(cfg)
    shape = (inputs["frames"], inputs["size"], inputs["size"])
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(TRACE_BATCH, 3, *shape, generator=generator)
    check = torch.randn(CHECK_BATCH, 3, *shape, generator=generator)
    t0 = time.perf_counter()
    proto = to_onnx(model, example, opset)
    metadata = onnx_metadata(cfg, classes, weights, num_classes)
    onnx.helper.set_model_props(proto, metadata)
    data = proto.SerializeToString()
    seconds = time.perf_counter() - t0
    diff = onnx_max_abs_diff(data, model, check)
    if not diff <= tolerance:  # NaN fails too
        raise OnnxMismatchError(
            f"onnxruntime's logits differ from PyTorch's by up to {diff:.3g} (tolerance {tolerance:g}); "
            f"nothing written to {out}"
        )
    with atomic_write(out, "wb") as f:
        f.write(data)
    return {"output": str(out), "model": cfg.model, "seconds": seconds, "bytes": len(data), "max_abs_diff": diff,
            "metadata": metadata}  # fmt: skip
