"""Training, evaluation and prediction. Imports models and data; neither imports this package."""

from .config import TrainConfig, load_config, parse_set
from .evaluate import compute_metrics, evaluate, load_trained
from .train import train

__all__ = ["TrainConfig", "compute_metrics", "evaluate", "load_config", "load_trained", "parse_set", "train"]
