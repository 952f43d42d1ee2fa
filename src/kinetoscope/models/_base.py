"""What every video model answers, written once.

Families subclass :class:`VideoModel` and implement ``forward_features`` (clip -> pooled or token
features) and ``forward_head``; this class supplies the rest of the common interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Parameters that take no weight decay: embeddings, tokens and bias tables (norms and biases are
# excluded by the optimiser through their dimensionality).
NO_WEIGHT_DECAY_KEYWORDS = (
    "pos_embed",
    "cls_token",
    "relative_position_bias_table",
    "token",
    "time_embed",
    "alpha",
    "beta",
)


class VideoModel(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``num_classes``, ``num_features`` (width of the pooled features) and ``head``.
    """

    num_classes: int
    num_features: int
    head: nn.Module
    in_chans: int = 3

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier; ``num_classes=0`` makes ``forward`` return pooled features."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=device)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that should take no weight decay (embeddings, tokens, bias tables)."""
        return {name for name, _ in self.named_parameters() if any(k in name for k in NO_WEIGHT_DECAY_KEYWORDS)}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (activation checkpointing)."""
        self.grad_checkpointing = enable

    def checkpointed(self, fn: Callable[..., Tensor], *args, **kwargs):
        """Call ``fn`` under activation checkpointing when it is switched on and gradients flow."""
        if self.grad_checkpointing and torch.is_grad_enabled() and self.training:
            return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return fn(*args, **kwargs)

    def run_blocks(self, blocks: Iterable[nn.Module], x: Tensor, *args) -> Tensor:
        for blk in blocks:
            x = self.checkpointed(blk, x, *args)
        return x


def init_weights_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """timm/Swin init: Linear trunc-normal(std), zero bias; LayerNorm (1, 0). Convs keep PyTorch's."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
