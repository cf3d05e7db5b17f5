import numpy as np
import pytest
import torch
from conftest import assert_same_state, state_snapshot
from torch import nn

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.gallery import (
    GAP_COLOUR,
    REMOVED_FILL,
    REMOVED_MARK,
    conv_layers,
    feature_map_grid,
    feature_maps,
    filter_grid,
    first_conv,
    pruned_feature_maps_in_dense_order,
    removed_channels,
    removed_from_kept,
)
from pruning.media import load_sample_image
from pruning.recovery import kept_output_channels
from pruning.tasks import prepare_input

ENTRY = get_model_entry("mobilenet_v2")
MID_GREY = 128


@pytest.fixture(scope="module")
def inputs():
    return prepare_input(ENTRY, load_sample_image("chelsea"))


@pytest.fixture(scope="module")
def half_pruned(mobilenet, mobilenet_l1):
    """MobileNetV2 with half of the channels of every group removed by L1 norm, and its kept channels."""
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.5, "l1"), analysis=mobilenet_l1)
    return result, kept_output_channels(mobilenet_l1, result.plan)


def _tile(image, index, *, tile_width, tile_height, columns, gap=2):
    """Cut tile `index` out of a grid image as an (h, w, 3) array."""
    row, column = divmod(index, columns)
    left = column * (tile_width + gap)
    top = row * (tile_height + gap)
    return np.asarray(image)[top : top + tile_height, left : left + tile_width]


def _is_removed_tile(pixels: np.ndarray) -> bool:
    colours = {tuple(colour) for colour in pixels.reshape(-1, 3).tolist()}
    return colours == {REMOVED_FILL, REMOVED_MARK}


# --- layers and feature maps ---------------------------------------------------------------------

def test_conv_layers_mobilenet(mobilenet):
    names = conv_layers(mobilenet)
    modules = dict(mobilenet.named_modules())
    assert len(names) == 52
    assert names[0] == "features.0.0"
    assert names[-1] == "features.18.0"
    assert all(isinstance(modules[name], nn.Conv2d) for name in names)
    assert first_conv(mobilenet) == "features.0.0"


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_conv_layers_forward_order(name, base_models):
    model = base_models[name]
    order = []
    handles = [
        module.register_forward_hook(lambda module, args, output, layer=layer: order.append(layer))
        for layer, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, 64, 64))
    finally:
        for handle in handles:
            handle.remove()
    assert order == conv_layers(model)


def test_first_conv_without_conv():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_feature_maps_shape_and_early_stop(mobilenet, inputs):
    snapshot = state_snapshot(mobilenet)
    classifier_calls = []
    handle = mobilenet.classifier.register_forward_hook(lambda module, args, output: classifier_calls.append(1))
    try:
        maps = feature_maps(mobilenet, "features.0.0", inputs)
    finally:
        handle.remove()

    assert maps.shape == (32, 112, 112)
    assert not maps.is_inference()
    assert classifier_calls == []  # the pass stopped after the captured layer
    assert_same_state(mobilenet, snapshot)
    assert all(not module._forward_hooks for module in mobilenet.modules())
    assert not mobilenet.training


def test_feature_maps_rejects_bad_arguments(mobilenet, inputs):
    with pytest.raises(ValueError, match="not found"):
        feature_maps(mobilenet, "features.99", inputs)
    with pytest.raises(ValueError, match="4-D"):
        feature_maps(mobilenet, "classifier.1", inputs)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        feature_maps(mobilenet, "features.0.0", inputs.expand(2, -1, -1, -1))
    assert all(not module._forward_hooks for module in mobilenet.modules())

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    with pytest.raises(ValueError, match="training mode"):
        feature_maps(model, "0", torch.zeros(1, 3, 8, 8))
    assert model.training


# --- kept channels on a real prune ---------------------------------------------------------------

# The first conv, its BatchNorm + ReLU6 output and the depthwise conv that follows all share one
# dependency group, and none of them has lost input channels, so their kept maps are unchanged.
FIRST_GROUP_LAYERS = ["features.0.0", "features.0", "features.1.conv.0.0"]


@pytest.mark.parametrize("layer", FIRST_GROUP_LAYERS)
def test_pruned_maps_equal_dense_kept(mobilenet, half_pruned, inputs, layer):
    result, kept = half_pruned
    first = kept["features.0.0"]
    dense_maps = feature_maps(mobilenet, layer, inputs)
    pruned_maps = feature_maps(result.model, layer, inputs)

    assert len(first) == 16
    assert pruned_maps.shape == (16, 112, 112)
    assert torch.equal(pruned_maps, dense_maps[first])


