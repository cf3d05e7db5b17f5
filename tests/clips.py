"""Small video files made with PyAV for the media, video, CLI and app tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CLIP_WIDTH = 64
CLIP_HEIGHT = 48
CLIP_FRAMES = 12
CLIP_FPS = 10
SQUARE = 8  # side of the white square in generated clips, in pixels


def write_clip(
    path: Path,
    *,
    width: int = CLIP_WIDTH,
    height: int = CLIP_HEIGHT,
    frames: int = CLIP_FRAMES,
    fps: int | Fraction = CLIP_FPS,
    rotation: int = 0,
    codec: str = "mpeg4",
    times: list[float] | None = None,
) -> Path:
    """Encode a clip of a white square that starts at the top left and moves right over black.

    mpeg4 is the default because it accepts odd sizes and is faster to set up than libx264.
    `times` gives each frame's presentation time in seconds (a variable frame rate, rounded to
    milliseconds); without it, frame i is shown at i / fps.
    """
    if times is not None:
        frames = len(times)
    time_base = Fraction(1, 1000) if times is not None else 1 / Fraction(fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            pixels = np.zeros((height, width, 3), dtype=np.uint8)
            pixels[:SQUARE, i : i + SQUARE] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i if times is None else round(times[i] * 1000)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    """Encode one second of silence as AAC in an MP4 container, with no video stream."""
    sample_rate = 8000
    samples_per_frame = 1024
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for i in range(sample_rate // samples_per_frame):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, samples_per_frame), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = sample_rate
            frame.pts = i * samples_per_frame
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def decode_output(path: Path) -> tuple[av.video.stream.VideoStream, list[av.VideoFrame]]:
    """Return the first video stream's properties and all of its decoded frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream, frames


def write_not_a_video(path: Path) -> Path:
    """Write text under a video file name."""
    path.write_text("this is a shopping list, not a video\n" * 50)
    return path


UNUSABLE_KINDS = ("audio only", "zero bytes", "text")


def write_unusable(path: Path, kind: str) -> Path:
    """Write a file that has no decodable video: audio only, zero bytes, or text."""
    if kind == "audio only":
        return write_audio_only(path)
    if kind == "zero bytes":
        path.write_bytes(b"")
        return path
    return write_not_a_video(path)
