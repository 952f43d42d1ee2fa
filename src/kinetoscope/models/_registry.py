"""The model registry: ``register_model`` (raises on duplicate names), ``register_variants`` (a family's
variant table), ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ._config import ModelConfig

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CONFIGS: dict[str, ModelConfig] = {}


def register_model(cfg: ModelConfig) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register_model(ModelConfig(name=..., ...))`` over a builder ``fn(**kwargs) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if cfg.name in _MODELS:
            raise ValueError(f"model {cfg.name!r} is already registered")
        _MODELS[cfg.name] = fn
        _CONFIGS[cfg.name] = cfg
        return fn

    return wrap


@dataclass(frozen=True)
class Variant:
    """One row of a family's variant table: the registered config (name, input, the paper's numbers) and
    the constructor arguments of the family's model class (dims, depths, heads, ...)."""

    config: ModelConfig
    args: Mapping[str, Any] = field(default_factory=dict)


def register_variants(model_cls: Callable[..., nn.Module], variants: Iterable[Variant]) -> None:
    """Register every row of a variant table: ``create_model(name, **kwargs)`` builds
    ``model_cls(**row.args, **kwargs)`` (the caller's arguments win)."""
    for row in variants:
        register_model(row.config)(functools.partial(model_cls, **row.args))


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str) -> ModelConfig:
    _check_name(name)
    return _CONFIGS[name]


def _check_name(name: str) -> None:
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name.split('_')[0]}*")
        hint = f"; similar: {', '.join(sorted(close)[:8])}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}. `kinetoscope models` lists all of them")


def _check_count(name: str, value: Any, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}")


def create_model(
    name: str,
    pretrained: str | None = None,
    num_classes: int = 400,
    num_frames: int | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered video model.

    Args:
        name: a name from ``list_models()``.
        pretrained: path to a checkpoint (``.pth``/``.pt``/``.safetensors``) of this video model, loaded
            with ``weights_only=True``. 2D image checkpoints go through ``load_pretrained_2d``.
        num_classes: classifier size; 0 makes the model return pooled features.
        num_frames, img_size: input the model is built for (defaults: the variant's config).
        kwargs: the family's constructor arguments (ablation switches, drop_path_rate, ...).
    """
    _check_name(name)
    _check_count("num_classes", num_classes, 0, " (0 returns pooled features)")
    if num_frames is not None:
        _check_count("num_frames", num_frames, 1)
    if img_size is not None:
        _check_count("img_size", img_size, 1)
    cfg = _CONFIGS[name]
    model = _MODELS[name](
        num_classes=num_classes,
        num_frames=num_frames or cfg.num_frames,
        img_size=img_size or cfg.img_size,
        **kwargs,
    )
    model.variant = name
    if pretrained:
        from ._weights import load_checkpoint

        load_checkpoint(model, pretrained)
    return model
