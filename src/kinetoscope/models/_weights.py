"""Loading checkpoints: video checkpoints as they are, 2D image checkpoints by inflation.

Every load uses ``torch.load(weights_only=True)`` (or safetensors), so a checkpoint that carries
pickled code is refused instead of executed.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._files import atomic_write, check_output_file
from ..layers.patch_embed import inflate_conv_weight
from ._base import VideoModel

log = logging.getLogger(__name__)

_NESTED_KEYS = ("model", "state_dict", "model_state", "module", "model_ema")


def read_state_dict(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` from a path (``.safetensors`` or a torch file) or a mapping.

    Nested checkpoints (``{"model": ...}``, ``{"state_dict": ...}``) are unwrapped and a DDP
    ``module.`` prefix is removed. A file that cannot be read is a one-line ``ValueError`` naming it.
    """
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        path = Path(source)
        sd = read_safetensors(path) if path.suffix == ".safetensors" else torch_load(path)
        if not isinstance(sd, Mapping):
            raise ValueError(f"{path}: holds a {type(sd).__name__}, not a state_dict of tensors")
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


_CONVERT_HINT = (
    "kinetoscope loads checkpoints as data only and never runs pickled code. Convert a released "
    "checkpoint with `kinetoscope convert`, or save its weights as a plain state_dict of tensors "
    "(`kinetoscope export` writes safetensors)"
)


def _numpy_data_globals() -> list:
    """The numpy constructors a checkpoint's plain data may use (mmcv/mmaction2 store numpy scalars
    and arrays in ``meta``). Each rebuilds numbers only, and what they contain is unpickled by the same
    restricted unpickler, so allowing them runs no code."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


_NUMPY_DATA_GLOBALS = _numpy_data_globals()


def torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with every failure as one line naming the file.

    A payload with pickled Python objects is refused with the way to convert it; torch's own advice to
    switch ``weights_only`` off is never passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_NUMPY_DATA_GLOBALS):
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise beside the real message
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if found:
            raise ValueError(
                f"refusing to load {path}: it holds the pickled Python object {found.group(1)}, not only "
                f"tensors and plain data (or the file is damaged). {_CONVERT_HINT}"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(err), re.S)
        raise ValueError(
            f"cannot read {path}: not a torch.save checkpoint, or damaged "
            f"({' '.join((detail.group(1) if detail else type(err).__name__).split())}). {_CONVERT_HINT}"
        ) from None
    except Exception as err:  # noqa: BLE001  (zip, EOF and key errors of a damaged or foreign file)
        first = str(err).split(". ")[0].strip() or type(err).__name__
        raise ValueError(f"cannot read {path}: damaged (truncated?) or not a PyTorch checkpoint ({first})") from None


def read_safetensors(path: str | Path, metadata: bool = False):
    """Tensors of a ``.safetensors`` file (and its metadata with ``metadata=True``), one-line errors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001  (SafetensorError is not exported under a stable name)
        raise ValueError(
            f"cannot read {path}: not a safetensors file, or damaged ({str(err).splitlines()[0]}); a torch.save "
            "file must keep its .pth/.pt name"
        ) from None
    return (tensors, meta) if metadata else tensors


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
    """Load a checkpoint of the same video architecture (head dropped if its size differs).

    Released checkpoints of a registered format (TPS, DualFormer: mmaction2 layout, bare backbone or
    ImageNet image weights) are recognised by their keys and converted first. With ``strict`` every
    tensor must find its place: a checkpoint of another family or variant raises one line naming what
    it looks like, and nothing is loaded.
    """
    raw = read_state_dict(source)
    sd, found = convert_state_dict(raw, model)
    sd = _drop_mismatched_head(model, sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith("head.")]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or wrong):
        raise ValueError(_mismatch_message(model, raw, found, missing, unexpected, wrong))
    if found is not None and found.model not in (None, _model_name(model), type(model).__name__):
        log.warning("loaded %s into %s (same tensors, another variant)", found.description, _model_name(model))
    for k in wrong:
        log.info("not loading %s: checkpoint %s vs model %s", k, tuple(sd[k].shape), tuple(own[k].shape))
    model.load_state_dict({k: v for k, v in sd.items() if k not in wrong}, strict=False)


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


