"""The pre-norm transformer layer, around any attention module."""

from __future__ import annotations

from torch import Tensor, nn

from .drop import DropPath
from .mlp import Mlp


class PreNormBlock(nn.Module):
    """``x + DropPath(attn(LN(x), *attn_args))``, then ``x + DropPath(MLP(LN(x)))``.

    ``attn`` maps a normalised ``(..., C)`` tensor to the same shape: window, pyramid, LSH or shifted
    attention alike. Parameter names (``norm1``, ``attn``, ``norm2``, ``mlp``) are timm's.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, *attn_args) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), *attn_args))
        return x + self.drop_path(self.mlp(self.norm2(x)))
