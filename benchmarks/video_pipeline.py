"""Video pipeline benchmark: model speed, pipeline overhead and peak memory against clip length.

Run from the repository root:

    .venv/bin/python benchmarks/video_pipeline.py            # speed on bikes.mp4, then memory
    .venv/bin/python benchmarks/video_pipeline.py --runs 1 --skip-memory

Speed: MobileNetV2, dense and pruned at channel ratio 0.5 (L1, uniform), on every frame of
bikes.mp4 (640×272, 25 fps, 250 frames), with 224×224 model input. The whole pipeline runs
`runs` times after a warm-up and each number is the median over the runs. Overhead is the share of
wall time outside the two models: decoding, preprocessing, drawing and encoding. Each run measures
the pipeline as the dashboard runs it (decoding and encoding in background threads) and, right
after, with everything on one thread; the decode and encode times of the threaded pipeline count
only the time the models' thread waited for them.

Memory: the same pipeline in a fresh process per clip, on bikes.mp4 looped to 10 s and to 60 s
(re-encoded the same way, so the two differ only in length). The loop's peak is the largest RSS
sampled every 20 ms while it runs. The process peak from getrusage includes model loading.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.media import H264Writer, iter_frames, probe_video, sample_video_path
from pruning.tasks import infer, prepare_input
from pruning.video import compare_on_video

THREADS = 2
RATIO = 0.5
WARMUP_FRAMES = 10


def load_models():
    entry = get_model_entry("mobilenet_v2")
    dense = entry.build()
    pruned = prune(dense, PruneConfig("mobilenet_v2", RATIO)).model
    return entry, dense, pruned


def warm_up(entry, dense, pruned, clip: Path) -> None:
    for frame in iter_frames(clip, max_frames=WARMUP_FRAMES):
        inputs = prepare_input(entry, frame.image)
        infer(dense, inputs)
        infer(pruned, inputs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def current_rss_mb() -> float:
    """Resident set size now, from /proc (Linux only)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Sample the current RSS every `interval_s` in a thread and keep the maximum.

    getrusage's peak also counts model loading and pruning, which use more memory than the video
    loop, so the loop's own peak needs sampling. A spike shorter than the interval can be missed.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.max_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.max_mb = max(self.max_mb, current_rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.max_mb = max(self.max_mb, current_rss_mb())


def measure_speed(runs: int) -> dict:
    entry, dense, pruned = load_models()
    clip = sample_video_path("bikes")
    warm_up(entry, dense, pruned, clip)

    rows = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as folder:
        # alternate the two pipelines, so both see the same background load
        for run, background in itertools.product(range(runs), (True, False)):
            result = compare_on_video(entry, dense, pruned, clip, Path(folder) / "out.mp4", background=background)
            frames = result.frames_out
            row = {
                "frames": frames,
                "dense_fps": result.dense_fps,
                "pruned_fps": result.pruned_fps,
                "pipeline_fps": result.pipeline_fps,
                "overhead_share": result.overhead_share,
                "dense_ms": statistics.median(result.dense_ms),
                "pruned_ms": statistics.median(result.pruned_ms),
                "decode_ms": 1000 * result.decode_s / frames,
                "preprocess_ms": 1000 * result.preprocess_s / frames,
                "render_ms": 1000 * result.render_s / frames,
                "encode_ms": 1000 * result.encode_s / frames,
                "wall_ms": 1000 * result.wall_s / frames,
                "output_size": f"{result.width}x{result.height}",
            }
            rows[background].append(row)
            label = "threads" if background else "serial"
            print(f"run {run + 1}/{runs} {label}: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr)

    summaries = {}
    for background, label in ((True, "decode and encode in background threads"), (False, "all on one thread")):
        summary = {key: statistics.median(row[key] for row in rows[background]) for key in rows[background][0] if key != "output_size"}
        summary["output_size"] = rows[background][0]["output_size"]
        summary["runs"] = runs
        summaries[label] = summary
    return summaries


def make_looped_clip(path: Path, seconds: int) -> Path:
    """Re-encode bikes.mp4 (10 s at 25 fps) back to back until the clip lasts `seconds`."""
    source = sample_video_path("bikes")
    info = probe_video(source)
    loops = max(1, round(seconds / info.duration_s))
    with H264Writer(path, fps=info.fps, width=info.width, height=info.height) as writer:
        for _ in range(loops):
            for frame in iter_frames(source):
                writer.write(frame.image)
    return path


def measure_memory_child(clip: Path) -> dict:
    """Run the pipeline over `clip` in this process and return its peak RSS."""
    entry, dense, pruned = load_models()
    warm_up(entry, dense, pruned, clip)
    rss_before_mb = current_rss_mb()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as folder, RssSampler() as sampler:
        result = compare_on_video(entry, dense, pruned, clip, Path(folder) / "out.mp4")
    return {
        "clip_s": round(probe_video(clip).duration_s, 2),
        "frames": result.frames_out,
        "rss_before_loop_mb": round(rss_before_mb, 1),
        "rss_max_during_loop_mb": round(sampler.max_mb, 1),
        "loop_growth_mb": round(sampler.max_mb - rss_before_mb, 1),
        "process_peak_rss_mb": round(peak_rss_mb(), 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "pipeline_fps": round(result.pipeline_fps, 2),
    }


def measure_memory() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-clips-") as folder:
        for seconds in (10, 60):
            clip = make_looped_clip(Path(folder) / f"bikes_{seconds}s.mp4", seconds)
            completed = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(clip)],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(f"memory {seconds} s: {rows[-1]}", file=sys.stderr)
    return rows


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="full passes over bikes.mp4 for the speed medians (default: 3)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads for the models (default: {THREADS})")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the 10 s vs 60 s memory measurement")
    parser.add_argument("--skip-speed", action="store_true", help="leave out the speed measurement")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_child is not None:
        print(json.dumps(measure_memory_child(args.memory_child)))
        return

    report = {"torch_threads": args.threads, "load_average_start": load_average()}
    if not args.skip_speed:
        report["speed"] = measure_speed(args.runs)
    if not args.skip_memory:
        report["memory"] = measure_memory()
    report["load_average_end"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
