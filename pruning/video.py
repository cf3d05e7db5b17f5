"""Dense vs pruned on a video clip: both models run on every selected frame, the output is a side-by-side H.264 clip.

`compare_on_video` streams the clip (decode, run both models, draw, encode, one frame at a time),
so memory does not grow with the clip's length. `VideoJob` runs it in a worker thread for the
dashboard, with progress, an estimate of the time left, and a stop request that keeps the frames
done so far. `read_frame` and `wipe_image` serve the frame scrubber.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .catalog import TASK_CLASSIFICATION, TASK_SEGMENTATION, ModelEntry
from .media import MediaError, StopRequested, VideoFrame, transcode
from .tasks import (
    edge_map_image,
    infer,
    output_fidelity,
    prepare_input,
    primary_fidelity,
    segmentation_overlay,
    side_by_side,
    top_k,
)

logger = logging.getLogger(__name__)

# Height range of each half of the side-by-side output. Taller frames are shrunk to keep encoding
# cheap next to inference. Shorter ones are enlarged so that the captions stay readable.
DISPLAY_HEIGHT = 360
MIN_DISPLAY_HEIGHT = 240

# Black columns between the dense and the pruned half.
PANEL_GAP = 4


@dataclass
class VideoComparison:
    """Outcome of running dense and pruned models over a clip."""

    frames_in: int
    frames_out: int
    task: str = TASK_CLASSIFICATION
    dense_ms: list[float] = field(default_factory=list)  # per-frame model latency
    pruned_ms: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)  # per frame: same top-1 (0/1), edge F1 or mIoU
    frame_times_s: list[float] = field(default_factory=list)  # source time of each processed frame
    dense_labels: list[str] = field(default_factory=list)  # per frame "class 42%", classifiers only
    pruned_labels: list[str] = field(default_factory=list)
    output_path: str = ""
    codec: str = ""
    width: int = 0  # encoded size of the side-by-side output, in pixels
    height: int = 0
    panel_width: int = 0  # width of each half; the pruned half starts at panel_width + PANEL_GAP
    output_fps: float = 0.0  # nominal output rate: the input rate divided by stride
    duration_s: float = 0.0  # output duration, equal to the span of input processed
    stopped: bool = False  # True if a stop request ended the run before the input ended

    # wall time of each pipeline step over the whole run, in seconds
    decode_s: float = 0.0  # decoding, conversion to RGB and scaling
    preprocess_s: float = 0.0  # frame to input tensor
    render_s: float = 0.0  # fidelity, captions and the side-by-side picture
    encode_s: float = 0.0  # H.264 encoding and muxing
    wall_s: float = 0.0  # the whole run, from opening the input to closing the output

    @staticmethod
    def _fps(latencies_ms: list[float]) -> float:
        total = sum(latencies_ms)
        return 1000.0 * len(latencies_ms) / total if total > 0 else 0.0

    @property
    def dense_fps(self) -> float:
        """Frames per second of the dense model alone (inference time only)."""
        return self._fps(self.dense_ms)

    @property
    def pruned_fps(self) -> float:
        """Frames per second of the pruned model alone (inference time only)."""
        return self._fps(self.pruned_ms)

    @property
    def pipeline_fps(self) -> float:
        """Frames per second of the whole run: decoding, both models, drawing and encoding."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def overhead_share(self) -> float:
        """Share of the run's wall time not spent inside the two models (0 to 1)."""
        if self.wall_s <= 0:
            return 0.0
        model_s = (sum(self.dense_ms) + sum(self.pruned_ms)) / 1000.0
        return min(1.0, max(0.0, 1.0 - model_s / self.wall_s))

    @property
    def mean_agreement(self) -> float:
        return statistics.fmean(self.agreement) if self.agreement else 0.0


