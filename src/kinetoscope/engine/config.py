"""The training configuration: one typed dataclass, layered from defaults, recipes, YAML and flags.

Precedence, lowest first::

    TrainConfig defaults < the model's registered recipe (ModelConfig.recipe) < --config FILE.yaml
        < command-line flags < --set key=value

``kinetoscope train --output RUN --resume`` without ``--config`` takes ``RUN/config.yaml`` as the file
layer. Every value is checked and coerced by its field's type when a :class:`TrainConfig` is built
(``"1e-3"`` becomes ``0.001`` for a float; modes are ``Literal`` choices), and a bad value is a
``ValueError`` naming the field, the value and what it accepts. :func:`resolve` fills in what the
model variant decides (frames, crop size, sampling, test views) and makes data paths absolute; the
result is written as ``config.yaml`` in the run folder and inside every checkpoint, so a run can be
resumed or evaluated from anywhere without its original command line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

AnnotationFormat = Literal[
    "auto", "kinetics", "ssv2", "ssv1", "diving48", "mit", "ucf101", "hmdb51", "list", "folder", "images", "csv"
]


@dataclass
class TrainConfig:
    # model
    model: str = "pst_nano"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # family arguments (ablations, drop_path_rate)
    pretrained_2d: str | None = None  # timm image checkpoint to inflate (load_pretrained_2d)
    pretrained: str | None = None  # video checkpoint of the same architecture
    # data
    train: str | None = None  # annotation file (any format of kinetoscope.data.annotations)
    val: str | None = None
    root: str | None = None  # folder the annotation paths are relative to (default: the file's folder)
    format: AnnotationFormat = "auto"  # "images": image pretraining (detected for a class-per-folder image tree)
    frames: int | None = None  # default: the variant's config
    size: int | None = None
    short_side: int | None = None
    sampling: str | None = None  # e.g. "dense:32x2" / "uniform:16"; default: the variant's config
    views: str | None = None  # test views "CLIPSxCROPS"; default: the variant's config
    backend: Literal["auto", "pyav", "torchcodec"] = "auto"
    workers: int = 2
    # unreadable training videos; validation never substitutes: it excludes them (or raises with "raise")
    on_error: Literal["substitute", "skip", "raise"] = "substitute"
    # augmentation
    spatial: Literal["jitter", "rrc", "multiscale"] = "jitter"
    # spatial="jitter" with short_side unset: the range of the train short side as multiples of the crop
    # size, e.g. [1.0, 1.25]; otherwise (and by default) short_side x [1, 1.25], short_side defaulting to
    # crop x 256/224 in training (Video Swin, MViT)
    train_short_side: list[float] | None = None
    flip: bool = True
    randaugment: list[int] | None = None  # [num_ops, magnitude]
    erasing: float = 0.0
    mixup: float = 0.0  # alpha; 0 = off
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0
    # optimisation
    epochs: int = 30
    batch_size: int = 8  # clips per process and micro-batch; also the clips per forward pass in validation
    accum_steps: int = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3  # for the global batch batch_size * world_size * accum_steps
    backbone_lr_mult: float = 1.0  # backbone lr = lr * mult (0.1 for PST/DualFormer from ImageNet)
    layer_decay: float | None = None  # layer-wise lr decay (timm param_groups_layer_decay, model.group_matcher)
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: list[int] = field(default_factory=list)  # milestones for schedule="step"
    step_gamma: float = 0.1
    clip_grad: float | None = None
    ema_decay: float | None = None
    # execution
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # fp16 on CUDA only
    compile: bool = False
    grad_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False
    output: str = "runs/default"
    resume: bool = False  # continue OUTPUT/last.pth
    overwrite: bool = False  # replace the run in a non-empty OUTPUT
    eval_every: int = 1
    log_every: int = 10
    save_every_minutes: float = 10.0  # last.pth during an epoch as well; 0 = at epoch ends only
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimiser steps

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, getattr(self, f.name)))
        check_consistency(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """The config as YAML, without the flags that steer one invocation (resume, overwrite, max_steps)."""
        from .._files import write_text_atomic

        data = {k: v for k, v in self.to_dict().items() if k not in RUN_CONTROL}
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


RUN_CONTROL = ("resume", "overwrite", "max_steps")  # steer one invocation; not part of the run's config
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# inclusive lower and upper bounds; "open" bounds are written as (value, False)
_BOUNDS: dict[str, tuple] = {
    "frames": (1, None), "size": (1, None), "short_side": (1, None), "workers": (0, None),
    "erasing": (0.0, 1.0), "mixup": (0.0, None), "cutmix": (0.0, None), "mixup_prob": (0.0, 1.0),
    "label_smoothing": (0.0, (1.0, False)), "epochs": (1, None), "batch_size": (1, None), "accum_steps": (1, None),
    "lr": ((0.0, False), None), "backbone_lr_mult": (0.0, None), "layer_decay": ((0.0, False), 1.0),
    "min_lr": (0.0, None), "weight_decay": (0.0, None), "momentum": (0.0, 1.0), "warmup_epochs": (0.0, None),
    "step_gamma": ((0.0, False), None), "clip_grad": ((0.0, False), None), "ema_decay": ((0.0, False), (1.0, False)),
    "eval_every": (1, None), "log_every": (1, None), "save_every_minutes": (0.0, None), "max_steps": (1, None),
}  # fmt: skip


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def coerce(name: str, value: Any) -> Any:
    """``value`` converted to field ``name``'s type and checked against its bounds, else a ValueError
    that names the field, the value and what the field accepts."""
    if name not in _FIELDS:
        raise ValueError(f"unknown config key {name!r}; valid keys: {', '.join(_FIELDS)}")
    try:
        out = _coerce(_hints()[name], value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config {name}: {err}") from None
    _check_bounds(name, out)
    return out


def _coerce(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else "; or ".join(errors))
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, args))}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        return [_coerce(args[0], v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping such as {{key: value}}, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, int | float):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())  # YAML reads 1e-3 (no decimal point) as a string
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        else:
            raise ValueError(f"expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ValueError(f"expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if tp is Any:
        return value
    raise TypeError(f"no coercion for {tp}")  # pragma: no cover - a field of a new type


def _check_bounds(name: str, value: Any) -> None:
    if name not in _BOUNDS or value is None:
        return
    lo, hi = _BOUNDS[name]
    values = value if isinstance(value, list) else [value]
    for v in values:
        for bound, is_low in ((lo, True), (hi, False)):
            if bound is None:
                continue
            b, inclusive = bound if isinstance(bound, tuple) else (bound, True)
            bad = (v < b or (v == b and not inclusive)) if is_low else (v > b or (v == b and not inclusive))
            if bad:
                rel = (">=" if inclusive else ">") if is_low else ("<=" if inclusive else "<")
                raise ValueError(f"config {name}: must be {rel} {b}, got {value!r}")


def check_consistency(cfg: TrainConfig) -> None:
    """Rules between fields (single-field rules live in the types and ``_BOUNDS``)."""
    if cfg.randaugment is not None and len(cfg.randaugment) != 2:
        raise ValueError(f"config randaugment: expected [num_ops, magnitude], got {cfg.randaugment!r}")
    if cfg.train_short_side is not None:
        lo_hi = cfg.train_short_side
        if len(lo_hi) != 2 or not 1.0 <= lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"config train_short_side: expected [low, high] multiples of the crop size with "
                             f"1 <= low <= high, got {lo_hi!r}")  # fmt: skip
    if cfg.layer_decay is not None and cfg.backbone_lr_mult != 1.0:
        raise ValueError("config: layer_decay and backbone_lr_mult both scale the backbone's learning rate; set one")
    if cfg.mixup > 0 or cfg.cutmix > 0:
        if cfg.batch_size % 2:
            raise ValueError(f"config batch_size: mixup/cutmix mix a batch with itself reversed: use an even "
                             f"batch_size, got {cfg.batch_size}")  # fmt: skip
        if cfg.on_error == "skip":
            raise ValueError("config on_error: 'skip' makes batches of any size, which mixup/cutmix cannot mix; "
                             "use 'substitute'")  # fmt: skip
    if cfg.sampling is not None or cfg.views is not None:
        from ..data.sampling import parse_protocol, parse_views

        for name, parse in (("sampling", parse_protocol), ("views", parse_views)):
            try:
                if getattr(cfg, name) is not None:
                    parse(getattr(cfg, name))
            except ValueError as err:
                raise ValueError(f"config {name}: {err}") from None


# ------------------------------------------------------------------------------------------- layering
def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "model_kwargs={drop_path_rate: 0.2}"]`` -> values parsed as YAML scalars/mappings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {item}: not a YAML value ({_yaml_problem(err)})") from None
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of config keys; malformed YAML is one line naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file; a recipe is a flat YAML mapping of config keys") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ValueError(f"{where}: malformed YAML ({_yaml_problem(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a recipe is a flat YAML mapping of config keys, got a {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    return str(getattr(err, "problem", None) or err).splitlines()[0]


def _check_layer(values: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{source}: unknown config keys {unknown}; valid keys: {', '.join(_FIELDS)}")
    out = {}
    for k, v in values.items():
        try:
            out[k] = coerce(k, v)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return out


def model_recipe(model: str) -> dict[str, Any]:
    """The training settings a model variant registers (``ModelConfig.recipe``), checked like a YAML layer."""
    from ..models import get_model_config

    recipe = dict(getattr(get_model_config(model), "recipe", None) or {})
    return _check_layer(recipe, f"the registered recipe of {model}")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Layer defaults < the model's recipe < ``path`` < ``overrides`` (flags, then ``--set``) into a config.

    With ``resume`` set and no ``path``, the run's own ``OUTPUT/config.yaml`` is the file layer.
    """
    overrides = _check_layer(dict(overrides or {}), "overrides")
    source = path
    if source is None and overrides.get("resume"):
        own = Path(overrides.get("output", TrainConfig.output)) / "config.yaml"
        source = own if own.is_file() else None
    file_layer = _check_layer(read_yaml(source), str(source)) if source is not None else {}
    model = overrides.get("model", file_layer.get("model", TrainConfig.model))
    layers = {**model_recipe(model), **file_layer, **overrides}
    try:
        return TrainConfig(**layers)
    except ValueError as err:
        raise ValueError(f"{source or 'config'}: {err}") from None


