"""The training configuration: one typed dataclass, a flat YAML overlay, and ``key=value`` overrides.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags < ``--set key=value``.
The resolved configuration is written as ``config.yaml`` in the output folder and inside every
checkpoint, so a run can be resumed or evaluated without the original command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


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
    format: str = "auto"
    frames: int | None = None  # default: the variant's config
    size: int | None = None
    short_side: int | None = None
    sampling: str | None = None  # e.g. "dense:32x2" / "uniform:16"; default: the variant's config
    views: str | None = None  # test views "CLIPSxCROPS"; default: the variant's config
    backend: str = "auto"
    workers: int = 2
    on_error: str = "substitute"
    # augmentation
    spatial: str = "jitter"  # jitter | rrc | multiscale
    flip: bool = True
    randaugment: list[int] | None = None  # [num_ops, magnitude]
    erasing: float = 0.0
    mixup: float = 0.0  # alpha; 0 = off
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0
    # optimisation
    epochs: int = 30
    batch_size: int = 8  # per process
    accum_steps: int = 1
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # for the global batch batch_size * world_size * accum_steps
    backbone_lr_mult: float = 1.0  # backbone lr = lr * mult (0.1 for PST/DualFormer from ImageNet)
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 0.0
    step_epochs: list[int] = field(default_factory=list)  # milestones for schedule="step"
    step_gamma: float = 0.1
    clip_grad: float | None = None
    ema_decay: float | None = None
    # execution
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (fp16 on CUDA only)
    compile: bool = False
    grad_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False
    output: str = "runs/default"
    resume: bool = False
    eval_every: int = 1
    log_every: int = 10
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimiser steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    """Set fields from a mapping; unknown keys are an error that names them and the valid ones."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{source}: unknown config keys {unknown}; valid keys: {', '.join(sorted(_FIELDS))}")
    return dataclasses.replace(cfg, **values)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "model_kwargs={drop_path_rate: 0.2}"]`` -> values parsed as YAML scalars/mappings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    cfg = TrainConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: a recipe is a flat YAML mapping of config keys")
        cfg = apply_overrides(cfg, data, str(p))
    if overrides:
        cfg = apply_overrides(cfg, overrides, "overrides")
    return cfg
