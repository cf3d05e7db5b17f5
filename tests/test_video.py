"""compare_on_video, VideoJob and the frame scrubber, with real models and real PyAV encoding."""

import threading

import av
import numpy as np
import pytest
import torch
from clips import (
    decode_output,
    write_clip,
    write_not_a_video,
    write_unusable,
)
from PIL import Image

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.media import MediaError, StopRequested, probe_video, transcode
from pruning.video import (
    DISPLAY_HEIGHT,
    MIN_DISPLAY_HEIGHT,
    PANEL_GAP,
    JobProgress,
    VideoJob,
    compare_on_video,
    display_size,
    estimate_remaining_s,
    read_frame,
    split_panels,
    wipe_image,
)

MOBILENET = get_model_entry("mobilenet_v2")


@pytest.fixture(scope="module")
def pruned_mobilenet(mobilenet):
    return prune(mobilenet, PruneConfig("mobilenet_v2", 0.5)).model


class CountingModel(torch.nn.Module):
    """Wrap a real model, count its calls and run a hook before the call number `on_call`."""

    def __init__(self, model: torch.nn.Module, on_call: int | None = None, hook=None):
        super().__init__()
        self.model = model
        self.calls = 0
        self.on_call = on_call
        self.hook = hook

    def forward(self, inputs):
        self.calls += 1
        if self.hook is not None and self.calls == self.on_call:
            self.hook()
        return self.model(inputs)


