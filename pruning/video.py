"""Dense vs pruned on a video clip: both models run on every frame, the output is a side-by-side H.264 clip."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from torch import nn

from .catalog import TASK_CLASSIFICATION, ModelEntry
from .media import VideoFrame, transcode
from .tasks import fit_to_side, infer, output_fidelity, prepare_input, render_output, side_by_side

# Height of each half of the side-by-side output: big enough to read the captions, small enough
# to keep encoding cheap next to inference.
DISPLAY_HEIGHT = 360


@dataclass
class VideoComparison:
    """Outcome of running dense and pruned models over a clip."""

    frames_in: int
    frames_out: int
    dense_ms: list[float] = field(default_factory=list)  # per-frame model latency
    pruned_ms: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)  # per frame: same top-1 (0/1), or edge F1
    output_path: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    output_fps: float = 0.0

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
        return self._fps(self.pruned_ms)

    @property
    def mean_agreement(self) -> float:
        return statistics.fmean(self.agreement) if self.agreement else 0.0


def _display_size(image: Image.Image) -> Image.Image:
    if image.height == DISPLAY_HEIGHT:
        return image
    width = max(2, round(image.width * DISPLAY_HEIGHT / image.height))
    return image.resize((width, DISPLAY_HEIGHT), Image.Resampling.BILINEAR)


def compare_on_video(
    entry: ModelEntry,
    dense: nn.Module,
    pruned: nn.Module,
    input_path: str | Path,
    output_path: str | Path,
    *,
    max_frames: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoComparison:
    """Run both models on each frame of `input_path` and write dense | pruned to `output_path` (H.264)."""
    result = VideoComparison(frames_in=0, frames_out=0)

    def render(frame: VideoFrame) -> Image.Image:
        inputs = prepare_input(entry, frame.image)

        started = time.perf_counter()
        dense_output = infer(dense, inputs)
        middle = time.perf_counter()
        pruned_output = infer(pruned, inputs)
        finished = time.perf_counter()
        result.dense_ms.append((middle - started) * 1000.0)
        result.pruned_ms.append((finished - middle) * 1000.0)

        fidelity = output_fidelity(entry, dense_output, pruned_output)
        score = fidelity["top1_agreement"] if entry.task == TASK_CLASSIFICATION else fidelity["edge_f1"]
        result.agreement.append(score)

        shown = _display_size(fit_to_side(frame.image, None))
        left = render_output(entry, shown, dense_output, f"dense  {result.dense_fps:.1f} fps")
        right = render_output(entry, shown, pruned_output, f"pruned  {result.pruned_fps:.1f} fps")
        return side_by_side(left, right)

    transcoded = transcode(input_path, output_path, render, max_frames=max_frames, progress=progress)
    result.frames_in = transcoded.frames_in
    result.frames_out = transcoded.frames_out
    result.output_path = str(transcoded.output_path)
    result.codec = transcoded.codec
    result.width = transcoded.width
    result.height = transcoded.height
    result.output_fps = transcoded.fps
    return result
