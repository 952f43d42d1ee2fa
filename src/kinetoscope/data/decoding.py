"""One reader interface over video files and frame folders.

``open_video(path, backend="auto")`` returns a reader with ``num_frames``, ``fps``, ``duration`` and
``get_frames(indices, layout="TCHW")`` giving uint8 frames, and ``iter_frames()`` giving every frame once,
in order, from one sequential pass (long videos: no seek per clip). Readers open their file lazily, on the
first call that needs it, so a dataset can be built (and forked by DataLoader workers) before any
decoder exists; each worker then opens its own with one FFmpeg thread.

Backends:

* ``"pyav"`` (default when torchcodec cannot load): PyAV, whose wheel bundles FFmpeg. Frame-exact:
  the presentation timestamps of all frames are read by demuxing packets (no decoding), index ``i``
  is the ``i``-th timestamp in presentation order (so variable frame rate is handled), and decoding
  seeks to the keyframe before each run of requested frames and decodes forward only as far as needed.
  Rotation metadata (display matrix) is applied.
* ``"torchcodec"``: torchcodec's ``VideoDecoder`` in exact seek mode; needs the system FFmpeg
  libraries. ``"auto"`` takes it when it loads, else PyAV.
* A directory of images (``img_00001.jpg`` ...) is read as a frame folder whatever the backend.
* An image file is a one-frame video (image pretraining); a clip of ``T`` frames sampled from it (the
  samplers loop short videos) is ``T`` identical frames.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import Tensor

from .annotations import IMAGE_EXTENSIONS

Layout = Literal["TCHW", "THWC"]


class VideoDecodeError(OSError):
    """A file that cannot be opened or decoded; the message names the file and the reason."""


def error_reason(path: str, err: BaseException) -> str:
    """The first line of ``err``'s message without the file path (the report names the path once)."""
    lines = [ln for ln in str(err).replace(path, "").strip(": ").splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


class VideoReader(Protocol):
    path: str

    @property
    def num_frames(self) -> int: ...

    @property
    def fps(self) -> float: ...

    @property
    def duration(self) -> float: ...

    def get_frames(self, indices: Sequence[int], layout: Layout = "TCHW") -> Tensor: ...

    def iter_frames(self) -> Iterator[Tensor]: ...


def _check_indices(indices: Sequence[int], num_frames: int, path: str) -> list[int]:
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} out of range for a video of {num_frames} frames")
    return idx


def _to_layout(frames: Tensor, layout: Layout) -> Tensor:
    """``frames`` is (T, H, W, C)."""
    if layout == "THWC":
        return frames
    if layout == "TCHW":
        return frames.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"layout must be 'TCHW' or 'THWC', got {layout!r}")


