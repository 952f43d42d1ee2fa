"""Feed-forward blocks. timm's ``Mlp`` is the well-kept implementation (fc1 -> act -> drop -> fc2), and
its parameter names are the ones 2D checkpoints use, so we re-export it rather than write it again."""

from timm.layers import Mlp

__all__ = ["Mlp"]
