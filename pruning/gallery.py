"""Filter and feature-map galleries: conv kernels and activations drawn as grids of tiles.

Removed channels are drawn as a dark tile with a red cross, so dense and pruned grids can be
shown side by side with the same channel in the same place.

Which dense channels a pruned layer kept comes from the pruning plan, through
`pruning.recovery.kept_output_channels(analysis, plan)`, and not from the weights. Only the first
conv keeps its filters exactly as they were, because later layers also lose input channels.
Equal filters, such as several all-zero ones, could not be distinguished by their weights anyway.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

GAP = 2  # pixels between tiles
GAP_COLOUR = (255, 255, 255)
REMOVED_FILL = (48, 48, 48)  # background of the tile of a removed channel
REMOVED_MARK = (220, 50, 50)  # the cross drawn over it


# --- layers --------------------------------------------------------------------------------------

def conv_layers(model: nn.Module) -> list[str]:
    """List the names of the model's nn.Conv2d modules in registration order.

    Registration order is the forward order for both catalogue models, MobileNetV2 and HED, and
    a test checks it. NOTE: a model whose forward() calls its convs in another order would differ.
    """
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def first_conv(model: nn.Module) -> str:
    """Return the name of the model's first nn.Conv2d, the one applied to the input image."""
    names = conv_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer")
    return names[0]


class _Captured(Exception):
    """Raised by the capture hook to end the forward pass once the layer has run."""


def feature_maps(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """Run `model` on one image (1, C, H, W) and return the output of `layer` as a (channels, h, w) tensor.

    The forward pass stops right after the first call of `layer`, so the layers after it do not
    run. The model must be in eval mode, because a forward pass in training mode would update the
    BatchNorm statistics of a model that other callers share.
    """
    if model.training:
        raise ValueError("the model is in training mode. Call model.eval() first.")
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, C, H, W) tensor, got shape {tuple(inputs.shape)}")
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise ValueError(f"layer {layer!r} not found in the model. Use a module name such as {first_conv(model)!r}.")

    captured: list[torch.Tensor] = []

    def capture(module, args, output):
        captured.append(output)
        raise _Captured

    handle = modules[layer].register_forward_hook(capture)
    try:
        with torch.inference_mode():
            model(inputs)
    except _Captured:
        pass
    finally:
        handle.remove()

    if not captured:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    output = captured[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise ValueError(f"layer {layer!r} must output a 4-D feature map, got {type(output).__name__}")
    # A clone made outside inference_mode is an ordinary tensor, which callers may modify in place.
    return output[0].clone()


# --- kept and removed channels -------------------------------------------------------------------

def _check_kept(channels: int, kept: Sequence[int]) -> list[int]:
    kept = [int(index) for index in kept]
    if any(later <= earlier for earlier, later in itertools.pairwise(kept)):
        raise ValueError("kept channel indices must be strictly increasing")
    if kept and not (0 <= kept[0] and kept[-1] < channels):
        raise ValueError(f"kept channel indices must be between 0 and {channels - 1}, got {kept[0]}..{kept[-1]}")
    return kept


def removed_from_kept(channels: int, kept: Sequence[int]) -> set[int]:
    """Return the channels of a `channels`-wide dense layer that are not in the sorted index list `kept`."""
    return set(range(channels)) - set(_check_kept(channels, kept))


def removed_channels(
    dense: nn.Module,
    pruned: nn.Module,
    layer: str,
    kept: Mapping[str, Sequence[int]],
) -> set[int]:
    """Return the dense output-channel indices of conv `layer` that the pruned model no longer has.

    `kept` is `pruning.recovery.kept_output_channels(analysis, plan)` for the plan that made
    `pruned`. A layer that it leaves out must have the same width in both models (an output head,
    say), and then nothing was removed. ValueError reports a width that the plan does not explain.
    """
    dense_channels = _output_channels(dense, layer)
    pruned_channels = _output_channels(pruned, layer)
    if layer not in kept:
        if pruned_channels != dense_channels:
            raise ValueError(
                f"layer {layer!r} went from {dense_channels} to {pruned_channels} channels, but the kept-channel "
                "map has no entry for it; pass kept_output_channels(analysis, plan) for the plan that pruned it"
            )
        return set()
    if len(kept[layer]) != pruned_channels:
        raise ValueError(
            f"the kept-channel map lists {len(kept[layer])} channels for {layer!r}, but the pruned layer has "
            f"{pruned_channels}; it belongs to another plan"
        )
    return removed_from_kept(dense_channels, kept[layer])


def _output_channels(model: nn.Module, layer: str) -> int:
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"{layer!r} is not an nn.Conv2d layer of {type(model).__name__}")
    return module.out_channels


def pruned_feature_maps_in_dense_order(pruned_maps: torch.Tensor, kept: Sequence[int], channels: int) -> torch.Tensor:
    """Place the pruned layer's (len(kept), h, w) maps at their dense indices in a (channels, h, w) tensor of zeros."""
    kept = _check_kept(channels, kept)
    if pruned_maps.dim() != 3 or pruned_maps.shape[0] != len(kept):
        raise ValueError(
            f"expected ({len(kept)}, h, w) maps for {len(kept)} kept channels, got {tuple(pruned_maps.shape)}"
        )
    dense_order = pruned_maps.new_zeros((channels, *pruned_maps.shape[1:]))
    dense_order[kept] = pruned_maps
    return dense_order


# --- drawing -------------------------------------------------------------------------------------