def test_removed_channels_match_plan(mobilenet, mobilenet_l1, half_pruned):
    result, kept = half_pruned
    # the plan names each group by its root layer, here the depthwise conv after features.0.0
    group = next(group for group in mobilenet_l1.groups if "features.0.0 (out)" in group.members)
    removed = removed_channels(mobilenet, result.model, "features.0.0", kept)
    assert removed == set(result.plan.remove[group.name])
    assert len(removed) == 16

    kept_weights = mobilenet.features[0][0].weight[kept["features.0.0"]]
    assert torch.equal(result.model.features[0][0].weight, kept_weights)


def test_removed_channels_every_conv(mobilenet, half_pruned):
    result, kept = half_pruned
    pruned_modules = dict(result.model.named_modules())
    for layer in conv_layers(mobilenet):
        removed = removed_channels(mobilenet, result.model, layer, kept)
        dense_channels = dict(mobilenet.named_modules())[layer].out_channels
        assert dense_channels - len(removed) == pruned_modules[layer].out_channels, layer


def test_removed_channels_layer_missing_from_kept(mobilenet, half_pruned):
    result, _ = half_pruned
    assert removed_channels(mobilenet, mobilenet, "features.0.0", {}) == set()
    with pytest.raises(ValueError, match="no entry"):
        removed_channels(mobilenet, result.model, "features.0.0", {})


def test_removed_channels_other_plan(mobilenet, mobilenet_l1, half_pruned):
    result, _ = half_pruned
    other = prune(mobilenet, PruneConfig("mobilenet_v2", 0.25, "l1"), analysis=mobilenet_l1)
    other_kept = kept_output_channels(mobilenet_l1, other.plan)
    with pytest.raises(ValueError, match="another plan"):
        removed_channels(mobilenet, result.model, "features.0.0", other_kept)
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        removed_channels(mobilenet, result.model, "classifier.1", other_kept)


def test_removed_from_kept():
    assert removed_from_kept(6, [0, 2, 5]) == {1, 3, 4}
    assert removed_from_kept(3, []) == {0, 1, 2}
    with pytest.raises(ValueError, match="strictly increasing"):
        removed_from_kept(6, [2, 0])
    with pytest.raises(ValueError, match="strictly increasing"):
        removed_from_kept(6, [1, 1])
    with pytest.raises(ValueError, match="between 0 and 5"):
        removed_from_kept(6, [0, 6])


def test_dense_order_places_kept_maps(mobilenet, half_pruned, inputs):
    result, kept = half_pruned
    first = kept["features.0.0"]
    dense_maps = feature_maps(mobilenet, "features.0.0", inputs)
    pruned_maps = feature_maps(result.model, "features.0.0", inputs)

    aligned = pruned_feature_maps_in_dense_order(pruned_maps, first, 32)

    assert aligned.shape == dense_maps.shape
    assert torch.equal(aligned[first], dense_maps[first])
    removed = sorted(removed_from_kept(32, first))
    assert torch.count_nonzero(aligned[removed]) == 0


def test_dense_order_rejects_mismatch():
    with pytest.raises(ValueError, match="kept channels"):
        pruned_feature_maps_in_dense_order(torch.zeros(3, 4, 4), [0, 1], 5)
    with pytest.raises(ValueError, match="between 0 and 4"):
        pruned_feature_maps_in_dense_order(torch.zeros(2, 4, 4), [0, 5], 5)


# --- filter_grid ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("filters", "tile", "columns", "size"),
    [
        (32, 24, 16, (16 * 24 + 15 * 2, 2 * 24 + 2)),
        (20, 10, 8, (8 * 10 + 7 * 2, 3 * 10 + 2 * 2)),
        (5, 24, 16, (5 * 24 + 4 * 2, 24)),  # fewer filters than columns
    ],
)
def test_filter_grid_size(filters, tile, columns, size):
    image = filter_grid(torch.randn(filters, 3, 3, 3), tile=tile, columns=columns)
    assert image.size == size
    assert image.mode == "RGB"


def test_filter_grid_gap_colour():
    image = np.asarray(filter_grid(torch.randn(4, 3, 3, 3), tile=6, columns=2))
    assert np.all(image[6:8] == GAP_COLOUR)  # the row gap
    assert np.all(image[:, 6:8] == GAP_COLOUR)  # the column gap


def test_filter_grid_colours():
    weight = torch.zeros(3, 3, 3, 3)
    weight[1, 0] = 0.5  # red input channel only
    weight[2, :, 0, 0] = -1.0  # one black pixel
    image = filter_grid(weight, tile=9, columns=3)
    layout = {"tile_width": 9, "tile_height": 9, "columns": 3}

    assert np.all(_tile(image, 0, **layout) == MID_GREY)  # all-zero filter
    assert np.all(_tile(image, 1, **layout) == (255, MID_GREY, MID_GREY))
    corner = _tile(image, 2, **layout)
    assert np.all(corner[:3, :3] == 0)  # 3×3 kernel on 9 px: 3 px blocks
    assert np.all(corner[3:, 3:] == MID_GREY)


