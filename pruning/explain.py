"""Grad-CAM heat maps for classifiers, and the RGB image that a model input shows.

Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization") weights each channel of a convolutional feature map by the mean
gradient of one class score over that channel, sums the weighted channels and keeps the positive
part. The result shows which regions raised the score of that class.

Every function here only runs the model. Parameters, their `.grad` and `requires_grad`, buffers and
the training flag stay as they were, and every hook is removed before the function returns. The
functions that run a model reject one in training mode, because a forward pass in training mode
updates the BatchNorm running statistics of a model that other callers share.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .catalog import ModelEntry
from .tasks import fit_to_side

# Anchor colours of the heat colormap, from 0 (no evidence) to 1 (strongest). Their lightness
# rises from anchor to anchor, so the order of values survives greyscale printing.
_HEAT_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float32,
)


def heat_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB colours (shape + (3,)), from black through purple and orange to pale yellow.

    Values outside [0, 1] are clipped, and NaN is drawn as 0.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    position = np.clip(values, 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), len(_HEAT_ANCHORS) - 2)
    fraction = (position - lower)[..., None]
    colours = _HEAT_ANCHORS[lower] * (1.0 - fraction) + _HEAT_ANCHORS[lower + 1] * fraction
    return np.round(colours).astype(np.uint8)


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise ValueError(
            "the model is in training mode, where a forward pass would update its BatchNorm statistics. "
            "Call model.eval() first."
        )


def _first_tensor(output) -> torch.Tensor:
    """Return the class scores from a model output: the tensor itself, the first of a tuple, or dict["out"]."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("out"), torch.Tensor):
        return output["out"]
    raise TypeError(f"cannot find the class scores in a model output of type {type(output).__name__}")


def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d)]
        hint = f"; its last conv layers are {', '.join(convs[-3:])}" if convs else ""
        raise ValueError(f"layer {layer!r} not found in the model{hint}")
    return modules[layer]


def _check_image_batch(inputs: torch.Tensor) -> None:
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, C, H, W) tensor, got shape {tuple(inputs.shape)}")


def _is_spatial_map(output) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1


