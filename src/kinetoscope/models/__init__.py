"""Model families. Importing this package registers every variant."""

# Families register their variants on import (one line each, added as they land).
from . import (
    cstransformer,  # noqa: F401
    dualformer,  # noqa: F401
    pst,  # noqa: F401
    sct,  # noqa: F401
    stat,  # noqa: F401
)
from ._base import VideoModel
from ._config import ModelConfig, PaperReference, ReleasedWeights
from ._registry import Variant, create_model, get_model_config, list_models, register_model, register_variants
from ._weights import (
    adapt_state_dict,
    convert_checkpoint,
    identify_checkpoint,
    load_checkpoint,
    load_pretrained_2d,
    read_state_dict,
)

__all__ = [
    "ModelConfig",
    "PaperReference",
    "ReleasedWeights",
    "Variant",
    "VideoModel",
    "adapt_state_dict",
    "convert_checkpoint",
    "create_model",
    "get_model_config",
    "identify_checkpoint",
    "list_models",
    "load_checkpoint",
    "load_pretrained_2d",
    "read_state_dict",
    "register_model",
    "register_variants",
]