# ---------------------------------------------------------------------------------------------- PyAV
class PyAVReader:
    """Frame-exact random access with PyAV (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = str(path)
        self.threads = threads
        self._container = None
        self._pts: list[int] | None = None
        self._keyframes: list[int] = []

    def _open(self):
        if self._container is None:
            import av

            if not Path(self.path).is_file():
                raise VideoDecodeError(f"{self.path}: file not found")
            try:
                self._container = av.open(self.path, metadata_errors="ignore")
            except Exception as err:  # noqa: BLE001  (FFmpeg raises many error types)
                raise VideoDecodeError(f"{self.path}: cannot open ({type(err).__name__}: {err})") from err
            if not self._container.streams.video:
                self.close()
                raise VideoDecodeError(f"{self.path}: no video stream")
            stream = self._container.streams.video[0]
            stream.thread_count = self.threads
            stream.thread_type = "AUTO" if self.threads > 1 else "SLICE"
        return self._container

    @property
    def _stream(self):
        return self._open().streams.video[0]

    def _index(self) -> None:
        """Presentation timestamps of every frame, from packets alone (fast: nothing is decoded)."""
        if self._pts is not None:
            return
        container, stream = self._open(), self._stream
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except Exception as err:  # noqa: BLE001
            if not pts:
                raise VideoDecodeError(f"{self.path}: cannot read packets ({type(err).__name__}: {err})") from err
        if not pts:
            raise VideoDecodeError(f"{self.path}: video stream has no frames")
        self._pts = sorted(pts)
        self._keyframes = sorted(keys) or [self._pts[0]]

    @property
    def num_frames(self) -> int:
        self._index()
        return len(self._pts)

    @property
    def fps(self) -> float:
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            return float(rate)
        return self.num_frames / max(self.duration, 1e-6)

    @property
    def duration(self) -> float:
        self._index()
        stream = self._stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        tb = float(stream.time_base or 0)
        return (self._pts[-1] - self._pts[0]) * tb + 1.0 / float(stream.average_rate or 25)

    def get_frames(self, indices: Sequence[int], layout: Layout = "TCHW") -> Tensor:
        self._index()
        idx = _check_indices(indices, len(self._pts), self.path)
        wanted = sorted({self._pts[i] for i in idx})
        decoded = self._decode_pts(wanted)
        missing = [p for p in wanted if p not in decoded]
        if missing:
            raise VideoDecodeError(f"{self.path}: could not decode {len(missing)} of the requested frames")
        frames = torch.stack([decoded[self._pts[i]] for i in idx])  # (T, H, W, C)
        return _to_layout(frames, layout)

    def _decode_pts(self, wanted: list[int]) -> dict[int, Tensor]:
        """Decode the frames with these (sorted) timestamps: seek to the keyframe before the next wanted
        frame, decode forward, and seek again only where a keyframe lies between two wanted frames."""
        container, stream = self._open(), self._stream
        wanted_set = set(wanted)
        out: dict[int, Tensor] = {}
        i = 0  # next wanted timestamp
        try:
            while i < len(wanted):
                key = self._keyframes[max(bisect_right(self._keyframes, wanted[i]) - 1, 0)]
                container.seek(key, stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    if frame.pts in wanted_set and frame.pts not in out:
                        out[frame.pts] = self._frame_to_tensor(frame)
                    # past a wanted timestamp the decoder never produced: the caller reports it missing
                    while i < len(wanted) and (wanted[i] in out or wanted[i] < frame.pts):
                        i += 1
                    if i >= len(wanted) or self._worth_seeking(frame.pts, wanted[i]):
                        break
                else:
                    break  # end of stream
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from err
        return out

    def iter_frames(self) -> Iterator[Tensor]:
        """Every frame as uint8 ``(H, W, C)``, in presentation order, decoded once from the start."""
        container, stream = self._open(), self._stream
        try:
            container.seek(0, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None:  # as the index counts frames
                    yield self._frame_to_tensor(frame)
        except VideoDecodeError:
            raise
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from err

    def _worth_seeking(self, position: int, target: int) -> bool:
        """A keyframe after the current position and at or before the target: seeking skips work."""
        k = bisect_right(self._keyframes, target) - 1
        return k >= 0 and self._keyframes[k] > position

    @staticmethod
    def _frame_to_tensor(frame) -> Tensor:
        rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        if rotation:
            # display matrix rotation is counter-clockwise in degrees
            rgb = torch.rot90(rgb, k=rotation // 90, dims=(0, 1))
        return rgb

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __getstate__(self):  # readers travel to DataLoader workers unopened
        state = self.__dict__.copy()
        state["_container"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------------------- torchcodec
@functools.cache
def torchcodec_status() -> tuple[bool, str]:
    """``(usable, reason)``: torchcodec imports and its FFmpeg libraries load."""
    try:
        from torchcodec._internally_replaced_utils import load_core_libraries

        load_core_libraries()  # loads the FFmpeg-dependent core; raises where FFmpeg is missing
    except Exception as err:  # noqa: BLE001
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        return False, f"{type(err).__name__}: {lines[0] if lines else ''} (system FFmpeg libraries not found?)"
    return True, "ok"


class TorchCodecReader:
    """torchcodec ``VideoDecoder`` (exact seek mode, one FFmpeg thread)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = str(path)
        self.threads = threads
        self._decoder = None

    def _open(self):
        if self._decoder is None:
            from torchcodec.decoders import VideoDecoder

            if not Path(self.path).is_file():
                raise VideoDecodeError(f"{self.path}: file not found")
            try:
                self._decoder = VideoDecoder(
                    self.path, seek_mode="exact", num_ffmpeg_threads=self.threads, dimension_order="NHWC"
                )
            except Exception as err:  # noqa: BLE001
                raise VideoDecodeError(f"{self.path}: cannot open ({type(err).__name__}: {err})") from err
            if not self._decoder.metadata.num_frames:
                raise VideoDecodeError(f"{self.path}: video stream has no frames")
        return self._decoder

    @property
    def num_frames(self) -> int:
        return int(self._open().metadata.num_frames)

    @property
    def fps(self) -> float:
        meta = self._open().metadata
        return float(meta.average_fps or 0.0)

    @property
    def duration(self) -> float:
        meta = self._open().metadata
        return float(meta.duration_seconds or self.num_frames / max(self.fps, 1e-6))

    def get_frames(self, indices: Sequence[int], layout: Layout = "TCHW") -> Tensor:
        decoder = self._open()
        idx = _check_indices(indices, self.num_frames, self.path)
        try:
            frames = decoder.get_frames_at(indices=idx).data  # (T, H, W, C)
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from err
        return _to_layout(frames, layout)

    def iter_frames(self) -> Iterator[Tensor]:
        """Every frame as uint8 ``(H, W, C)``, in order; ascending indices decode without seeking."""
        decoder = self._open()
        for i in range(self.num_frames):
            try:
                frame = decoder[i]
            except Exception as err:  # noqa: BLE001
                raise VideoDecodeError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from err
            yield frame

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_decoder"] = None
        return state