def display_size(image: Image.Image) -> Image.Image:
    """Scale a frame so its height lies between MIN_DISPLAY_HEIGHT and DISPLAY_HEIGHT."""
    height = min(max(image.height, MIN_DISPLAY_HEIGHT), DISPLAY_HEIGHT)
    if image.height == height:
        return image
    width = max(2, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def compare_on_video(
    entry: ModelEntry,
    dense: nn.Module,
    pruned: nn.Module,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    max_side: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    background: bool = True,
) -> VideoComparison:
    """Run both models on the selected frames of `input_path` and write dense | pruned to `output_path` (H.264).

    `stride`, `max_frames` and `max_seconds` select frames as `iter_frames` does. `max_side` shrinks
    each frame so its longer side is at most that many pixels before the models see it (the model's
    own preprocessing may shrink it further). Raises `MediaError` for an unusable input before
    either model runs. `progress(done, total)` may raise `StopRequested` to end the run early: the
    output then contains the frames done so far and the result has `stopped=True`.
    """
    result = VideoComparison(frames_in=0, frames_out=0, task=entry.task)
    is_classifier = entry.task == TASK_CLASSIFICATION
    predicts = entry.pretrained  # an untrained model's top class is not a prediction, so its index is shown

    def render(frame: VideoFrame) -> Image.Image:
        started = time.perf_counter()
        inputs = frame.prepared if frame.prepared is not None else prepare_input(entry, frame.image)

        before_dense = time.perf_counter()
        dense_output = infer(dense, inputs)
        before_pruned = time.perf_counter()
        pruned_output = infer(pruned, inputs)
        finished = time.perf_counter()

        fidelity = output_fidelity(entry, dense_output, pruned_output)
        result.dense_ms.append((before_pruned - before_dense) * 1000.0)
        result.pruned_ms.append((finished - before_pruned) * 1000.0)
        result.agreement.append(primary_fidelity(entry, fidelity))
        result.frame_times_s.append(frame.time_s)
        if is_classifier:
            result.dense_labels.append(_top1_label(entry, dense_output, predicts))
            result.pruned_labels.append(_top1_label(entry, pruned_output, predicts))

        shown = display_size(frame.image)
        dense_lines = [f"dense  {result.dense_fps:.1f} fps"]
        pruned_lines = [f"pruned  {result.pruned_fps:.1f} fps"]
        if is_classifier:
            dense_lines.append(result.dense_labels[-1])
            pruned_lines.append(result.pruned_labels[-1])
        left = _render_panel(entry, shown, dense_output, dense_lines)
        right = _render_panel(entry, shown, pruned_output, pruned_lines)
        result.panel_width = left.width
        composite = side_by_side(left, right, gap=PANEL_GAP)
        result.preprocess_s += before_dense - started
        result.render_s += time.perf_counter() - finished
        return composite

    started = time.perf_counter()
    transcoded = transcode(
        input_path,
        output_path,
        render,
        stride=stride,
        max_frames=max_frames,
        max_seconds=max_seconds,
        max_side=max_side,
        progress=progress,
        background=background,
        # with background threads, preprocessing runs on the decoding thread and overlaps the models
        prepare=(lambda frame: prepare_input(entry, frame.image)) if background else None,
    )
    result.wall_s = time.perf_counter() - started

    # A stop raised inside render can leave statistics for a frame that was never written.
    for values in (result.dense_ms, result.pruned_ms, result.agreement, result.frame_times_s):
        del values[transcoded.frames_out :]
    if is_classifier:
        del result.dense_labels[transcoded.frames_out :]
        del result.pruned_labels[transcoded.frames_out :]

    result.frames_in = transcoded.frames_in
    result.frames_out = transcoded.frames_out
    result.output_path = str(transcoded.output_path)
    result.codec = transcoded.codec
    result.width = transcoded.width
    result.height = transcoded.height
    result.output_fps = transcoded.fps
    result.duration_s = transcoded.duration_s
    result.stopped = transcoded.stopped
    result.decode_s = transcoded.decode_s
    result.encode_s = transcoded.encode_s
    return result


def _render_panel(entry: ModelEntry, image: Image.Image, output, lines: list[str]) -> Image.Image:
    """Draw one half of the output, captioned with `lines`: the frame for classifiers, the class
    colours over the frame for segmentation, or the edge map for HED."""
    if entry.task == TASK_CLASSIFICATION:
        panel = image.convert("RGB").copy()
    elif entry.task == TASK_SEGMENTATION:
        panel = segmentation_overlay(image, output).resize(image.size, Image.Resampling.BILINEAR)
    else:
        panel = edge_map_image(output).convert("RGB").resize(image.size, Image.Resampling.BILINEAR)

    # The player shrinks the side-by-side frame to the page width (often 700 to 1100 pixels), so
    # the text grows with the frame: about 14 pixels on screen for a 2 × width frame shown 700 wide.
    font = _caption_font(max(14, 2 * panel.width // 50))
    draw = ImageDraw.Draw(panel)
    y = 4
    for line in lines:
        box = draw.textbbox((6, y), line, font=font)
        draw.rectangle((box[0] - 4, box[1] - 2, box[2] + 4, box[3] + 2), fill=(0, 0, 0))
        draw.text((6, y), line, fill=(255, 255, 255), font=font)
        y = box[3] + 6
    return panel


@functools.lru_cache(maxsize=8)
def _caption_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _top1_label(entry: ModelEntry, logits, predicts: bool = True) -> str:
    if not predicts:
        return f"untrained: output {int(logits[0].argmax())}"
    label, probability = top_k(entry, logits, k=1)[0]
    return f"{label} {probability:.0%}"


# ---------------------------------------------------------------------------------------------
# Background runs for the dashboard
# ---------------------------------------------------------------------------------------------


def estimate_remaining_s(done: int, total: int | None, elapsed_s: float) -> float | None:
    """Estimate the seconds left from the mean time per frame so far; None when it cannot be known."""
    if total is None or done <= 0 or elapsed_s <= 0:
        return None
    return max(0, total - done) * elapsed_s / done


@dataclass(frozen=True)
class JobProgress:
    """A snapshot of a running VideoJob."""

    done: int  # frames written so far
    total: int | None  # frames expected, None when the container stores neither a count nor a duration
    elapsed_s: float
    remaining_s: float | None  # estimate, None before the first frame or without a total

    @property
    def share(self) -> float:
        """Fraction done, from 0 to 1 (0 while the total is unknown)."""
        if not self.total:
            return 0.0
        return min(1.0, self.done / self.total)


class VideoJob:
    """Run `compare_on_video` in a worker thread and keep its output clip in memory.

    The output goes to a temporary folder that is deleted when the run ends, after its bytes are
    read into `video`. With `remove_input=True`, the input file is deleted too, whatever the
    outcome (use it for uploads saved to a temporary file). `stop()` requests the run to end after the
    frame in progress. The frames done by then are finished into a playable clip.

    After `wait()` returns True, exactly one of these holds: `result` and `video` are set (with
    `result.stopped` telling whether a stop ended it), `error` is set, or `stopped_before_start` is
    True because the stop came before the first frame was written.
    """

    def __init__(
        self,
        entry: ModelEntry,
        dense: nn.Module,
        pruned: nn.Module,
        input_path: str | os.PathLike,
        *,
        remove_input: bool = False,
        **options,
    ):
        self.entry = entry
        self.input_path = Path(input_path)
        self.remove_input = remove_input
        self.result: VideoComparison | None = None
        self.video: bytes | None = None
        self.error: BaseException | None = None
        self.stopped_before_start = False

        self._dense = dense
        self._pruned = pruned
        self._options = options
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._done = 0
        self._total: int | None = None
        self._started_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"video-job-{self.input_path.name}", daemon=True)

    def start(self) -> VideoJob:
        self._started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to end after the frame in progress."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or `timeout` seconds pass; return whether it has ended."""
        return self._finished.wait(timeout)

    def progress(self) -> JobProgress:
        with self._lock:
            done, total = self._done, self._total
        elapsed_s = time.monotonic() - self._started_at if self._started_at is not None else 0.0
        return JobProgress(done, total, elapsed_s, estimate_remaining_s(done, total, elapsed_s))

    def _report(self, done: int, total: int | None) -> None:
        with self._lock:
            self._done, self._total = done, total
        if self._stop.is_set():
            raise StopRequested(f"stopped after {done} frames")

    def _run(self) -> None:
        folder = tempfile.mkdtemp(prefix="pruning-video-")
        try:
            if self._stop.is_set():
                raise StopRequested("stopped before the first frame")
            output = Path(folder) / "dense_vs_pruned.mp4"
            self.result = compare_on_video(
                self.entry, self._dense, self._pruned, self.input_path, output, progress=self._report, **self._options
            )
            self.video = output.read_bytes()
        except StopRequested:
            self.stopped_before_start = True
        except MediaError as error:
            self.error = error
        except Exception as error:  # reported to the page instead of dying silently in the thread
            logger.exception("Video job on %s failed", self.input_path.name)
            self.error = error
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if self.remove_input:
                self.input_path.unlink(missing_ok=True)
            self._finished.set()


# ---------------------------------------------------------------------------------------------
# Frame scrubber
# ---------------------------------------------------------------------------------------------


def read_frame(source: str | os.PathLike | bytes | BinaryIO, time_s: float) -> Image.Image:
    """Decode the first frame of a video shown at or after `time_s` seconds (the last frame if none is).

    `source` is a path, the file's bytes or a binary file-like object. Seeks to the keyframe before
    `time_s` and decodes forward, so the cost does not grow with the frame's position.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    opened = str(source) if isinstance(source, (str, os.PathLike)) else source
    try:
        with av.open(opened, mode="r") as container:
            stream = container.streams.video[0]
            if stream.time_base:
                container.seek(max(0, int(time_s / stream.time_base)), stream=stream, backward=True)
            last: av.VideoFrame | None = None
            # half a millisecond of slack, because times are rounded to the container's time base
            for frame in container.decode(stream):
                last = frame
                if frame.time is not None and frame.time >= time_s - 0.0005:
                    break
    except (av.FFmpegError, IndexError) as error:
        raise MediaError(f"Reading the frame at {time_s:.3f} s failed ({error}).") from error
    if last is None:
        raise MediaError(f"The video has no frame at {time_s:.3f} s.")
    return last.to_image()


def split_panels(composite: Image.Image, panel_width: int) -> tuple[Image.Image, Image.Image]:
    """Cut a side-by-side frame into its dense (left) and pruned (right) halves."""
    height = composite.height
    left = composite.crop((0, 0, panel_width, height))
    right_start = panel_width + PANEL_GAP
    right = composite.crop((right_start, 0, min(composite.width, right_start + panel_width), height))
    return left, right


def wipe_image(dense: Image.Image, pruned: Image.Image, position: float) -> Image.Image:
    """Show `dense` left of a vertical line at `position` (0 to 1 of the width) and `pruned` right of it."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"position must be between 0 and 1, got {position}")
    if pruned.size != dense.size:
        pruned = pruned.resize(dense.size, Image.Resampling.BILINEAR)
    split = round(dense.width * position)
    out = pruned.convert("RGB").copy()
    out.paste(dense.convert("RGB").crop((0, 0, split, dense.height)), (0, 0))

    draw = ImageDraw.Draw(out)
    draw.line([(split, 0), (split, out.height)], fill=(255, 200, 0), width=2)
    font = _caption_font(max(12, out.width // 30))
    for text, anchor, x in (("dense", "ld", 6), ("pruned", "rd", out.width - 6)):
        box = draw.textbbox((x, out.height - 6), text, font=font, anchor=anchor)
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((x, out.height - 6), text, fill=(255, 200, 0), font=font, anchor=anchor)
    return out