# ------------------------------------------------------------------------ weights built for another input
def adapt_state_dict(
    model: VideoModel,
    state_dict: Mapping[str, Tensor],
    still_source: nn.Module | None = None,
    source_input: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """``state_dict``, weights of ``model``'s architecture built for another clip length or crop size, as
    weights of ``model``; with ``still_source``, weights trained on clips of identical frames (an image run).

    * Still frames (``still_source``: the source model, on any device, e.g. ``meta``; ``source_input``:
      its clips' ``(T, H, W)``): every ``Conv3d`` kernel becomes the 2D kernel it applied to the still
      frames, the sum of its temporal slices that met a frame (a slice that only met zero padding never
      learnt), inflated to ``model``'s temporal extent as an ImageNet kernel is: repeated and divided by
      it (I3D). Inside a clip of identical frames every such conv then gives the image's response; at
      the clip's first and last frames its zero padding enters again.
    * A tensor of another shape goes through the family's ``resample_tensor`` (position embeddings over
      frames or the grid, bias tables: what the model computes at run time for another input); a
      classifier of another size is dropped.

    A key ``model`` lacks, or a tensor no rule resamples, is a one-line ``ValueError``.
    """
    own = model.state_dict()
    taps = frames_met_by_kernels(still_source, source_input) if still_source is not None else {}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key not in own:
            raise ValueError(f"checkpoint tensor {key} has no place in {_model_name(model)}; is it of another model?")
        target = own[key]
        if key in taps:  # a still-frame Conv3d kernel: (O, I, kt, kh, kw)
            value = inflate_conv_weight(value[:, :, taps[key]].sum(dim=2), target.shape[2])
        if value.shape == target.shape:
            out[key] = value
        elif key.startswith("head."):
            log.info("dropping classifier %s: %s vs %s", key, tuple(value.shape), tuple(target.shape))
        elif (resampled := model.resample_tensor(key, value, target)) is not None and resampled.shape == target.shape:
            out[key] = resampled
        else:
            raise ValueError(
                f"cannot resample {key} from {tuple(value.shape)} to {_model_name(model)}'s {tuple(target.shape)}; "
                "build the model for the checkpoint's input (num_frames/img_size, or --frames/--size)"
            )
    missing = [k for k in own if k not in out and not k.startswith("head.")]
    if missing:
        raise ValueError(
            f"the checkpoint lacks {len(missing)} tensors {_model_name(model)} has as built for this input (e.g. "
            f"{missing[0]}): the family sizes its layers by the input, and the checkpoint's model had fewer"
        )
    return out


def frames_met_by_kernels(model: nn.Module, input_size: Sequence[int]) -> dict[str, list[int]]:
    """``{"<conv>.weight": slices}``: for every ``Conv3d`` of ``model`` run on clips of ``input_size =
    (T, H, W)``, the temporal kernel slices that multiply a frame at some output position (the others
    only ever meet zero padding). One forward finds each conv's input length: build ``model`` on the
    ``meta`` device and it computes shapes only."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    frames: dict[str, int] = {}

    def record(name: str, module: nn.Module, args: tuple) -> None:
        frames.setdefault(name, args[0].shape[2])  # (B, C, T, H, W): the conv's input frames

    hooks = [m.register_forward_pre_hook(partial(record, name)) for name, m in convs.items()]
    was_training = model.training
    try:
        device = next(model.parameters()).device  # "meta" computes shapes only
        with torch.no_grad():
            model.eval()(torch.zeros(1, getattr(model, "in_chans", 3), *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {f"{name}.weight": _slices_met(conv, frames[name]) for name, conv in convs.items() if name in frames}


def _slices_met(conv: nn.Conv3d, frames: int) -> list[int]:
    k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    if conv.padding_mode != "zeros":  # padded frames repeat real ones
        return list(range(k))
    pad = conv.padding[0] if not isinstance(conv.padding, str) else (0 if conv.padding == "valid" else d * (k - 1) // 2)
    out = (frames + 2 * pad - d * (k - 1) - 1) // s + 1
    return sorted({j for o in range(out) for j in range(k) if 0 <= o * s - pad + j * d < frames})


# ------------------------------------------------------------------------ released checkpoint formats
# Checkpoints published with a paper's code keep that code's names. Each family registers how to
# recognise its release's layout and how to rename (and, for image weights, inflate) it into ours;
# load_checkpoint, create_model(pretrained=...) and `kinetoscope convert` go through here.


@dataclass(frozen=True)
class Recognised:
    """What a state dict looks like, for conversion and for one-line error messages."""

    description: str  # "a released DualFormer-T checkpoint (mmaction2 layout, 32x224 clips)"
    model: str | None  # the registered variant it corresponds to, if any
    layout: str  # "mmaction2", "backbone" (bare), "image" (2D weights to inflate) or "kinetoscope"
    num_classes: int | None  # classifier size the checkpoint carries (None: no classifier)


@dataclass(frozen=True)
class CheckpointFormat:
    """A released layout: ``identify(sd)`` recognises it, ``convert(sd, model)`` returns our names.

    ``model_type`` is the model class the converted weights are for (a checkpoint recognised as this
    format but given to another class is refused with one line).
    """

    name: str
    model_type: type[nn.Module]
    identify: Callable[[Mapping[str, Tensor]], Recognised | None]
    convert: Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]


_FORMATS: list[CheckpointFormat] = []


def register_checkpoint_format(fmt: CheckpointFormat) -> CheckpointFormat:
    if any(f.name == fmt.name for f in _FORMATS):
        raise ValueError(f"checkpoint format {fmt.name!r} is already registered")
    _FORMATS.append(fmt)
    return fmt


def split_mmaction2(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], str]:
    """``(backbone, head, layout)``: an mmaction2 recogniser's ``backbone.*`` / ``cls_head.*`` split
    (prefixes removed, layout ``"mmaction2"``), or the state dict itself as a bare ``"backbone"``."""
    if sd and all(k.startswith(("backbone.", "cls_head.")) for k in sd) and any(k.startswith("backbone.") for k in sd):
        backbone = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
        head = {k[len("cls_head.") :]: v for k, v in sd.items() if k.startswith("cls_head.")}
        return backbone, head, "mmaction2"
    return dict(sd), {}, "backbone"


def mmaction2_head_to_ours(head: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The I3D head's ``fc_cls.*`` as our ``head.*``; anything else of ``cls_head`` (an auxiliary head of
    the released training) is dropped with a log line."""
    out = {}
    for k, v in head.items():
        if k.startswith("fc_cls."):
            out["head." + k[len("fc_cls.") :]] = v
        else:
            log.info("dropping cls_head.%s: an auxiliary head of the released training, not part of the model", k)
    return out


def ours_to_mmaction2(backbone: Mapping[str, Tensor], sd: Mapping[str, Tensor], layout: str) -> dict[str, Tensor]:
    """A released-layout state dict from ``backbone`` (already in the release's names) and the ``head.*``
    of ``sd``: ``layout="mmaction2"`` gives ``backbone.*`` + ``cls_head.fc_cls.*``, ``"backbone"`` the
    bare backbone (no classifier)."""
    if layout not in ("mmaction2", "backbone"):
        raise ValueError(f"layout must be 'mmaction2' or 'backbone', got {layout!r}")
    if layout == "backbone":
        return dict(backbone)
    out = {"backbone." + k: v for k, v in backbone.items()}
    out.update({"cls_head.fc_cls." + k[len("head.") :]: v for k, v in sd.items() if k.startswith("head.")})
    return out


def head_size(head: Mapping[str, Tensor]) -> int | None:
    """Classes of an mmaction2 ``cls_head`` (``None`` without one)."""
    return _rows(head.get("fc_cls.weight"))


def blocks_per_stage(keys: Iterable[str], pattern: str) -> tuple[int, ...]:
    """Blocks per stage of a released backbone, from the keys matching ``pattern`` (whose first two
    groups are the stage and the block index), e.g. ``r"layers\\.(\\d+)\\.blocks\\.(\\d+)\\."``."""
    depth: dict[int, int] = {}
    for k in keys:
        if m := re.match(pattern, k):
            depth[int(m[1])] = max(depth.get(int(m[1]), 0), int(m[2]) + 1)
    return tuple(depth[i] for i in sorted(depth))


def identify_checkpoint(sd: Mapping[str, Tensor]) -> Recognised | None:
    """The registered released format ``sd`` is in, else ``None`` (kinetoscope layouts included only
    through :func:`identify_kinetoscope`, which builds models and is slower)."""
    for fmt in _FORMATS:
        found = fmt.identify(sd)
        if found is not None:
            return found
    return None


def convert_state_dict(sd: Mapping[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], Recognised | None]:
    """``sd`` in our names for ``model``: released formats are converted, anything else is returned as is.

    Raises ``ValueError`` (one line) when ``sd`` is a released checkpoint of another family.
    """
    for fmt in _FORMATS:
        found = fmt.identify(sd)
        if found is None:
            continue
        if not isinstance(model, fmt.model_type):
            raise ValueError(f"checkpoint does not fit {_model_name(model)}: {_looks_like(found)}")
        return fmt.convert(sd, model), found
    return dict(sd), None


def identify_kinetoscope(sd: Mapping[str, Tensor]) -> Recognised | None:
    """The registered variant whose state dict (built on the meta device at its default input) has
    exactly the keys of ``sd``; shapes decide between several, so a checkpoint built for another input
    size is still named."""
    from ._registry import create_model, get_model_config, list_models

    keys = {k for k in sd if not k.startswith("head.")}
    candidates = []
    for name in list_models():
        with torch.device("meta"):
            own = create_model(name, num_classes=0).state_dict()
        if set(own) == keys:
            same = all(own[k].shape == sd[k].shape for k in keys)
            candidates.append((not same, name))
    if not candidates:
        return None
    shapes_differ, name = min(candidates)
    cfg = get_model_config(name)
    size = " built for another input size" if shapes_differ else f" ({cfg.num_frames}x{cfg.img_size} clips)"
    head = sd.get("head.weight")
    return Recognised(f"a kinetoscope {name} checkpoint{size}", name, "kinetoscope", _rows(head))


def _rows(weight: Tensor | None) -> int | None:
    return int(weight.shape[0]) if weight is not None else None


def _model_name(model: nn.Module) -> str:
    return getattr(model, "variant", None) or type(model).__name__


def _looks_like(found: Recognised) -> str:
    hint = f"; pass --model {found.model}" if found.model else ""
    return f"this looks like {found.description}{hint}"


def _mismatch_message(model, raw, found, missing, unexpected, wrong) -> str:
    found = found or identify_kinetoscope(raw)
    name = _model_name(model)
    if found is not None and found.model != name:
        return f"checkpoint does not fit {name}: {_looks_like(found)}"
    parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in ((missing, "missing"), (unexpected, "unexpected"),
                                                               (wrong, "of another shape")) if x]  # fmt: skip
    if found is not None:
        return (
            f"checkpoint does not fit {name} as built: tensors {', '.join(parts)}; it is {found.description}: "
            "build the model for that input (num_frames/img_size, or --frames/--size)"
            + (", or resample it with `kinetoscope convert IN OUT --model NAME --frames F --size S`"
               if found.layout == "kinetoscope" else "")
        )  # fmt: skip
    return (
        f"checkpoint does not fit {name}: tensors {', '.join(parts)}. For a 2D image checkpoint use "
        "kinetoscope.load_pretrained_2d"
    )


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    model_name: str,
    overwrite: bool = False,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> dict:
    """Convert a checkpoint (released or ours) for ``model_name`` into a safetensors file of ours. One of
    ours built for another clip length or crop is resampled (:func:`adapt_state_dict`).

    The output folder is checked before anything is read; an existing ``output`` is kept unless
    ``overwrite``. The result is loaded strictly into the model before it is written (atomically), so a
    written file always loads. Returns the metadata written beside the tensors.
    """
    from ._registry import create_model, get_model_config

    out = check_converted_output(output, overwrite)
    cfg = get_model_config(model_name)
    sd = read_state_dict(source)
    found = identify_checkpoint(sd)
    num_classes = found.num_classes if found is not None else _rows(sd.get("head.weight"))
    frames, size = num_frames or cfg.num_frames, img_size or cfg.img_size
    model = create_model(model_name, num_classes=num_classes or 0, num_frames=frames, img_size=size)
    if found is None and set(sd) <= set(model.state_dict()):  # ours, maybe built for another input: resampled
        sd = adapt_state_dict(model, sd)
    load_checkpoint(model, sd)
    info = {
        "model": model_name,
        "source": found.description if found else "a kinetoscope checkpoint",
        "source_layout": found.layout if found else "kinetoscope",
        "num_classes": num_classes or 0,
        "num_frames": frames,
        "img_size": size,
        "converted_from": Path(source).name,
    }
    return write_converted(out, model, info)


def check_converted_output(output: str | Path, overwrite: bool = False) -> Path:
    """The ``.safetensors`` path a conversion writes, checked before anything is read."""
    out = Path(output)
    if out.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {out}")
    return check_output_file(out, overwrite)


def write_converted(output: Path, model: nn.Module, info: dict) -> dict:
    """``model``'s weights as safetensors with ``info`` (and the tensor count) as the ``kinetoscope``
    metadata entry, written atomically; returns the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    info = dict(info, tensors=len(tensors))
    with atomic_write(output, "wb") as f:
        f.write(save(tensors, metadata={"kinetoscope": json.dumps(info)}))
    return info