def _decoded(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream.codec_context.name, stream.codec_context.pix_fmt, frames


def test_clip_keeps_frame_count_h264(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", width=96, height=64, frames=9, fps=10)
    seen = []
    result = compare_on_video(
        MOBILENET,
        mobilenet,
        pruned_mobilenet,
        source,
        tmp_path / "out.mp4",
        progress=lambda done, total: seen.append((done, total)),
    )
    codec, pix_fmt, frames = _decoded(tmp_path / "out.mp4")
    assert codec == "h264"
    assert pix_fmt == "yuv420p"
    assert len(frames) == 9
    assert result.frames_in == 9
    assert result.frames_out == 9
    assert len(result.dense_ms) == len(result.pruned_ms) == 9
    assert result.dense_fps > 0
    assert result.pruned_fps > 0
    assert 0.0 <= result.mean_agreement <= 1.0
    # side by side: two halves at the display height, which enlarges this small clip
    assert frames[0].height == MIN_DISPLAY_HEIGHT
    assert frames[0].width == 2 * result.panel_width + PANEL_GAP
    assert seen[-1] == (9, 9)
    assert len(result.dense_labels) == len(result.pruned_labels) == 9
    assert result.duration_s == pytest.approx(0.9)


def test_pipeline_timings_add_up(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", frames=4)

    result = compare_on_video(MOBILENET, mobilenet, pruned_mobilenet, source, tmp_path / "out.mp4")

    model_s = (sum(result.dense_ms) + sum(result.pruned_ms)) / 1000.0
    parts_s = result.decode_s + result.preprocess_s + result.render_s + result.encode_s + model_s
    assert 0.0 < result.overhead_share < 1.0
    assert result.pipeline_fps > 0
    assert parts_s <= result.wall_s
    # probing the input before the loop is the only step outside the measured parts
    assert parts_s > 0.5 * result.wall_s


def test_hed_clip_frame_cap(tmp_path, hed):
    pruned = prune(hed, PruneConfig("hed", 0.3)).model
    source = write_clip(tmp_path / "in.mp4", width=63, height=47, frames=8, fps=10)
    result = compare_on_video(get_model_entry("hed"), hed, pruned, source, tmp_path / "out.mp4", max_frames=5)
    _, _, frames = _decoded(tmp_path / "out.mp4")
    assert len(frames) == 5
    assert result.frames_out == 5
    assert result.width % 2 == 0
    assert result.height % 2 == 0
    assert all(0.0 <= score <= 1.0 for score in result.agreement)
    assert result.dense_labels == []


def test_stride_seconds_and_side_caps(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", width=160, height=96, frames=20, fps=10)
    dense = CountingModel(mobilenet)

    result = compare_on_video(
        MOBILENET, dense, pruned_mobilenet, source, tmp_path / "out.mp4", stride=3, max_seconds=1.0, max_side=80
    )

    _, _, frames = _decoded(tmp_path / "out.mp4")
    # frames 0, 3, 6 and 9 start before 1.0 s; the span ends at frame 10
    assert result.frames_out == 4
    assert dense.calls == 4
    assert result.frame_times_s == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert [float(frame.time) for frame in frames] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert result.duration_s == pytest.approx(1.0)
    assert probe_video(tmp_path / "out.mp4").duration_s == pytest.approx(1.0, abs=1e-3)


def test_max_side_reaches_the_model(tmp_path, hed):
    pruned = prune(hed, PruneConfig("hed", 0.3)).model
    source = write_clip(tmp_path / "in.mp4", width=160, height=96, frames=2)
    shapes = []
    hook = hed.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape[-2:])))
    try:
        compare_on_video(get_model_entry("hed"), hed, pruned, source, tmp_path / "out.mp4", max_side=64)
    finally:
        hook.remove()

    # HED gets the frame at its own size: 160×96 shrunk to a longer side of 64
    assert shapes == [(38, 64), (38, 64)]


def test_rotated_clip_is_upright(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "phone.mp4", width=96, height=64, frames=3, rotation=90)

    result = compare_on_video(MOBILENET, mobilenet, pruned_mobilenet, source, tmp_path / "out.mp4")

    dense_half, _ = split_panels(read_frame(tmp_path / "out.mp4", 0.0), result.panel_width)
    pixels = np.asarray(dense_half)
    # portrait panels: 64×96 upright, enlarged to the minimum display height
    assert result.height == MIN_DISPLAY_HEIGHT
    assert result.panel_width == round(64 * MIN_DISPLAY_HEIGHT / 96)
    # the square stored at the top left shows at the bottom left after one 90 degree turn
    assert pixels[-10:, :10].mean() > 150
    assert pixels[-10:, -10:].mean() < 60


@pytest.mark.parametrize("kind", ["audio only", "zero bytes", "text"])
def test_unusable_input_rejected_before_inference(tmp_path, mobilenet, pruned_mobilenet, kind):
    path = tmp_path / "input.mp4"
    write_unusable(path, kind)
    dense = CountingModel(mobilenet)
    pruned = CountingModel(pruned_mobilenet)

    with pytest.raises(MediaError) as raised:
        compare_on_video(MOBILENET, dense, pruned, path, tmp_path / "out.mp4")

    assert dense.calls == 0
    assert pruned.calls == 0
    assert "input.mp4" in str(raised.value)
    assert not (tmp_path / "out.mp4").exists()


def test_stop_keeps_finished_frames(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", frames=10)

    def stop_after_three(done, total):
        if done == 3:
            raise StopRequested

    result = compare_on_video(MOBILENET, mobilenet, pruned_mobilenet, source, tmp_path / "out.mp4", progress=stop_after_three)

    _, _, frames = _decoded(tmp_path / "out.mp4")
    assert result.stopped
    assert result.frames_out == 3
    assert len(frames) == 3
    assert len(result.dense_ms) == len(result.agreement) == len(result.frame_times_s) == 3
    assert result.duration_s == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------
# VideoJob
# ---------------------------------------------------------------------------------------------


def test_job_stop_keeps_partial_clip(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "upload.mp4", frames=12)
    holder = {}
    # the dense model requests the job to stop as its fourth frame starts, so frame 4 is the last one
    dense = CountingModel(mobilenet, on_call=4, hook=lambda: holder["job"].stop())
    job = VideoJob(MOBILENET, dense, pruned_mobilenet, source, remove_input=True)
    holder["job"] = job

    job.start()
    assert job.wait(timeout=120)

    assert job.error is None
    assert job.result is not None
    assert job.result.stopped
    assert job.result.frames_out == 4
    assert job.video[4:8] == b"ftyp"
    assert not source.exists()
    assert job.progress().done == 4


def test_job_runs_to_end_with_options(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", frames=12)
    job = VideoJob(MOBILENET, mobilenet, pruned_mobilenet, source, stride=2, max_frames=3)

    job.start()
    assert job.wait(timeout=120)

    assert job.error is None
    assert not job.result.stopped
    assert job.result.frames_out == 3
    assert job.progress().done == 3
    assert job.progress().total == 3
    assert job.progress().share == 1.0
    # without remove_input the caller's file stays
    assert source.exists()
    output = tmp_path / "copy.mp4"
    output.write_bytes(job.video)
    assert len(decode_output(output)[1]) == 3


def test_job_bad_input_sets_error_and_removes_it(tmp_path, mobilenet, pruned_mobilenet):
    source = write_not_a_video(tmp_path / "upload.mp4")
    job = VideoJob(MOBILENET, mobilenet, pruned_mobilenet, source, remove_input=True)

    job.start()
    assert job.wait(timeout=60)

    assert isinstance(job.error, MediaError)
    assert job.result is None
    assert job.video is None
    assert not source.exists()


def test_job_stopped_before_start(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", frames=3)
    dense = CountingModel(mobilenet)
    job = VideoJob(MOBILENET, dense, pruned_mobilenet, source)

    job.stop()
    job.start()
    assert job.wait(timeout=60)

    assert job.stopped_before_start
    assert job.result is None
    assert job.error is None
    assert dense.calls == 0


def test_job_progress_reports_while_running(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", frames=8)
    reached_third = threading.Event()
    release = threading.Event()

    def pause_on_third_frame():
        reached_third.set()
        release.wait(timeout=60)

    dense = CountingModel(mobilenet, on_call=3, hook=pause_on_third_frame)
    job = VideoJob(MOBILENET, dense, pruned_mobilenet, source).start()
    try:
        assert reached_third.wait(timeout=60)
        snapshot = job.progress()
    finally:
        release.set()
    assert job.wait(timeout=120)

    assert snapshot.done == 2
    assert snapshot.total == 8
    assert snapshot.remaining_s is not None
    assert snapshot.remaining_s > 0


def test_estimate_remaining_time():
    assert estimate_remaining_s(done=2, total=10, elapsed_s=4.0) == pytest.approx(16.0)
    assert estimate_remaining_s(done=10, total=10, elapsed_s=4.0) == 0.0
    assert estimate_remaining_s(done=12, total=10, elapsed_s=4.0) == 0.0
    assert estimate_remaining_s(done=0, total=10, elapsed_s=4.0) is None
    assert estimate_remaining_s(done=3, total=None, elapsed_s=4.0) is None
    assert JobProgress(done=3, total=None, elapsed_s=1.0, remaining_s=None).share == 0.0
    assert JobProgress(done=3, total=0, elapsed_s=1.0, remaining_s=None).share == 0.0


# ---------------------------------------------------------------------------------------------
# display and frame scrubber
# ---------------------------------------------------------------------------------------------


def test_display_size_limits():
    assert display_size(Image.new("RGB", (1280, 720))).size == (640, DISPLAY_HEIGHT)
    assert display_size(Image.new("RGB", (64, 48))).size == (320, MIN_DISPLAY_HEIGHT)
    assert display_size(Image.new("RGB", (640, 272))).size == (640, 272)


def test_read_frame_by_time(tmp_path):
    source = write_clip(tmp_path / "in.mp4", frames=12)
    output = tmp_path / "out.mp4"

    transcode(source, output, lambda frame: frame.image)

    data = output.read_bytes()
    seventh = np.asarray(read_frame(data, 0.7))
    last = np.asarray(read_frame(output, 99.0))
    # the square's left edge sits at x = 7 in frame 7 and at x = 11 in the last frame
    assert seventh[2, 8:14].min() > 180
    assert seventh[2, 2:5].max() < 60
    assert last[2, 12:18].min() > 180
    assert last[2, 5:9].max() < 60


def test_read_frame_rejects_garbage():
    with pytest.raises(MediaError):
        read_frame(b"not a video at all" * 10, 0.0)


def test_split_and_wipe():
    dense = Image.new("RGB", (100, 40), (255, 0, 0))
    pruned = Image.new("RGB", (100, 40), (0, 0, 255))
    composite = Image.new("RGB", (200 + PANEL_GAP, 40))
    composite.paste(dense, (0, 0))
    composite.paste(pruned, (100 + PANEL_GAP, 0))

    left, right = split_panels(composite, 100)
    wiped = wipe_image(left, right, 0.3)

    assert left.getpixel((50, 20)) == (255, 0, 0)
    assert right.getpixel((50, 20)) == (0, 0, 255)
    assert wiped.size == (100, 40)
    assert wiped.getpixel((10, 10)) == (255, 0, 0)
    assert wiped.getpixel((80, 10)) == (0, 0, 255)
    with pytest.raises(ValueError, match="position"):
        wipe_image(left, right, 1.5)


def test_segmentation_clip_overlays(tmp_path):
    entry = get_model_entry("lraspp_mobilenet_v3_large")
    dense = entry.build()
    pruned = prune(dense, PruneConfig(entry.name, 0.3)).model
    source = write_clip(tmp_path / "in.mp4", width=96, height=64, frames=4, fps=10)
    result = compare_on_video(entry, dense, pruned, source, tmp_path / "out.mp4")
    _, _, frames = _decoded(tmp_path / "out.mp4")
    assert len(frames) == result.frames_out == 4
    assert all(0.0 <= score <= 1.0 for score in result.agreement)  # mIoU of the two class maps
    assert result.dense_labels == []


def test_segmentation_panel_colours_classes():
    from pruning.video import _render_panel

    entry = get_model_entry("lraspp_mobilenet_v3_large")
    frame = Image.new("RGB", (40, 30), (0, 0, 0))
    scores = torch.zeros(1, 21, 30, 40)
    scores[0, 15, :, 20:] = 1.0  # "person" on the right half, background on the left
    panel = np.asarray(_render_panel(entry, frame, scores, []))
    assert panel[:, :20].max() == 0  # background keeps the frame's pixels
    assert panel[15, 30].max() > 0  # the person's pixels get the class colour


def test_untrained_frame_label_names_no_class():
    from pruning.video import _top1_label

    entry = get_model_entry("resnet18")
    logits = torch.zeros(1, 1000)
    logits[0, 281] = 5.0
    assert _top1_label(entry, logits, predicts=False) == "untrained: output 281"
    assert _top1_label(entry, logits).startswith("tabby ")
