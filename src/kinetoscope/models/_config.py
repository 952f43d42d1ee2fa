"""Per-variant defaults: the input a variant expects and the numbers its paper reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

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

    def to_dict(self) -> dict:
        return asdict(self)
