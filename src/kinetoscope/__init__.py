"""kinetoscope: efficient video transformers for action recognition."""

from .models import create_model, get_model_config, list_models, load_pretrained_2d
from .models.pst import add_temporal_patch_shift
from .profiling import profile

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "add_temporal_patch_shift",
    "create_model",
    "get_model_config",
    "list_models",
    "load_pretrained_2d",
    "profile",
]
