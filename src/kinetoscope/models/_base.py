"""What every video model answers, written once.

The contract (the tests run it over ``list_models()``), for clips ``x`` of shape ``(B, C, T, H, W)``:

``forward(x) = forward_head(forward_features(x))``

``forward_features(x)``
    The backbone's last token map, not pooled, in one layout per family:

    ==============  ==============================  =============================================
    family          layout                          what it is
    ==============  ==============================  =============================================
    PST (Swin)      ``(B, T', H', W', C)``          last stage, after the final LayerNorm
    DualFormer      ``(B, T', H', W', C)``          last stage, after the final LayerNorm
    DeiT-TPS        ``(B, T, 1 + P, C)``            every frame's class token and patches, after
                                                    the final LayerNorm
    CSTransformer   ``(B, T, 1 + P, C)``            FAM's ``Y`` (Eq. 9) at every token, after the
                                                    head's LayerNorm
    STAT            ``(B, n_t, 1 + h w, C)``        the last STA block (class token first; no class
                                                    token with ``global_embed="avgpool"``)
    SCT             ``(B, T, 1 + h w, C)``          the frame encoder's last block ([CLS] first)
    ==============  ==============================  =============================================

    ``T'`` and ``n_t`` are token frames (after a temporal patch or stride). STAT and SCT end in a
    transformer over the frames' class tokens (temporal aggregation, clip encoder) whose LayerNorm
    comes after it: that aggregation is their pooling, so it belongs to ``forward_head`` (as timm's
    attention-pooling heads do) and their features carry no final norm.

``forward_head(x, pre_logits=False)``
    Pools (``pool``: average, class tokens, first moments (:func:`moment_pool`), or the aggregation
    above), then dropout and the linear classifier; ``pre_logits=True`` returns the pooled
    ``(B, num_features)``. :meth:`init_head` builds the classifier for every family.

``forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only)``
    timm's signature: the token grids after each stage (PST, DualFormer, STAT, SCT) or each block
    (DeiT-TPS, CSTransformer) as ``(B, C, T, H, W)`` (``output_fmt="NTHWC"``: channels last), class
    tokens left out. Each grid lies on the path to the features, so its gradient can be taken
    (Grad-CAM). Where the head reads class tokens (DeiT-TPS, STAT, SCT; not ``sct_nano``, whose clip
    encoder reads its tokens' mean too) the last block's patch tokens no
    longer reach the logits (their gradient is 0): Grad-CAM uses the grid before it, ``grids[-2]``, the
    input of the last block (as pytorch-grad-cam uses a ViT's last ``norm1``). In CSTransformer the
    temporal blocks keep the token positions apart, so with ``global_pool="cls"`` the last grid that
    reaches its class tokens is the input of the last spatial block, ``grids[spatial_depth - 2]``; with
    ``"cls_moments"`` (``cst_nano``) the head reads the patch tokens too and every grid reaches it.

``group_matcher(coarse=False)``
    timm's layer grouping (stem, then blocks in order), so ``timm.optim.param_groups_layer_decay``
    gives layer-wise learning-rate decay.

``no_weight_decay()``
    Explicit parameter names: every module declares its own in ``no_weight_decay_names``.

``convert_2d_state_dict`` / ``resize_2d_tensor``
    The hooks ``load_pretrained_2d`` calls to map and resize a 2D image checkpoint.

``frames_per_image`` / ``resample_tensor``
    How many identical frames show one still image (image pretraining), and how a tensor built for
    another clip length or crop is resampled (``kinetoscope.models.adapt_state_dict``).

Also ``reset_classifier``, ``get_classifier`` and ``set_grad_checkpointing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

OutputFormat = Literal["NCTHW", "NTHWC"]


def moment_pool(x: Tensor) -> Tensor:
    """``(B, T, H, W, C)`` -> ``(B, 3 C)``: the average of the features, and their averages weighted by
    the column and the row coordinate of their cell (cell centres, from -1 on the left/top to 1 on the
    right/bottom).

    Average pooling forgets where a feature was, so a linear head on it reads only sums of local
    evidence. A motion field's divergence (things leaving or approaching the centre of the frame) and
    its curl (turning about it) are first moments, ``sum(x v_x + y v_y)`` and ``sum(x v_y - y v_x)``
    over the positions: with features that encode the local velocity ``v``, a linear head reads both
    from these ``3 C`` numbers, and cannot from the average alone (where a clockwise and a
    counter-clockwise turn about the centre both average to no motion). No paper uses it; the nanos
    do (docs/benchmarks/temporal_truth.md has the evidence).
    """
    _, _, H, W, _ = x.shape
    rows = (torch.arange(H, device=x.device, dtype=x.dtype) + 0.5) * (2 / H) - 1  # (H,)
    cols = (torch.arange(W, device=x.device, dtype=x.dtype) + 0.5) * (2 / W) - 1  # (W,)
    grid = x.mean(dim=1)  # (B, H, W, C)
    by_col = (grid * cols[:, None]).mean(dim=(1, 2))
    by_row = (grid * rows[:, None, None]).mean(dim=(1, 2))
    return torch.cat([grid.mean(dim=(1, 2)), by_col, by_row], dim=-1)


# how many times the features' width the pooled vector is, per ``global_pool`` (1 where not listed)
POOLED_WIDTH = {"moments": 3, "cls_moments": 4}


def check_grid_pool(kind: str) -> str:
    """The pooling of a family whose features are a ``(B, T, H, W, C)`` grid: ``"avg"`` or ``"moments"``."""
    if kind not in ("avg", "moments"):
        raise ValueError(f"global_pool must be 'avg' or 'moments', got {kind!r}")
    return kind


class FeatureTaps:
    """The stage grids ``forward_intermediates`` asked ``forward_stages`` for, and where it may stop."""

    def __init__(self, take: Iterable[int], stop: int | None = None, channels_first: bool = True) -> None:
        self.take, self.stop, self.channels_first = set(take), stop, channels_first
        self.grids: dict[int, Tensor] = {}

    def keep(self, index: int, tokens: Tensor, layout: str | None, prefix: int, axes: dict) -> Tensor | None:
        """Record stage ``index``'s grid when asked for, and return the tokens to go on with (``None``: stop).

        The run goes on from the recorded grid (rebuilt into tokens, a copy only where class tokens are
        put back), so a grid lies on the path to the features and ``torch.autograd.grad(score, grid)``
        works (Grad-CAM).
        """
        if index not in self.take:
            return tokens
        patches = tokens[..., prefix:, :]  # prefix tokens sit before the patches on the token axis
        grid = rearrange(patches, f"{layout} -> b t h w c", **axes) if layout else patches  # (B, T, H, W, C)
        self.grids[index] = grid.permute(0, 4, 1, 2, 3) if self.channels_first else grid
        if index == self.stop:
            return None
        grid = self.grids[index].permute(0, 2, 3, 4, 1) if self.channels_first else self.grids[index]
        patches = rearrange(grid, f"b t h w c -> {layout}", **axes) if layout else grid
        return torch.cat([tokens[..., :prefix, :], patches], dim=-2) if prefix else patches


class VideoModel(nn.Module):
    """Base class of every family: the interface above, and the pieces all families share.

    Families implement ``forward_stages`` (the backbone, handing each stage's grid to ``tap``) and
    ``group_matcher``, set ``num_intermediates`` and call :meth:`init_head` in their constructor; they
    pick their pooling with ``global_pool`` (or override ``pool``) and how ``norm=True`` applies to
    intermediates with ``intermediate_norm``.
    """

    num_classes: int
    num_features: int
    num_intermediates: int  # stages (or blocks of a plain stack) forward_intermediates can return
    head: nn.Module
    head_drop: nn.Module
    norm: nn.Module
    in_chans: int = 3
    variant: str | None = None  # the registered name, set by create_model (None for a model built directly)
    # average over all token axes / over the frames' class tokens / first moments of a grid (moment_pool) /
    # class tokens and the first moments of the patch tokens ("cls_moments": pool does not know the patch grid
    # of class-token-first features, so the family implements it, CSTransformer.pool; init_head sizes it)
    global_pool: Literal["avg", "cls", "moments", "cls_moments"] = "avg"
    intermediate_norm: Literal["last", "all", "none"] = "none"  # which grids ``norm=True`` sends through norm
    no_weight_decay_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    # --------------------------------------------------------------------------------------- backbone
    def forward_stages(self, x: Tensor, taps: FeatureTaps | None = None) -> Tensor | None:  # pragma: no cover
        """Run the backbone on ``x`` and return ``forward_features(x)``; after each stage ``i`` go on with
        ``x = self.tap(taps, i, x, ...)`` and return ``None`` when that is ``None``."""
        raise NotImplementedError

    @staticmethod
    def tap(
        taps: FeatureTaps | None, index: int, tokens: Tensor, layout: str | None = None, prefix: int = 0, **axes
    ) -> Tensor | None:
        """Hand stage ``index``'s tokens to ``taps``; return the tokens to go on with (``None``: stop here).

        ``layout`` is the einops pattern of the patch tokens, read as ``(B, T, H, W, C)`` with ``axes``
        (``None``: they already are that grid); ``prefix`` class tokens lead the token axis (``dim=-2``).
        """
        return tokens if taps is None else taps.keep(index, tokens, layout, prefix, axes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: OutputFormat = "NCTHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Token grids of the stages in ``indices`` (timm's meaning: ``None`` all, an int the last ``n``,
        a list the given ones, negative from the end), optionally through the final norm.

        Returns ``(forward_features(x), grids)``, or the grids alone with ``intermediates_only``;
        ``stop_early`` (with ``intermediates_only``) skips the stages after the last one asked for. Without
        ``norm`` every grid lies on the path to the features, so ``torch.autograd.grad(score, grid)``
        gives its gradient (Grad-CAM); ``norm=True`` returns normalised copies.
        """
        if output_fmt not in ("NCTHW", "NTHWC"):
            raise ValueError(f"output_fmt must be 'NCTHW' or 'NTHWC', got {output_fmt!r}")
        if stop_early and not intermediates_only:
            raise ValueError("stop_early=True needs intermediates_only=True: the features need every stage")
        take = self._take_indices(indices)
        taps = FeatureTaps(take, stop=max(take) if stop_early else None, channels_first=output_fmt == "NCTHW")
        features = self.forward_stages(x, taps)
        last = self.num_intermediates - 1
        out = []
        for i in take:
            g = taps.grids[i]
            if norm and (self.intermediate_norm == "all" or (self.intermediate_norm == "last" and i == last)):
                g = self._norm_grid(g, channels_first=output_fmt == "NCTHW")
            out.append(g)
        return out if intermediates_only else (features, out)

    def _norm_grid(self, grid: Tensor, channels_first: bool) -> Tensor:
        if not channels_first:
            return self.norm(grid)
        return self.norm(grid.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        n = self.num_intermediates
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices} asks for the last {indices} of {n} stages; use 1 to {n}")
            return list(range(n - indices, n))
        take = [i + n if i < 0 else i for i in indices]
        if not take or any(not 0 <= i < n for i in take):
            raise ValueError(f"indices {list(indices)} are out of range for {n} stages (0 to {n - 1}, or negative)")
        return take

    # -------------------------------------------------------------------------------------------- head
    def init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        """The classifier every family ends with: dropout, then ``Linear(num_features, num_classes)``
        (``num_classes=0``: none; ``forward`` returns the pooled features). ``num_features`` is the
        width of the features; moment pooling hands the head ``POOLED_WIDTH`` times as many."""
        num_features *= POOLED_WIDTH.get(self.global_pool, 1)
        self.num_features, self.num_classes = num_features, num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def pool(self, x: Tensor) -> Tensor:
        """``forward_features`` output -> ``(B, num_features)``: the average over every token axis
        (``global_pool="avg"``), of the frames' class tokens, ``x[:, :, 0]`` (``"cls"``), or the first
        moments of a ``(B, T, H, W, C)`` grid (``"moments"``, :func:`moment_pool`)."""
        if self.global_pool == "cls":
            return x[:, :, 0].mean(dim=1)
        if self.global_pool == "moments":
            return moment_pool(x)
        return x.flatten(1, -2).mean(dim=1)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

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

    # ------------------------------------------------------------------------------------ optimisation
    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that take no weight decay (embeddings, tokens, bias tables, mixing
        ratios), as every module declares them in ``no_weight_decay_names``. Norms and biases are left
        to the optimiser, which skips every 1-D parameter."""
        names = set()
        for prefix, module in self.named_modules():
            for name in getattr(module, "no_weight_decay_names", ()):
                if isinstance(getattr(module, name, None), nn.Parameter):
                    names.add(f"{prefix}.{name}" if prefix else name)
        return names

    def group_matcher(self, coarse: bool = False) -> dict:  # pragma: no cover - abstract
        """timm's parameter grouping: ``{"stem": regex, "blocks": regex or [(regex, suffix), ...]}``."""
        raise NotImplementedError

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

    # ------------------------------------------------------------------------------ 2D checkpoint hooks
    def convert_2d_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map a 2D (timm) checkpoint's names to this model's; by default timm's ``head.fc.`` -> ``head.``."""
        return {k.replace("head.fc.", "head."): v for k, v in state_dict.items()}

    def resize_2d_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        """A 2D tensor reshaped to this model's ``target`` (position embeddings, bias tables), or ``None``
        when this family has no rule for ``key``."""
        return None

    # ---------------------------------------------------------------- weights built for another input
    @property
    def frames_per_image(self) -> int:
        """How many identical frames show one still image: the stem's temporal stride, so the image is
        one token frame and no zero frame is padded in (image pretraining feeds an image this way)."""
        return 1

    def resample_tensor(self, key: str, value: Tensor, target: Tensor) -> Tensor | None:
        """``value``, this architecture's tensor ``key`` as built for another clip length or crop size
        (``num_frames``, ``img_size``), resampled to ``target``'s shape the way the model resamples it at
        run time for such an input (position embeddings over frames or the patch grid, bias tables), or
        ``None`` when the family has no rule for ``key``. By default the 2D checkpoint rules (grids)."""
        return self.resize_2d_tensor(key, value, target)


def stage_group_matcher(stem: str, stages: str, transition: str, coarse: bool = False) -> dict:
    """timm's grouping of a staged model (Swin's): the ``stem``; in each stage ``stages.i`` its
    ``transition`` (patch merging) with the first block, then one group per block ``stages.i.blocks.j``
    (one per stage when ``coarse``); the final norm with the last block."""
    if coarse:
        return dict(stem=stem, blocks=rf"^{stages}\.(\d+)")
    return dict(
        stem=stem,
        blocks=[
            (rf"^{stages}\.(\d+)\.{transition}", (0,)),
            (rf"^{stages}\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,)),
        ],
    )


def init_weights_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """timm/Swin init: Linear trunc-normal(std), zero bias; LayerNorm (1, 0). Convs keep PyTorch's."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
