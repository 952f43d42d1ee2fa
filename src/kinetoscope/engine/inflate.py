"""A kinetoscope run as the start of a video run: ``kinetoscope convert RUN/best.pth OUT.safetensors --model NAME``.

:func:`convert` recognises a checkpoint written by ``kinetoscope train`` or ``export`` (it carries its
config and classes) and hands anything else, the released TPS and DualFormer checkpoints, to
:func:`kinetoscope.models.convert_checkpoint`.

A run's weights (the EMA weights when the run kept them) are rebuilt for ``NAME`` at the clip length and
crop the video run will use (default: the variant's) by :func:`kinetoscope.models.adapt_state_dict`:

* an **image run** (``format: images``: the model trained on still images shown as clips of identical
  frames) is inflated: every 3D conv kernel becomes the 2D kernel it applied, repeated over the video
  model's temporal extent and divided by it, as an ImageNet kernel is inflated;
* tensors whose shape depends on the input the model was built for are resampled by the family's rule
  (position embeddings over frames, the clip [CLS] row kept; PST's bias tables over frame offsets; grids
  for another crop size);
* the classifier is kept with the run's classes; a video run of another class count drops it when it
  loads the file (``--set pretrained=OUT.safetensors``).

The file is loaded strictly into the model before it is written, so what is written always loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import adapt_state_dict, convert_checkpoint, create_model, get_model_config
from ..models._weights import check_converted_output, write_converted
from .checkpoint import load_model_weights, model_from_config
from .config import from_dict


def convert(
    source: str | Path,
    output: str | Path,
    model_name: str,
    overwrite: bool = False,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> dict:
    """``kinetoscope convert``: a kinetoscope run (training checkpoint or export) through :func:`inflate_run`,
    any other checkpoint through ``convert_checkpoint``. Returns the metadata written with the tensors."""
    check_converted_output(output, overwrite)
    try:
        weights, meta = load_model_weights(source)
    except ValueError:  # not written by kinetoscope (or damaged: convert_checkpoint names the problem)
        return convert_checkpoint(source, output, model_name, overwrite, num_frames, img_size)
    if not meta.get("config") or not meta.get("classes"):
        return convert_checkpoint(source, output, model_name, overwrite, num_frames, img_size)
    return inflate_run(weights, meta, source, output, model_name, num_frames, img_size)


def inflate_run(
    weights: dict,
    meta: dict,
    source: str | Path,
    output: str | Path,
    model_name: str,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> dict:
    """Write the weights of a run (``load_model_weights``' ``weights`` and ``meta``) for ``model_name``
    built for ``num_frames`` x ``img_size`` (default: the variant's); see the module docstring."""
    run = from_dict(meta["config"], str(source))
    classes = list(meta["classes"])
    if model_name != run.model:
        raise ValueError(f"{source} is a kinetoscope {run.model} run; its weights fit --model {run.model}")
    variant = get_model_config(model_name)
    frames, size = num_frames or variant.num_frames, img_size or variant.img_size
    still = run.format == "images"
    with torch.device("meta"):  # the run's model, for its conv geometry: shapes only
        trained = model_from_config(run, len(classes))
    model = create_model(model_name, num_classes=len(classes), num_frames=frames, img_size=size, **run.model_kwargs)
    state = adapt_state_dict(model, weights, trained if still else None, (run.frames, run.size, run.size))
    model.load_state_dict(state)  # strict: every tensor has its place
    kind = "image" if still else "video"
    ema = ", EMA weights" if meta.get("weights") == "ema" else ""
    info = {
        "model": model_name,
        "source": f"a kinetoscope {kind} run of {run.model} ({run.frames}x{run.size}, {len(classes)} classes{ema})",
        "source_layout": f"kinetoscope {kind} run",
        "num_classes": len(classes),
        "classes": classes,
        "num_frames": frames,
        "img_size": size,
        "converted_from": Path(source).name,
    }
    return write_converted(Path(output), model, info)