def default_cam_layer(model: nn.Module, example_inputs: torch.Tensor) -> str:
    """Pick the layer whose activations Grad-CAM reads: the last Conv2d that still has a spatial map.

    One forward pass on `example_inputs` records the order in which modules run and their output
    shapes. The pick is the last nn.Conv2d, in that order, whose output is a 4-D map larger than
    1×1, so squeeze-and-excitation convolutions on pooled 1×1 maps are skipped. A conv that
    produces the class scores itself (its output channels equal the number of classes and no
    module with weights runs after it, as in SqueezeNet's `classifier.1`) is skipped, too, because
    its channels are class maps rather than features. A model without such a conv gets the last
    module of any kind whose output is such a map.

    NOTE: where the last block concatenates branches (DenseNet, SqueezeNet, GoogLeNet, Inception),
    the last conv writes only part of the channels that the classifier reads. In DenseNet-121 it
    writes 32 of 1024, and in SqueezeNet 256 of 512. Pass another `layer` to `grad_cam` to read
    all of them, such as DenseNet's `features.norm5`.
    """
    _require_eval(model)
    _check_image_batch(example_inputs)
    calls: dict[str, tuple[int, bool]] = {}  # name -> (position of its last call, whether it output a spatial map)
    counter = itertools.count()

    def record(name):
        def hook(module, args, output):
            calls[name] = (next(counter), _is_spatial_map(output))

        return hook

    modules = {name: module for name, module in model.named_modules() if name}
    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            classes = _first_tensor(model(example_inputs)).shape[1]
    finally:
        for handle in handles:
            handle.remove()

    ran = sorted(calls.items(), key=lambda item: item[1][0])
    weighted_positions = [
        position for name, (position, _) in ran if next(modules[name].parameters(recurse=False), None) is not None
    ]
    last_weighted = max(weighted_positions, default=-1)

    def is_class_map(name: str, position: int) -> bool:
        return modules[name].out_channels == classes and position == last_weighted

    convs = [
        name
        for name, (position, spatial) in ran
        if isinstance(modules[name], nn.Conv2d) and spatial and not is_class_map(name, position)
    ]
    if convs:
        return convs[-1]
    maps = [name for name, (_, spatial) in ran if spatial]
    if maps:
        return maps[-1]
    raise ValueError("the model has no layer with a 4-D output larger than 1×1, so Grad-CAM has no map to read")


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    class_index: int | None = None,
) -> torch.Tensor:
    """Compute the Grad-CAM map of one class at `layer`, as an (H, W) tensor in [0, 1] at the input's size.

    `inputs` is one preprocessed image, shape (1, C, H, W). `class_index` None explains the
    model's top-1 class. The map is ReLU(sum over channels k of mean(dScore/dA_k) * A_k), scaled
    up bilinearly to H×W and divided by its maximum. A map without positive values (a dead layer,
    or a class that the layer only argues against) is returned as zeros. If the layer runs more than
    once in a forward pass, its last call is used.

    The gradient flows to the input copy, which requires grad, rather than to the parameters, so a
    pruned copy with `requires_grad_(False)` works without changing its flags, and no `.grad` is written.
    """
    _require_eval(model)
    _check_image_batch(inputs)
    target = _module(model, layer)
    captured: list[torch.Tensor] = []

    def capture(module, args, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(f"layer {layer!r} must output a 4-D feature map, got {type(output).__name__}")
        captured.append(output)

    handle = target.register_forward_hook(capture)
    try:
        # inference_mode(False) also lifts an inference_mode that a caller has switched on, which
        # enable_grad alone does not.
        with torch.inference_mode(False), torch.enable_grad():
            image = inputs.detach().clone().requires_grad_(True)
            scores = _first_tensor(model(image))
            if class_index is None:
                class_index = int(scores[0].argmax())
            elif not 0 <= class_index < scores.shape[1]:
                raise ValueError(f"class_index {class_index} is out of range: the model has {scores.shape[1]} classes")
            if not captured:
                raise ValueError(f"layer {layer!r} did not run in the forward pass")
            activation = captured[-1]
            if not activation.requires_grad:
                raise ValueError(f"the output of layer {layer!r} does not depend on the input, so it has no gradient")
            (gradient,) = torch.autograd.grad(scores[0, class_index], activation, allow_unused=True)
    finally:
        handle.remove()

    if gradient is None:
        raise ValueError(f"the score of class {class_index} does not depend on layer {layer!r}")
    weights = gradient.detach().mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = (weights * activation.detach()).sum(dim=1, keepdim=True).clamp_min(0.0)  # (1, 1, h, w)
    cam = F.interpolate(cam, size=inputs.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    if not torch.isfinite(peak) or peak <= 0:
        return torch.zeros(inputs.shape[2:], dtype=torch.float32)
    return (cam / peak).clamp(0.0, 1.0).float()


def cam_overlay(image: Image.Image, cam: torch.Tensor, alpha: float = 0.45) -> Image.Image:
    """Blend the heat-coloured `cam` over `image`: (1 - alpha) * image + alpha * colour, as RGB.

    The map is resized bilinearly to the image size, so pass the image as the model saw it
    (`model_view`). Drawn on the original photo, a map from a centre-cropped input would be
    stretched over parts of the photo that the model never saw.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if cam.dim() != 2:
        raise ValueError(f"expected an (H, W) map, got shape {tuple(cam.shape)}")
    rgb = image.convert("RGB")
    resized = F.interpolate(
        cam.detach().float().cpu()[None, None], size=(rgb.height, rgb.width), mode="bilinear", align_corners=False
    )[0, 0]
    colours = heat_colormap(resized.numpy()).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(rgb, dtype=np.float32) + alpha * colours
    return Image.fromarray(np.round(blended).clip(0, 255).astype(np.uint8))  # (H, W, 3) uint8 is RGB


def _classification_transform(preprocess: Callable) -> nn.Module | None:
    """Find a torchvision ImageClassification-style transform (resize_size and crop_size) behind `preprocess`.

    The transform may be `preprocess` itself, its `transform` attribute or a variable that its
    closure captured, which is where catalog.py's ImageNet preprocess keeps it.
    """
    candidates = [preprocess, getattr(preprocess, "transform", None)]
    if inspect.isfunction(preprocess):
        candidates.extend(inspect.getclosurevars(preprocess).nonlocals.values())
    for candidate in candidates:
        if hasattr(candidate, "resize_size") and hasattr(candidate, "crop_size"):
            return candidate
    return None


def model_view(
    entry: ModelEntry,
    image: Image.Image,
    *,
    resize_size: int | None = None,
    crop_size: int | None = None,
) -> Image.Image:
    """Return the RGB image that the model input shows: capped to the entry's input size, resized and centre-cropped.

    The geometry comes from the first of these that applies:

    1. `resize_size` (shorter side, bilinear with antialiasing) and `crop_size` (centre crop), when given.
    2. The entry's own `model_view` function, where the catalogue sets one.
    3. A torchvision classification transform behind `entry.preprocess` (for ImageNet weights:
       shorter side resized to 256, centre crop 224), with its interpolation and antialiasing.
    4. The capped image itself, if the preprocess keeps its size (as HED's does). Otherwise
       ValueError names the size mismatch.
    """
    rgb = fit_to_side(image.convert("RGB"), entry.max_input_side)
    interpolation = TF.InterpolationMode.BILINEAR
    antialias = True
    if resize_size is None and crop_size is None:
        view = entry.model_view
        if view is not None:
            return view(rgb).convert("RGB")

        transform = _classification_transform(entry.preprocess)
        if transform is None:
            input_size = tuple(entry.preprocess(rgb).shape[-2:])
            if input_size != (rgb.height, rgb.width):
                raise ValueError(
                    f"the preprocess of {entry.name!r} turns a {rgb.width}×{rgb.height} image into a "
                    f"{input_size[1]}×{input_size[0]} input; pass resize_size and crop_size to match it"
                )
            return rgb
        resize_size = transform.resize_size[0]
        crop_size = transform.crop_size[0]
        interpolation = transform.interpolation
        antialias = getattr(transform, "antialias", True)

    if resize_size is not None:
        rgb = TF.resize(rgb, [resize_size], interpolation=interpolation, antialias=antialias)
    if crop_size is not None:
        rgb = TF.center_crop(rgb, [crop_size])
    return rgb
