"""Checkpoints written atomically and read as data only; exports; a trained model back from either.

A training checkpoint holds everything a resumed run needs to continue exactly: model, optimiser,
grad scaler and EMA states, epoch and step (the data order is a function of seed and epoch, and the
position inside the epoch is the step), the RNG states of every process, the resolved config and the
class names. All of it is tensors and plain Python containers, so ``torch.load(weights_only=True)``
reads it back. An export is the weights alone (EMA weights when the run kept them) as
``.safetensors``, with the metadata :func:`export_metadata` defines: the one place its format lives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .._files import atomic_write, check_output_file
from ..models._weights import read_safetensors, read_state_dict, torch_load
from .config import TrainConfig, from_dict, resolve_inputs

EXPORT_KEY = "kinetoscope"  # the safetensors metadata entry
EXPORT_FORMAT = 1


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``: a run killed
    while writing leaves the previous checkpoint intact."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load(path: str | Path) -> dict:
    """A training checkpoint, read with ``weights_only=True``; anything else is a one-line error."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a kinetoscope training checkpoint (no 'model' entry)")
    return ckpt


# ------------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global state is what libraries use)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# ------------------------------------------------------------------------------------ weights + meta
def export_metadata(config: dict, classes: list[str], weights: str) -> dict[str, str]:
    """The safetensors metadata of an export (the only definition of its format)."""
    info = {"format": EXPORT_FORMAT, "model": config.get("model"), "config": config, "classes": list(classes),
            "weights": weights}  # fmt: skip
    return {EXPORT_KEY: json.dumps(info)}


def load_model_weights(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from a training checkpoint or an export; ``meta`` has ``config``,
    ``classes`` and ``weights`` (``"ema"`` when the EMA weights were taken, as they are when present)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, raw = read_safetensors(path, metadata=True)
        try:
            info = json.loads(raw.get(EXPORT_KEY, "{}"))
        except json.JSONDecodeError:
            raise ValueError(f"{path}: its '{EXPORT_KEY}' metadata is not JSON; re-export the checkpoint") from None
        return read_state_dict(tensors), {k: info.get(k) for k in ("config", "classes", "weights")}
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "classes" not in ckpt:
        raise ValueError(
            f"{path}: a plain state_dict, without the model name, config and classes this needs; use a "
            "checkpoint written by `kinetoscope train` (last.pth/best.pth) or `kinetoscope export`"
        )
    use_ema = ckpt.get("ema") is not None
    weights = read_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return weights, {"config": ckpt["config"], "classes": ckpt["classes"], "weights": "ema" if use_ema else "model"}


def model_from_config(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model a run's config describes, with fresh weights."""
    from ..models import create_model

    inputs = resolve_inputs(cfg)
    try:
        return create_model(
            cfg.model, num_classes=num_classes, num_frames=inputs["frames"], img_size=inputs["size"],
            **cfg.model_kwargs,
        )  # fmt: skip
    except TypeError as err:  # an argument the constructor does not take
        raise ValueError(f"model_kwargs of {cfg.model}: {err}") from None


class Trained(NamedTuple):
    model: nn.Module
    classes: list[str]
    config: TrainConfig
    weights: str  # "ema" or "model"


def load_trained(checkpoint: str | Path, device: str | torch.device = "cpu") -> Trained:
    """``(model, classes, config, weights)`` from a training checkpoint or an export, in eval mode on
    ``device``. A checkpoint with EMA weights gives the EMA model (what the run validated and chose
    ``best.pth`` on), and ``weights`` says ``"ema"``."""
    weights, meta = load_model_weights(checkpoint)
    config, classes = meta.get("config"), meta.get("classes")
    if not config or not config.get("model") or not classes:
        raise ValueError(f"{checkpoint}: no model name or class list inside; was it written by kinetoscope?")
    cfg = from_dict(config, str(checkpoint))
    model = model_from_config(cfg, len(classes))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(
            f"{checkpoint}: its weights do not fit {cfg.model} as its config describes ({first})"
        ) from None
    return Trained(model.to(device).eval(), list(classes), cfg, meta.get("weights") or "model")


def export(checkpoint: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write a checkpoint's weights (EMA when present) as ``.safetensors`` with its config and classes.

    Never writes over ``checkpoint`` itself, and over another existing file only with ``overwrite``.
    """
    src = Path(checkpoint)
    out = Path(output) if output is not None else src.with_suffix(".safetensors")
    if out.resolve() == src.resolve():
        raise ValueError(f"export would write over its input {src}; choose another --output")
    check_output_file(out, overwrite, "export output")
    weights, meta = load_model_weights(src)
    if not meta.get("config") or not meta.get("classes"):
        raise ValueError(f"{src}: no config or class list inside; was it written by kinetoscope?")
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in weights.items()},
                metadata=export_metadata(meta["config"], meta["classes"], meta.get("weights") or "model"))  # fmt: skip
    with atomic_write(out, "wb") as f:
        f.write(data)
    return out
