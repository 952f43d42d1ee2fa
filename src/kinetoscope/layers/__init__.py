"""Pure ``nn`` building blocks shared by every model family. Knows no model."""

from .attention import Attention, CrossAttention, attention, dense_attention_reference
from .block import PreNormBlock
from .drop import DropPath, drop_path_schedule
from .lsh_attention import LSHAttention, lsh_attention
from .mlp import Mlp
from .patch_embed import (
    PatchEmbed3d,
    check_divisible,
    check_video_input,
    conv_stem,
    inflate_conv_weight,
    pad_to_multiple,
    to_3tuple,
)
from .pos_embed import resample_1d, resample_2d
from .temporal_shift import TemporalShiftAttention
from .windows import (
    KEY_MASK_VALUE,
    effective_window,
    geometry_buffer,
    key_padding_bias,
    relative_position_index,
    shifted_window_mask,
    window_coords,
    window_padding_bias,
    window_partition,
    window_reverse,
)

__all__ = [
    "KEY_MASK_VALUE",
    "Attention",
    "CrossAttention",
    "DropPath",
    "LSHAttention",
    "Mlp",
    "PatchEmbed3d",
    "PreNormBlock",
    "TemporalShiftAttention",
    "attention",
    "check_divisible",
    "conv_stem",
    "check_video_input",
    "dense_attention_reference",
    "drop_path_schedule",
    "effective_window",
    "geometry_buffer",
    "inflate_conv_weight",
    "key_padding_bias",
    "lsh_attention",
    "pad_to_multiple",
    "relative_position_index",
    "resample_1d",
    "resample_2d",
    "shifted_window_mask",
    "to_3tuple",
    "window_coords",
    "window_padding_bias",
    "window_partition",
    "window_reverse",
]