def _check_removed(removed: AbstractSet[int], count: int) -> None:
    outside = sorted(index for index in removed if not 0 <= index < count)
    if outside:
        raise ValueError(f"removed channel indices {outside[:5]} are outside 0..{count - 1}")


def _removed_tile(width: int, height: int) -> Image.Image:
    tile = Image.new("RGB", (width, height), REMOVED_FILL)
    draw = ImageDraw.Draw(tile)
    line = max(1, min(width, height) // 12)
    draw.line([(0, 0), (width - 1, height - 1)], fill=REMOVED_MARK, width=line)
    draw.line([(0, height - 1), (width - 1, 0)], fill=REMOVED_MARK, width=line)
    return tile


def _resize_tile(pixels: np.ndarray, width: int, height: int) -> Image.Image:
    """Scale a uint8 (h, w) or (h, w, 3) array to a tile. Enlarging uses nearest, so each value stays a block."""
    image = Image.fromarray(pixels).convert("RGB")
    enlarging = width >= image.width and height >= image.height
    resample = Image.Resampling.NEAREST if enlarging else Image.Resampling.BILINEAR
    return image.resize((width, height), resample)


def _grid(tiles: list[Image.Image], tile_width: int, tile_height: int, columns: int) -> Image.Image:
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width = columns * tile_width + (columns - 1) * GAP
    height = rows * tile_height + (rows - 1) * GAP
    canvas = Image.new("RGB", (width, height), GAP_COLOUR)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        canvas.paste(tile, (column * (tile_width + GAP), row * (tile_height + GAP)))
    return canvas


def _check_layout(tile: int, columns: int) -> None:
    if tile < 1 or columns < 1:
        raise ValueError(f"tile and columns must be at least 1, got tile={tile}, columns={columns}")


def filter_grid(
    weight: torch.Tensor,
    removed: AbstractSet[int] = frozenset(),
    *,
    tile: int = 24,
    columns: int = 16,
    shared_scale: bool = False,
) -> Image.Image:
    """Draw each output filter of a conv weight (C_out, C_in, kh, kw) as a tile of a grid.

    A filter with 3 input channels (the first conv of an RGB model) is drawn in colour, any other
    as the mean over its input channels in grey. Values are scaled symmetrically around zero, so
    mid grey (128) is a zero weight and the largest magnitude reaches 0 or 255. Each filter gets
    its own scale, unless `shared_scale` uses the largest magnitude in the layer for all of them,
    which makes small-norm filters look faint. All-zero filters are mid grey.

    Channels in `removed` (dense indices) get the removed tile: a dark fill with a red cross.
    The image has min(columns, C_out) columns and ceil(C_out / columns) rows of tile×tile tiles,
    with 2 white pixels between tiles.
    """
    _check_layout(tile, columns)
    if weight.dim() != 4:
        raise ValueError(f"expected a conv weight of shape (C_out, C_in, kh, kw), got {tuple(weight.shape)}")
    _check_removed(removed, weight.shape[0])

    weight = weight.detach().float().cpu()
    colour = weight.shape[1] == 3
    filters = weight.permute(0, 2, 3, 1) if colour else weight.mean(dim=1)  # (C_out, kh, kw, 3) or (C_out, kh, kw)
    magnitude = filters.abs().flatten(1).amax(dim=1)  # (C_out,)
    if shared_scale:
        magnitude = magnitude.max().expand_as(magnitude)
    magnitude = magnitude.clamp_min(torch.finfo(torch.float32).tiny)
    scale = magnitude.view(-1, *([1] * (filters.dim() - 1)))
    pixels = ((filters / scale * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()

    tiles = [
        _removed_tile(tile, tile) if index in removed else _resize_tile(pixels[index], tile, tile)
        for index in range(weight.shape[0])
    ]
    return _grid(tiles, tile, tile, columns)


def feature_map_grid(
    maps: torch.Tensor,
    removed: AbstractSet[int] = frozenset(),
    *,
    tile: int = 64,
    columns: int = 8,
    max_maps: int = 64,
) -> Image.Image:
    """Draw each channel of a (C, h, w) feature map as a greyscale tile of a grid.

    Each map is min-max scaled on its own, black to white, so the tiles show where a channel
    responds and not how strongly compared with the others. A constant map is black. Tiles are
    `tile` pixels wide and tile * h / w pixels high (rounded, at least 1), so the map keeps its
    aspect ratio. Only the first `max_maps` channels are drawn when C is larger.

    Channels in `removed` (dense indices) get the removed tile: a dark fill with a red cross. With
    D = min(C, max_maps) tiles, the image has min(columns, D) columns and ceil(D / columns) rows,
    with 2 white pixels between tiles.
    """
    _check_layout(tile, columns)
    if max_maps < 1:
        raise ValueError(f"max_maps must be at least 1, got {max_maps}")
    if maps.dim() != 3:
        raise ValueError(f"expected feature maps of shape (C, h, w), got {tuple(maps.shape)}")
    _check_removed(removed, maps.shape[0])

    drawn_maps = maps[:max_maps].detach().float().cpu()
    low = drawn_maps.flatten(1).amin(dim=1).view(-1, 1, 1)
    span = drawn_maps.flatten(1).amax(dim=1).view(-1, 1, 1) - low
    scaled = torch.where(span > 0, (drawn_maps - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    pixels = (scaled.nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()

    tile_height = max(1, round(tile * drawn_maps.shape[1] / drawn_maps.shape[2]))
    tiles = [
        _removed_tile(tile, tile_height) if index in removed else _resize_tile(pixels[index], tile, tile_height)
        for index in range(drawn_maps.shape[0])
    ]
    return _grid(tiles, tile, tile_height, columns)