# ---------------------------------------------------------------------------------------- resolution
def with_frames(sampling: str, frames: int) -> str:
    """Keep the protocol's kind and stride, but read ``frames`` frames (``--frames`` overrides)."""
    kind, _, spec = sampling.partition(":")
    stride = spec.split("x")[1] if "x" in spec else None
    return f"{kind}:{frames}x{stride}" if stride else f"{kind}:{frames}"


def resolve_inputs(cfg: TrainConfig) -> dict:
    """Frames, crop, sampling, views, mean/std: the config's value, else the model variant's default.

    An image run (:func:`is_image_run`) shows each image as a clip of identical frames: by default the
    model's ``frames_per_image`` (its stem's temporal stride), sampling ``dense:FRAMESx1`` of the
    one-frame "video", views ``1x1`` (``1x3`` for three crops; an image has one temporal view).
    """
    from ..models import get_model_config

    mcfg = get_model_config(cfg.model)
    images = is_image_run(cfg)
    frames = cfg.frames if cfg.frames is not None else (frames_per_image(cfg) if images else mcfg.num_frames)
    inputs = {
        "frames": frames,
        "size": cfg.size if cfg.size is not None else mcfg.img_size,
        "sampling": with_frames(cfg.sampling or mcfg.sampling, frames),
        "views": cfg.views or mcfg.test_views,
        "mean": tuple(mcfg.mean),
        "std": tuple(mcfg.std),
        "images": images,
    }
    if images:
        inputs.update(sampling=f"dense:{frames}x1", views=cfg.views or "1x1")
        _check_image_inputs(cfg, inputs)
    return inputs


