"""Training, evaluation, prediction and export. Imports models and data; neither imports this package."""

from .checkpoint import export, load_trained
from .config import TrainConfig, load_config, parse_set
from .evaluate import compute_metrics, evaluate, evaluate_checkpoint
from .predict import predict
from .train import train

__all__ = [
    "TrainConfig",
    "compute_metrics",
    "evaluate",
    "evaluate_checkpoint",
    "export",
    "load_config",
    "load_trained",
    "parse_set",
    "predict",
    "train",
]