def test_filter_grid_greyscale_mean():
    weight = torch.zeros(2, 4, 1, 1)
    weight[0] = torch.tensor([1.0, 1.0, -1.0, 1.0]).view(4, 1, 1)  # mean 0.5, its own maximum
    weight[1] = torch.tensor([-2.0, 0.0, 0.0, 0.0]).view(4, 1, 1)  # mean -0.5
    image = filter_grid(weight, tile=4, columns=2)
    layout = {"tile_width": 4, "tile_height": 4, "columns": 2}
    assert np.all(_tile(image, 0, **layout) == 255)
    assert np.all(_tile(image, 1, **layout) == 0)


def test_filter_grid_shared_scale():
    weight = torch.zeros(2, 1, 1, 1)
    weight[0] = 1.0
    weight[1] = 0.1
    layout = {"tile_width": 4, "tile_height": 4, "columns": 2}
    own_scale = filter_grid(weight, tile=4, columns=2)
    shared = filter_grid(weight, tile=4, columns=2, shared_scale=True)
    assert np.all(_tile(own_scale, 1, **layout) == 255)
    assert np.all(_tile(shared, 1, **layout) == round((0.1 * 0.5 + 0.5) * 255))


def test_filter_grid_removed_tiles(mobilenet, half_pruned):
    result, kept = half_pruned
    weight = mobilenet.features[0][0].weight
    removed = removed_channels(mobilenet, result.model, "features.0.0", kept)
    image = filter_grid(weight, removed, tile=24, columns=8)
    layout = {"tile_width": 24, "tile_height": 24, "columns": 8}

    for index in range(32):
        is_removed = _is_removed_tile(_tile(image, index, **layout))
        assert is_removed == (index in removed), index


def test_filter_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="outside 0..3"):
        filter_grid(torch.randn(4, 3, 3, 3), {4})
    with pytest.raises(ValueError, match="C_out, C_in, kh, kw"):
        filter_grid(torch.randn(4, 3, 3))
    with pytest.raises(ValueError, match="at least 1"):
        filter_grid(torch.randn(4, 3, 3, 3), tile=0)


# --- feature_map_grid ----------------------------------------------------------------------------

def test_feature_map_grid_size():
    image = feature_map_grid(torch.randn(10, 7, 7), tile=16, columns=4)
    assert image.size == (4 * 16 + 3 * 2, 3 * 16 + 2 * 2)
    assert image.mode == "RGB"

    wide = feature_map_grid(torch.randn(3, 10, 20), tile=40, columns=8)
    assert wide.size == (3 * 40 + 2 * 2, 20)  # tiles keep the 2:1 aspect ratio


def test_feature_map_grid_max_maps():
    image = feature_map_grid(torch.randn(100, 4, 4), tile=8, columns=8, max_maps=64)
    assert image.size == (8 * 8 + 7 * 2, 8 * 8 + 7 * 2)  # 64 tiles, 8 rows


def test_feature_map_grid_normalises_each_map():
    maps = torch.zeros(3, 2, 2)
    maps[0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    maps[1] = torch.tensor([[-100.0, 0.0], [0.0, 100.0]])
    maps[2] = 5.0  # constant
    image = feature_map_grid(maps, tile=2, columns=3)
    layout = {"tile_width": 2, "tile_height": 2, "columns": 3}

    first = _tile(image, 0, **layout)[..., 0]
    assert first.min() == 0
    assert first.max() == 255
    second = _tile(image, 1, **layout)[..., 0]
    assert second.tolist() == [[0, 128], [128, 255]]
    assert np.all(_tile(image, 2, **layout) == 0)


def test_feature_map_grid_removed_tiles(mobilenet, half_pruned, inputs):
    result, kept = half_pruned
    first = kept["features.0.0"]
    removed = removed_from_kept(32, first)
    aligned = pruned_feature_maps_in_dense_order(feature_maps(result.model, "features.0.0", inputs), first, 32)
    # 112 px tiles show the 112×112 maps unscaled, so each kept map spans black to white
    image = feature_map_grid(aligned, removed, tile=112, columns=8)
    layout = {"tile_width": 112, "tile_height": 112, "columns": 8}

    for index in range(32):
        pixels = _tile(image, index, **layout)
        assert _is_removed_tile(pixels) == (index in removed), index
        if index not in removed:
            assert np.all(pixels[..., 0] == pixels[..., 1])  # greyscale
            assert pixels.min() == 0
            assert pixels.max() == 255


def test_feature_map_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_maps"):
        feature_map_grid(torch.randn(4, 3, 3), max_maps=0)
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        feature_map_grid(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="outside 0..3"):
        feature_map_grid(torch.randn(4, 3, 3), {-1})
