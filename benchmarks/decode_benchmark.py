"""Clip decoding throughput per backend, against decoding every frame.

Writes ``--videos`` 10-second 320p H.264 videos (30 fps, keyframe every 2 s, made here with PyAV), then
reads clips from them the way training does: for each video a 16-frame dense clip (stride 4) at a
random start (``seek + decode forward``, what ``kinetoscope.data`` does), and the same clip by decoding
the whole video and picking the frames (the decode-everything baseline many loaders use). One process,
one FFmpeg thread, so the figure is clips/s per core. Results go to docs/benchmarks/decoding.md.

    python benchmarks/decode_benchmark.py [--videos 6] [--clips 24]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kinetoscope.data import open_video, parse_protocol, torchcodec_status, write_video
from kinetoscope.data.decoding import PyAVReader, TorchCodecReader


def make_videos(folder: Path, count: int, seconds: int = 10, fps: int = 30) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:320, 0:568]
    for i in range(count):
        frames = np.empty((seconds * fps, 320, 568, 3), np.uint8)
        base = rng.uniform(0, 255, 3)
        for t in range(seconds * fps):
            wave = 60 * np.sin((xx + 3 * t) / 17.0) + 60 * np.cos((yy - 2 * t) / 23.0)
            frames[t] = np.clip(base + wave[..., None] + rng.normal(0, 8, (320, 568, 3)), 0, 255)
        path = folder / f"video_{i}.mp4"
        write_video(path, frames, fps=fps, crf=23, g=fps * 2)
        paths.append(path)
    return paths


def time_clips(read, paths, clips, rng) -> float:
    sampler = parse_protocol("dense:16x4")
    times = []
    for k in range(clips):
        path = paths[k % len(paths)]
        total = open_video(path, "pyav").num_frames
        idx = sampler.train(total, rng)
        t0 = time.perf_counter()
        frames = read(path, idx)
        times.append(time.perf_counter() - t0)
        assert frames.shape[0] == 16
    return 1.0 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--out", default="docs/benchmarks/decoding.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_videos(Path(tmp), a.videos)

        def seek_pyav(path, idx):
            return PyAVReader(path).get_frames(idx)

        def decode_all(path, idx):
            reader = PyAVReader(path)
            everything = reader.get_frames(range(reader.num_frames))
            return everything[torch.as_tensor(idx)]

        readers = {"pyav (seek + decode forward)": seek_pyav, "pyav, decode every frame (baseline)": decode_all}
        if torchcodec_status()[0]:
            readers["torchcodec (exact seek)"] = lambda path, idx: TorchCodecReader(path).get_frames(idx)
        rows = [(name, time_clips(fn, paths, a.clips, np.random.default_rng(0))) for name, fn in readers.items()]
    base = dict(rows)["pyav, decode every frame (baseline)"]
    lines = [
        "# Clip decoding throughput",
        "",
        f"`python benchmarks/decode_benchmark.py --videos {a.videos} --clips {a.clips}`: 10 s, 568x320, 30 fps H.264 "
        "videos (keyframe every 2 s); one 16-frame clip with stride 4 at a random start per read; one process, "
        f"one FFmpeg thread; median over {a.clips} reads; {platform.machine()}, torch {torch.__version__}."
        + ("" if torchcodec_status()[0] else f" torchcodec unavailable here: {torchcodec_status()[1]}"),
        "",
        "| reader | clips/s per core | vs decode-everything |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {rate:.2f} | {rate / base:.1f}x |" for name, rate in rows]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
