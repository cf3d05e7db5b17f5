"""Property-based checks: every image Pillow can write reaches the models as a correct RGB tensor."""

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pruning.catalog import get_model_entry
from pruning.media import load_image
from pruning.tasks import prepare_input

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
# Pillow 13 writes 32-bit integer (I) images only as TIFF, not PNG.
FORMATS = {"PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}, "TIFF": set(MODES), "JPEG": {"L", "RGB", "CMYK"}}


@st.composite
def encoded_images(draw):
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from([name for name, modes in FORMATS.items() if mode in modes]))
    width = draw(st.integers(1, 48))
    height = draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert("RGB" if mode in {"I;16", "I", "F"} else mode)
    if mode in {"I;16", "I", "F"}:
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.int32) * 200, "I").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return mode, fmt, (width, height), buffer.getvalue()


@settings(max_examples=60, deadline=None)
@given(encoded_images())
def test_any_mode_loads_as_rgb(case):
    mode, fmt, size, data = case
    image = load_image(data)
    assert image.mode == "RGB", (mode, fmt)
    assert image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8
    assert array.shape == (size[1], size[0], 3)


@settings(max_examples=20, deadline=None)
@given(encoded_images())
def test_any_image_makes_valid_model_input(case):
    _, _, _, data = case
    image = load_image(data)
    for name in ("mobilenet_v2", "hed"):
        entry = get_model_entry(name)
        inputs = prepare_input(entry, image)
        assert inputs.dim() == 4
        assert inputs.shape[:2] == (1, 3)
        assert np.isfinite(inputs.numpy()).all()
