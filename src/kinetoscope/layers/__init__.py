"""Pure ``nn`` building blocks shared by every model family. Knows no model."""

from .attention import Attention, CrossAttention, attention, dense_attention_reference
from .block import PreNormBlock
from .drop import DropPath, drop_path_schedule
from .lsh_attention import LSHAttention, lsh_attention
from .mlp import Mlp
from .patch_embed import PatchEmbed3d, check_video_input, inflate_conv_weight, pad_to_multiple, to_3tuple
from .pos_embed import resample_1d, resample_2d
from .windows import (
    RelativePositionBias,
    effective_window,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "Attention",
    "CrossAttention",
    "DropPath",
    "LSHAttention",
    "Mlp",
    "PatchEmbed3d",
    "PreNormBlock",
    "RelativePositionBias",
    "attention",
    "check_video_input",
    "dense_attention_reference",
    "drop_path_schedule",
    "effective_window",
    "inflate_conv_weight",
    "lsh_attention",
    "pad_to_multiple",
    "relative_position_index",
    "resample_1d",
    "resample_2d",
    "shifted_window_mask",
    "to_3tuple",
    "window_partition",
    "window_reverse",
]
