"""Checkpoints that are written atomically and load without unpickling code.

A training checkpoint holds everything a resumed run needs to continue exactly: model, optimiser,
grad scaler and EMA states, epoch and step (the data order is a function of seed and epoch, and the
position inside the epoch is the step), the RNG states, the resolved config and the class names. All
of it is tensors and plain Python containers, so ``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models._weights import read_state_dict


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``: a run killed
    while writing leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; a pickled object that is not data is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and the errors weights_only raises for foreign globals
        if "weights_only" in str(err) or "Unpickl" in type(err).__name__:
            raise ValueError(
                f"refusing to load {path}: it contains pickled objects that are not tensors or plain data "
                f"(kinetoscope loads checkpoints with weights_only=True). Detail: {str(err).splitlines()[0]}"
            ) from err
        raise


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


def load_model_weights(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from a training checkpoint or an exported ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        info = json.loads(meta.get("kinetoscope", "{}"))
        return read_state_dict(path), info
    ckpt = load(path)
    meta = {k: ckpt[k] for k in ("config", "classes", "epoch", "step", "best_top1") if k in ckpt}
    weights = ckpt.get("ema") or ckpt["model"]
    return read_state_dict(weights), meta
