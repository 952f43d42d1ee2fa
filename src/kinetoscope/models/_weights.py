"""Loading checkpoints: video checkpoints as they are, 2D image checkpoints by inflation.

Every load uses ``torch.load(weights_only=True)`` (or safetensors), so a checkpoint that carries
pickled code is refused instead of executed.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers.patch_embed import inflate_conv_weight
from ._base import VideoModel

log = logging.getLogger(__name__)

_NESTED_KEYS = ("model", "state_dict", "model_state", "module", "model_ema")


def read_state_dict(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` from a path (``.safetensors`` or a torch file) or a mapping.

    Nested checkpoints (``{"model": ...}``, ``{"state_dict": ...}``) are unwrapped and a DDP
    ``module.`` prefix is removed.
    """
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as err:
                raise ValueError(
                    f"refusing to load {path}: it contains pickled objects that are not tensors "
                    f"({err}). kinetoscope loads checkpoints with weights_only=True; re-save the "
                    "weights as a plain state_dict or with `kinetoscope export --format safetensors`"
                ) from err
    for key in _NESTED_KEYS:
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
            break
    if not all(isinstance(v, Tensor) for v in sd.values()):
        bad = next(k for k, v in sd.items() if not isinstance(v, Tensor))
        raise ValueError(f"checkpoint entry {bad!r} is not a tensor; expected a state_dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _drop_mismatched_head(model: nn.Module, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    own = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k.startswith("head.") and k in own and own[k].shape != v.shape:
            log.info(
                "dropping %s: checkpoint %s vs model %s (different num_classes)", k, tuple(v.shape), tuple(own[k].shape)
            )
            continue
        out[k] = v
    return out


def load_checkpoint(model: nn.Module, source: str | Path | Mapping[str, Tensor], strict: bool = True) -> None:
    """Load a checkpoint of the same video architecture (head dropped if its size differs)."""
    sd = _drop_mismatched_head(model, read_state_dict(source))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint does not match {type(model).__name__}: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}. For a 2D image checkpoint use kinetoscope.load_pretrained_2d"
        )


def load_pretrained_2d(
    model: VideoModel, state_dict_or_path: str | Path | Mapping[str, Tensor], source: str = "timm"
) -> dict[str, list[str]]:
    """Inflate a 2D image checkpoint (timm names) into a video model.

    Generic rules, applied after the family's own key mapping (``VideoModel.convert_2d_state_dict``):

    * 4D conv kernels that meet a 5D model kernel are repeated over time and divided by its length,
      so a clip of identical frames gives the image's response;
    * tensors whose shape differs only by a resample are passed through the family's
      ``resize_2d_tensor`` hook (position embeddings, bias tables);
    * the classifier is dropped when ``num_classes`` differs, as timm does.

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...]}``.
    """
    if source not in ("timm",):
        raise ValueError(f"unknown 2D checkpoint source {source!r}; supported: 'timm'")
    sd = model.convert_2d_state_dict(read_state_dict(state_dict_or_path))
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for k, v in sd.items():
        if k not in own:
            unexpected.append(k)
            continue
        target = own[k]
        if v.shape == target.shape:
            mapped[k] = v
        elif v.dim() == 4 and target.dim() == 5 and v.shape[2:] == target.shape[3:] and v.shape[:2] == target.shape[:2]:
            mapped[k] = inflate_conv_weight(v, target.shape[2])
        elif k.startswith("head.") or k.startswith("fc."):
            log.info("dropping classifier %s: %s vs %s", k, tuple(v.shape), tuple(target.shape))
        elif (r := model.resize_2d_tensor(k, v, target)) is not None:
            mapped[k] = r
        else:
            raise ValueError(f"cannot map {k}: checkpoint {tuple(v.shape)} vs model {tuple(target.shape)}")
    if not mapped:
        raise ValueError("no tensor of the checkpoint matches the model; is it a checkpoint of the right 2D backbone?")
    missing = [k for k in own if k not in mapped]
    model.load_state_dict(mapped, strict=False)
    return {"loaded": sorted(mapped), "missing": missing, "unexpected": unexpected}
