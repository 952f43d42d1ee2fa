"""kinetoscope: efficient video transformers for action recognition.

The public names are loaded on first use (PEP 562), so ``import kinetoscope.cli`` and
``kinetoscope --help`` do not pay for importing torch and every model family.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "create_model": "kinetoscope.models",
    "get_model_config": "kinetoscope.models",
    "list_models": "kinetoscope.models",
    "load_pretrained_2d": "kinetoscope.models",
    "add_temporal_patch_shift": "kinetoscope.models.pst",
    "profile": "kinetoscope.profiling",
}

__all__ = [
    "__version__",
    "add_temporal_patch_shift",
    "create_model",
    "get_model_config",
    "list_models",
    "load_pretrained_2d",
    "profile",
]

if TYPE_CHECKING:
    from .models import create_model, get_model_config, list_models, load_pretrained_2d
    from .models.pst import add_temporal_patch_shift
    from .profiling import profile


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kinetoscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
