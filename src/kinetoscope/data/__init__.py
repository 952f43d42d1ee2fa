"""The video data pipeline: decoding, annotations, clip sampling, transforms, datasets (videos, and images
as clips of identical frames), synthetic data.

Knows no model: ``kinetoscope.data`` never imports ``kinetoscope.models`` or ``kinetoscope.engine``.
"""

from .annotations import Annotations, detect_format, load_annotations, load_classes, save_classes
from .checks import check_videos
from .datasets import ImageDataset, VideoDataset, collate_valid, read_bad_files, worker_init_fn
from .decoding import VideoDecodeError, decode_rgb, open_video, read_video, torchcodec_status
from .sampling import ClipSampler, parse_protocol, parse_views
from .synthetic import CLASSES as SYNTHETIC_CLASSES
from .synthetic import write_synthetic_dataset, write_video
from .transforms import IMAGENET_MEAN, IMAGENET_STD, VideoMixup, build_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CLASSES",
    "Annotations",
    "ClipSampler",
    "ImageDataset",
    "VideoDataset",
    "VideoDecodeError",
    "VideoMixup",
    "build_transform",
    "check_videos",
    "collate_valid",
    "decode_rgb",
    "detect_format",
    "load_annotations",
    "load_classes",
    "open_video",
    "parse_protocol",
    "parse_views",
    "read_bad_files",
    "read_video",
    "save_classes",
    "torchcodec_status",
    "worker_init_fn",
    "write_synthetic_dataset",
    "write_video",
]
