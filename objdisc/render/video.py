"""Frames to video and back, in-process with PyAV (its bundled FFmpeg has libx264).

The references call the ffmpeg binary on ``<dir>/%d.png``: libx264, yuv420p, 60 fps, one thread,
and either CRF 17 (ObSuRF) or a 1 Mbit/s bitrate (SRT/OSRT). ``write_mp4`` encodes the same way
without a binary on the PATH or a folder of frames; ``save_frames`` writes the reference's frame
folders (``0.png, 1.png, ...``) where they are wanted too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from objdisc.io import atomic_path

from objdisc.viz import save_png, to_image


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[Any],
    fps: int = 60,
    crf: int | None = 17,
    bitrate: int | None = None,
    threads: int = 1,
) -> Path:
    """Encode uint8 RGB frames [H,W,3] as H.264 (yuv420p) mp4 at ``path``; returns the path.

    Quality: ``bitrate`` (bits/s, e.g. 1_000_000 as SRT/OSRT) when given, else ``crf`` (17 as
    ObSuRF). yuv420p halves chroma resolution, so odd widths/heights are padded by one edge pixel.
    One encoder thread (the references' setting) keeps the bytes identical from run to run. The
    file appears under its name only when complete (temp file + rename).
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = None
        size = None
        for frame in frames:
            rgb = to_image(frame)
            if stream is None:
                size = rgb.shape[:2]
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height = rgb.shape[0] + rgb.shape[0] % 2
                stream.width = rgb.shape[1] + rgb.shape[1] % 2
                stream.pix_fmt = "yuv420p"
                stream.thread_count = threads
                stream.thread_type = "NONE" if threads == 1 else "AUTO"
                if bitrate is not None:
                    stream.bit_rate = int(bitrate)
                elif crf is not None:
                    stream.options = {"crf": str(crf)}
            elif rgb.shape[:2] != size:
                raise ValueError(f"frame {count} of {path} is {rgb.shape[:2]}, earlier frames {size}")
            rgb = _pad_even(rgb)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
    return path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as uint8 [T,H,W,3] RGB."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    return np.stack(frames)


def save_frames(directory: str | os.PathLike, frames: Iterable[Any]) -> int:
    """Write frames as ``0.png, 1.png, ...`` (the references' ``%d.png``, no zero padding), each
    atomically; returns how many were written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, frame in enumerate(frames):
        save_png(directory / f"{i}.png", frame)
        count = i + 1
    return count


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Repeat the last row/column where height/width is odd (yuv420p needs even sizes)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return rgb
