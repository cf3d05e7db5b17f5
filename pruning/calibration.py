"""Calibration and held-out image sets built from the shipped photos and video clips.

Data-driven criteria (Taylor), sensitivity scans and recovery learn from the calibration set.
Fidelity is reported on the held-out set, which shares no frame or photo with it.
"""

from __future__ import annotations

import functools
import importlib.util
import random
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from .catalog import ModelEntry
from .media import (
    iter_frames,
    load_image,
    load_sample_image,
    sample_image_names,
    sample_video_path,
)

# Photos bundled in scikit-image that do not download on demand; greyscale ones become RGB.
_EXTRA_PHOTOS = ("camera.png", "coins.png", "hubble_deep_field.jpg", "retina.jpg", "motorcycle_right.png")

CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
HOLDOUT_PHOTOS = ("motorcycle", "china", "flower")


def _skimage_photo(filename: str) -> Image.Image:
    spec = importlib.util.find_spec("skimage")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return load_image(folder / filename)


def _frames(clip: str, *, offset: int, stride: int, count: int) -> list[Image.Image]:
    """Frames offset, offset + stride, ... of a sample clip, at most `count` of them."""
    frames = []
    for frame in iter_frames(sample_video_path(clip)):
        if frame.index >= offset and (frame.index - offset) % stride == 0:
            frames.append(frame.image)
            if len(frames) == count:
                break
    return frames


# Both sets draw frames from both clips, interleaved so that no frame is in both: calibrating on
# one clip and testing on the other measures the change of scene more than the pruning.
def calibration_images(entry: ModelEntry | None = None) -> tuple[Image.Image, ...]:
    """Return the calibration images of `entry`: its own set when it has one (digits), else the shipped set."""
    if entry is not None and entry.calibration_images is not None:
        return entry.calibration_images()
    return _shipped_calibration_images()


def holdout_images(entry: ModelEntry | None = None) -> tuple[Image.Image, ...]:
    """Return the held-out images of `entry`: its own set when it has one (digits), else the shipped set."""
    if entry is not None and entry.holdout_images is not None:
        return entry.holdout_images()
    return _shipped_holdout_images()


@functools.lru_cache(maxsize=2)
def _shipped_calibration_images() -> tuple[Image.Image, ...]:
    """Shipped photos plus frames 0, 8, 16, ... of the street clip and 0, 4, 8, ... of the animated film."""
    images = [load_sample_image(name) for name in CALIBRATION_PHOTOS]
    images += _frames("bikes", offset=0, stride=8, count=32)
    images += _frames("bigbuckbunny", offset=0, stride=4, count=33)
    return tuple(images)


@functools.lru_cache(maxsize=2)
def _shipped_holdout_images() -> tuple[Image.Image, ...]:
    """Photos and frames that the calibration set does not contain (frames 4, 12, ... and 2, 6, ...)."""
    images = [load_sample_image(name) for name in HOLDOUT_PHOTOS]
    images += [_skimage_photo(filename) for filename in _EXTRA_PHOTOS]
    images += _frames("bikes", offset=4, stride=8, count=31)
    images += _frames("bigbuckbunny", offset=2, stride=4, count=33)
    return tuple(images)


def to_batch(entry: ModelEntry, images: tuple[Image.Image, ...] | list[Image.Image]) -> torch.Tensor:
    """Stack images into one input batch at the entry's example size (N, 3, H, W)."""
    height, width = entry.example_input_shape[-2:]
    tensors = []
    for image in images:
        if entry.max_input_side is not None:
            # models that keep the input size (edges) get a centre crop at the example size
            image = ImageOps.fit(image.convert("RGB"), (width, height))
        tensors.append(entry.preprocess(image))
    return torch.cat(tensors)


def augmented_batch(entry: ModelEntry, images, count: int, *, seed: int = 0) -> torch.Tensor:
    """`count` random crops and flips of `images`, preprocessed for `entry` (N, 3, H, W)."""
    height, width = entry.example_input_shape[-2:]
    augment = v2.Compose([v2.RandomResizedCrop((height, width), scale=(0.3, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    rng = random.Random(seed)
    torch.manual_seed(seed)
    return torch.cat([entry.preprocess(augment(rng.choice(images))) for _ in range(count)])


def example_names(entry: ModelEntry) -> list[str]:
    """Return the names of the example images shown for `entry`: its own (digits) or the shipped photos."""
    if entry.sample_images is not None:
        return list(entry.sample_images())
    return sample_image_names()


def load_example(entry: ModelEntry, name: str) -> Image.Image:
    """Load example image `name` of `entry`; raise KeyError naming the choices when it is unknown."""
    if entry.sample_images is not None:
        images = entry.sample_images()
        if name not in images:
            raise KeyError(f"unknown example {name!r} for {entry.name}; choose one of: {', '.join(images)}")
        return images[name]
    return load_sample_image(name)