# -------------------------------------------------------------------------------------- frame folder
_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")


class FrameFolderReader:
    """Pre-extracted frames (``img_00001.jpg`` ...): files sorted by the number before the extension."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = str(path)
        self._fps = fps
        self._files: list[Path] | None = None

    def _list(self) -> list[Path]:
        if self._files is None:
            folder = Path(self.path)
            if not folder.is_dir():
                raise VideoDecodeError(f"{self.path}: frame folder not found")
            files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                raise VideoDecodeError(f"{self.path}: frame folder has no images ({', '.join(IMAGE_EXTENSIONS)})")

            def key(f: Path):
                m = _NUMBER.search(f.name)
                return (int(m.group(1)) if m else -1, f.name)

            self._files = sorted(files, key=key)
        return self._files

    @property
    def num_frames(self) -> int:
        return len(self._list())

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def duration(self) -> float:
        return self.num_frames / self._fps

    def get_frames(self, indices: Sequence[int], layout: Layout = "TCHW") -> Tensor:
        files = self._list()
        idx = _check_indices(indices, len(files), self.path)
        cache = {i: decode_rgb(files[i]) for i in set(idx)}  # each (C, H, W)
        frames = torch.stack([cache[i] for i in idx]).permute(0, 2, 3, 1)  # (T, H, W, C)
        return _to_layout(frames, layout)

    def iter_frames(self) -> Iterator[Tensor]:
        for i in range(self.num_frames):
            yield self.get_frames([i], "THWC")[0]


class ImageReader:
    """A still image as a one-frame video."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    @property
    def num_frames(self) -> int:
        if not Path(self.path).is_file():
            raise VideoDecodeError(f"{self.path}: file not found")
        return 1

    @property
    def fps(self) -> float:
        return 1.0

    @property
    def duration(self) -> float:
        return 1.0

    def get_frames(self, indices: Sequence[int], layout: Layout = "TCHW") -> Tensor:
        idx = _check_indices(indices, self.num_frames, self.path)
        frames = decode_rgb(self.path).permute(1, 2, 0)  # (H, W, C)
        return _to_layout(frames.expand(len(idx), -1, -1, -1), layout)  # (T, H, W, C): the image T times

    def iter_frames(self) -> Iterator[Tensor]:
        yield self.get_frames([0], "THWC")[0]


def decode_rgb(path: str | Path) -> Tensor:
    """An image file as uint8 ``(3, H, W)``: torchvision's decoders (JPEG, PNG, WebP), Pillow for the
    formats they lack (BMP, TIFF, PPM); a file neither can read is a ``VideoDecodeError`` naming it."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception:  # noqa: BLE001  (RuntimeError for formats it lacks and for damaged data alike)
        pass
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    except Exception as err:  # noqa: BLE001
        reason = str(err).replace(repr(str(path)), "").strip() or type(err).__name__  # Pillow's message names it
        raise VideoDecodeError(f"{path}: cannot decode image ({reason})") from err


# ---------------------------------------------------------------------------------------------- open
Backend = Literal["auto", "pyav", "torchcodec"]


def resolve_backend(backend: Backend = "auto") -> str:
    if backend == "auto":
        return "torchcodec" if torchcodec_status()[0] else "pyav"
    if backend == "torchcodec":
        ok, reason = torchcodec_status()
        if not ok:
            raise RuntimeError(
                f"torchcodec cannot load here ({reason}); install the system FFmpeg libraries "
                "(e.g. `apt-get install ffmpeg`) or use backend='pyav'"
            )
        return backend
    if backend == "pyav":
        return backend
    raise ValueError(f"backend must be 'auto', 'pyav' or 'torchcodec', got {backend!r}")


def open_video(path: str | Path, backend: Backend = "auto", threads: int = 1) -> VideoReader:
    """A lazy reader for a video file, a frame folder or an image (a one-frame video)."""
    if Path(path).is_dir():
        return FrameFolderReader(path)
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return ImageReader(path)
    kind = resolve_backend(backend)
    return TorchCodecReader(path, threads) if kind == "torchcodec" else PyAVReader(path, threads)


def read_video(path: str | Path, indices: Sequence[int] | None = None, backend: Backend = "auto") -> Tensor:
    """Frames ``indices`` (default: all) of a video as uint8 ``(T, C, H, W)``."""
    reader = open_video(path, backend)
    return reader.get_frames(range(reader.num_frames) if indices is None else indices)