def is_image_run(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains on still images: ``format: images``, or ``auto`` with a training (else
    validation) folder whose class folders hold images (torchvision's ``ImageFolder`` layout)."""
    if cfg.format != "auto":
        return cfg.format == "images"
    data = cfg.train or cfg.val
    if data is None or not Path(data).is_dir():
        return False
    from ..data import detect_format

    return detect_format(data) == "images"


def frames_per_image(cfg: TrainConfig) -> int:
    """The identical frames that show one image to ``cfg.model`` (its stem's temporal stride)."""
    import torch

    from ..models import create_model

    with torch.device("meta"):
        return create_model(cfg.model, num_classes=2, **cfg.model_kwargs).frames_per_image


def _check_image_inputs(cfg: TrainConfig, inputs: dict) -> None:
    if cfg.sampling is not None and cfg.sampling != inputs["sampling"]:
        raise ValueError(f"config sampling: an image run reads each image as {inputs['frames']} identical frames "
                         f"({inputs['sampling']}); leave sampling unset, got {cfg.sampling!r}")  # fmt: skip
    from ..data.sampling import parse_views

    if parse_views(inputs["views"])[0] != 1:
        raise ValueError(f"config views: an image has one temporal view; use 1x1 or 1x3, got {inputs['views']!r}")


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what the variant decides filled in and data paths absolute, as a run records it."""
    inputs = resolve_inputs(cfg)
    if inputs["images"] and cfg.frames is not None and cfg.frames % (step := frames_per_image(cfg)):
        raise ValueError(f"config frames: {cfg.model} shows an image as {step} identical frames (its stem's temporal "
                         f"stride); use --frames {step} (or a multiple), got {cfg.frames}")  # fmt: skip
    return dataclasses.replace(
        cfg,
        format="images" if inputs["images"] else cfg.format,
        frames=inputs["frames"],
        size=inputs["size"],
        sampling=inputs["sampling"],
        views=inputs["views"],
        train=_absolute(cfg.train),
        val=_absolute(cfg.val),
        root=_absolute(cfg.root),
        pretrained=_absolute(cfg.pretrained),
        pretrained_2d=_absolute(cfg.pretrained_2d),
    )


def from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """A config saved by a run (``config.yaml`` or a checkpoint's ``config``); keys of other versions of
    kinetoscope that this one does not know are ignored."""
    known = {k: v for k, v in data.items() if k in _FIELDS}
    try:
        return TrainConfig(**known)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def check_model_arguments(cfg: TrainConfig) -> None:
    """The model is registered and ``model_kwargs`` are arguments of its class, checked before any data
    is read or any weight is built (one line instead of a traceback from deep inside a constructor)."""
    import inspect

    import torch

    from ..models import create_model

    with torch.device("meta"):
        cls = type(create_model(cfg.model, num_classes=2))
    reserved = {"num_classes", "num_frames", "img_size"}
    clash = sorted(set(cfg.model_kwargs) & reserved)
    if clash:
        raise ValueError(f"config model_kwargs: {clash} are set by frames/size/the classes, not model_kwargs")
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(set(params) - reserved - {"self"})
    unknown = sorted(set(cfg.model_kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"config model_kwargs: {', '.join(map(repr, unknown))} not an argument of {cls.__name__} "
            f"({cfg.model}); valid: {', '.join(valid)}"
        )
