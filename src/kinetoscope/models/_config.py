"""Per-variant defaults: the input a variant expects and the numbers its paper reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# How a paper counts FLOPs (docs/flops.md has the evidence for each paper):
#   "mac"         reported GFLOPs are multiply-adds of every op (fvcore / mmcv style)
#   "mac_no_attn" multiply-adds of linear and conv layers only; attention matmuls not counted (SCT)
#   "flop"        multiply and add counted separately, i.e. 2 x MAC (CSTransformer)
FlopConvention = Literal["mac", "mac_no_attn", "flop"]


@dataclass(frozen=True, kw_only=True)
class PaperReference:
    """What the paper reports for one variant, for ``kinetoscope models`` to compare against.

    ``tolerance`` is how far (relative) our params and GFLOPs may be from the paper's; each family's
    docstring says why its value is what it is (2 % where a release was measured, wider for
    reconstructions).
    """

    params_m: float | None
    gflops: float | None  # per view, in the paper's own convention
    flop_convention: FlopConvention = "mac"
    params_head_classes: int | None = 400  # head size the reported params include; None = backbone only
    views: str | None = None  # "clips x crops" of the reported accuracy
    top1: float | None = None
    dataset: str | None = None
    pretrain: str | None = None
    citation: str = ""
    note: str = ""
    tolerance: float = 0.02


@dataclass(frozen=True)
class ReleasedWeights:
    """Weights the authors trained for one variant, and how to feed them (timm's pretrained cfg,
    torchvision's ``Weights``): where they are published (as text; kinetoscope never downloads), the
    input pipeline of the released test config, and the top-1 reported for them.

    ``url is None`` means the weights were not released. Mean and std are on the 0..1 pixel scale.
    """

    dataset: str
    num_classes: int
    top1: float | None  # reported for these weights, with these views
    top1_source: str  # "README" (the release's table) or the paper's table
    views: str  # "clips x crops" of the reported top-1
    url: str | None = None  # where the authors publish the file; None: not released
    file: str | None = None  # the released file name (as the release's README names it)
    config: str | None = None  # the released training config, relative to the release repository
    repository: str = ""  # "owner/name@commit" the facts were read from
    pretrain: str | None = None  # what the training started from
    num_frames: int = 32
    sampling: str = "dense:32x2"  # kinetoscope.data.sampling protocol of the released config
    test_resize: int = 224  # short side before the test crops
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    note: str = ""

    @property
    def released(self) -> bool:
        return self.url is not None

    def to_dict(self) -> dict:
        return dict(asdict(self), released=self.released)


# The training settings every ``*_nano`` variant starts from (families add their own on top): nanos are
# for small from-scratch experiments such as ``kinetoscope synth``'s time-reversal pairs, where a
# horizontal flip turns move_left into move_right and a clockwise spin into a counter-clockwise one, so
# flips are off; a short warm-up because those runs are a few hundred steps long.
NANO_RECIPE: Mapping[str, Any] = {"flip": False, "warmup_epochs": 1.0, "label_smoothing": 0.0, "batch_size": 8}

# NANO_RECIPE with train crops from a short side of 1-1.25x the crop. The default (crop x 256/224 x [1, 1.25],
# 1.14-1.43x) shows every shape larger in training than validation's whole frame does; the nanos that fitted
# their training set and missed turns in validation gained 2-4 points from it (dualformer_nano, sct_nano,
# cst_nano; docs/benchmarks/temporal_truth.md). pst_nano and stat_nano pass without it and keep NANO_RECIPE.
NANO_RECIPE_FULL_FRAME: Mapping[str, Any] = {**NANO_RECIPE, "train_short_side": [1.0, 1.25]}


@dataclass(frozen=True)
class ModelConfig:
    """Defaults every registered variant carries."""

    name: str
    num_frames: int
    img_size: int
    num_classes: int = 400
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    test_views: str = "1x1"  # clips x crops
    sampling: str = "dense:16x4"  # protocol string understood by kinetoscope.data.sampling
    paper: PaperReference | None = None
    # smallest (frames, size) the architecture accepts; the test-suite runs every model there
    min_input: tuple[int, int] = (8, 64)
    # training settings of this variant, keyed by kinetoscope.engine.TrainConfig field names; applied
    # above the TrainConfig defaults and below --config, flags and --set
    recipe: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple[ReleasedWeights, ...] = ()  # what the authors trained (released or not)

    def to_dict(self) -> dict:
        return asdict(self)
