"""The pre-norm transformer layer, around any attention module."""

from __future__ import annotations

from torch import Tensor, nn

from .drop import DropPath
from .mlp import Mlp


class PreNormBlock(nn.Module):
    """The pre-norm transformer layer (timm's ``Block``), with the attention passed in::

        x = shortcut(x) + DropPath(attn(norm1(x), *args))
        y = norm2(x);  x = skip + DropPath(mlp(y)),  skip = x, or proj(y) when the MLP changes the width

    Window, pyramid, LSH, shifted, cross-stage and shrinking attention all fit: the block's extra
    ``forward`` arguments (window geometry, frame count, ...) go to ``attn`` and ``shortcut``.

    Args:
        dim: token width.
        attn: maps the normalised tokens to tokens of the same layout. An attention that returns a tuple
            ``(out, *extras)`` hands its extras on: the block then returns ``(x, *extras)``
            (CSTransformer passes its pre-softmax logits to the next block this way).
        mlp_ratio: MLP hidden width over ``dim``; ``0`` leaves the MLP sub-layer out (no ``norm2``,
            no ``mlp``: an attention-only layer).
        out_dim: MLP output width (default ``dim``). Another width puts a linear ``proj`` of the
            normalised tokens on the MLP's skip path (MViT's stage transition).
        mlp_layer, act_layer, norm_layer: the MLP class (timm's ``Mlp`` signature), its activation,
            and the norm (e.g. ``partial(nn.LayerNorm, eps=1e-6)``).
        proj_drop: dropout inside the MLP (after its activation and its output).
        drop_path: stochastic depth of both residual branches.
        shortcut: a module called as ``shortcut(x, *args)`` on the attention's skip path, for attention
            that changes the token count (STAT's pooled queries); ``None`` is the identity.

    Parameter names (``norm1``, ``attn``, ``norm2``, ``mlp``) are timm's.
    """

    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        *,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
        mlp_layer: type[nn.Module] = Mlp,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        shortcut: nn.Module | None = None,
    ) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.shortcut = shortcut
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = self.mlp = self.proj = None
        if mlp_ratio > 0:
            self.norm2 = norm_layer(dim)
            self.mlp = mlp_layer(
                in_features=dim, hidden_features=int(dim * mlp_ratio), out_features=out_dim, act_layer=act_layer,
                drop=proj_drop,
            )  # fmt: skip
            self.proj = nn.Linear(dim, out_dim) if out_dim != dim else None
        elif out_dim != dim:
            raise ValueError(f"a block without an MLP keeps its width; got dim {dim} and out_dim {out_dim}")

    def forward(self, x: Tensor, *args) -> Tensor | tuple[Tensor, ...]:
        y = self.attn(self.norm1(x), *args)
        y, extras = (y[0], y[1:]) if isinstance(y, tuple) else (y, ())
        x = (x if self.shortcut is None else self.shortcut(x, *args)) + self.drop_path(y)
        if self.mlp is not None:
            y = self.norm2(x)
            x = (x if self.proj is None else self.proj(y)) + self.drop_path(self.mlp(y))
        return (x, *extras) if extras else x
