import av
import pytest

from clips import write_clip
from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.media import MediaError
from pruning.video import DISPLAY_HEIGHT, compare_on_video


@pytest.fixture(scope="module")
def pruned_mobilenet(mobilenet):
    return prune(mobilenet, PruneConfig("mobilenet_v2", 0.5)).model


def _decoded(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream.codec_context.name, stream.codec_context.pix_fmt, frames


def test_clip_keeps_frame_count_h264(tmp_path, mobilenet, pruned_mobilenet):
    source = write_clip(tmp_path / "in.mp4", width=96, height=64, frames=9, fps=10)
    seen = []
    result = compare_on_video(
        get_model_entry("mobilenet_v2"),
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
    assert result.dense_fps > 0 and result.pruned_fps > 0
    assert 0.0 <= result.mean_agreement <= 1.0
    # side by side: two halves at the display height
    assert frames[0].height == DISPLAY_HEIGHT
    assert frames[0].width > 2 * DISPLAY_HEIGHT
    assert seen[-1][0] == 9


def test_hed_clip_frame_cap(tmp_path, hed):
    pruned = prune(hed, PruneConfig("hed", 0.3)).model
    source = write_clip(tmp_path / "in.mp4", width=63, height=47, frames=8, fps=10)
    result = compare_on_video(get_model_entry("hed"), hed, pruned, source, tmp_path / "out.mp4", max_frames=5)
    _, _, frames = _decoded(tmp_path / "out.mp4")
    assert len(frames) == 5
    assert result.frames_out == 5
    assert result.width % 2 == 0 and result.height % 2 == 0
    assert all(0.0 <= score <= 1.0 for score in result.agreement)


def test_not_a_video_rejected(tmp_path, mobilenet, pruned_mobilenet):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(MediaError):
        compare_on_video(get_model_entry("mobilenet_v2"), mobilenet, pruned_mobilenet, bad, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
