import dataclasses

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from conftest import assert_same_state, state_snapshot
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from pruning.catalog import get_model_entry
from pruning.explain import (
    cam_overlay,
    default_cam_layer,
    grad_cam,
    heat_colormap,
    model_view,
)
from pruning.explorer import PruneConfig, prune
from pruning.media import load_sample_image
from pruning.tasks import prepare_input

ENTRY = get_model_entry("mobilenet_v2")
LAYER = "features.18.0"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Mean ImageNet colour: it normalises to about zero, so a canvas of it carries no object.
NEUTRAL_GREY = (124, 116, 104)


def _to_input(image: Image.Image) -> torch.Tensor:
    """Normalise an RGB image for MobileNetV2 without resizing or cropping it."""
    pixels = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
    return TF.normalize(pixels, IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)


@pytest.fixture(scope="module")
def chelsea():
    return load_sample_image("chelsea")


@pytest.fixture(scope="module")
def chelsea_view(chelsea):
    return model_view(ENTRY, chelsea)


@pytest.fixture(scope="module")
def pruned_mobilenet(mobilenet, mobilenet_l1):
    return prune(mobilenet, PruneConfig("mobilenet_v2", 0.5, "l1"), analysis=mobilenet_l1).model


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(self.features(x))


def _hooks(model: nn.Module) -> list[str]:
    """Name every module that still has a forward, pre-forward or backward hook."""
    return [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
    ]


# --- default_cam_layer ---------------------------------------------------------------------------

CAM_LAYERS = [
    (lambda: tvm.mobilenet_v2(weights=None), "features.18.0"),
    (lambda: tvm.resnet18(weights=None), "layer4.1.conv2"),
    (lambda: tvm.vgg11_bn(weights=None), "features.25"),
    (lambda: tvm.densenet121(weights=None), "features.denseblock4.denselayer16.conv2"),
    # classifier.1 is a conv, too, but its 1000 channels are the class maps
    (lambda: tvm.squeezenet1_1(weights=None), "features.12.expand3x3"),
    # the squeeze-and-excitation convs run on 1×1 maps and are skipped
    (lambda: tvm.efficientnet_b0(weights=None), "features.8.0"),
    (TinyNet, "features.2"),
]


@pytest.mark.parametrize(("build", "expected"), CAM_LAYERS, ids=[expected for _, expected in CAM_LAYERS])
def test_default_cam_layer_architectures(build, expected):
    torch.manual_seed(0)
    model = build().eval()
    assert default_cam_layer(model, torch.zeros(1, 3, 96, 96)) == expected
    assert _hooks(model) == []


def test_default_cam_layer_pretrained(mobilenet):
    assert default_cam_layer(mobilenet, ENTRY.example_inputs()) == LAYER


def test_default_cam_layer_rejects_training_mode():
    model = TinyNet().train()
    with pytest.raises(ValueError, match="training mode"):
        default_cam_layer(model, torch.zeros(1, 3, 32, 32))
    assert model.training


# --- grad_cam ------------------------------------------------------------------------------------

def test_grad_cam_shape_and_range(mobilenet, chelsea):
    inputs = prepare_input(ENTRY, chelsea)
    cam = grad_cam(mobilenet, inputs, LAYER)
    assert cam.shape == (224, 224)
    assert cam.dtype == torch.float32
    assert float(cam.min()) >= 0.0
    assert float(cam.max()) == pytest.approx(1.0)


def test_grad_cam_cat_over_background(mobilenet, chelsea):
    # The whole photo, uncropped: the cat's face fills the middle and the right sixth of the
    # photo is blurred room, which a centre crop would cut off.
    photo = chelsea.resize((336, 224), Image.Resampling.BILINEAR)
    cam = grad_cam(mobilenet, _to_input(photo), LAYER).numpy()
    face = cam[60:200, 80:260].mean()
    background = cam[:, 294:].mean()
    assert face > 3 * background


@pytest.mark.parametrize("corner", [(0, 0), (112, 112)], ids=["top-left", "bottom-right"])
def test_grad_cam_follows_cat_position(mobilenet, chelsea_view, corner):
    canvas = Image.new("RGB", (224, 224), NEUTRAL_GREY)
    canvas.paste(chelsea_view.resize((112, 112), Image.Resampling.BILINEAR), corner)
    inputs = _to_input(canvas)
    with torch.inference_mode():
        top1 = int(mobilenet(inputs)[0].argmax())
    assert ENTRY.categories[top1] == "Egyptian cat"

    cam = grad_cam(mobilenet, inputs, LAYER).numpy()
    inside = np.zeros(cam.shape, dtype=bool)
    inside[corner[1] : corner[1] + 112, corner[0] : corner[0] + 112] = True
    # the quadrant is a quarter of the image
    assert cam[inside].sum() / cam.sum() > 0.5
    assert cam[inside].mean() > 3 * cam[~inside].mean()


def test_grad_cam_class_index_selects_object(mobilenet, chelsea_view):
    # cat on the left half, espresso cup on the right half
    coffee = model_view(ENTRY, load_sample_image("coffee"))
    canvas = Image.new("RGB", (448, 224))
    canvas.paste(chelsea_view, (0, 0))
    canvas.paste(coffee, (224, 0))
    inputs = _to_input(canvas)

    cat_cam = grad_cam(mobilenet, inputs, LAYER, class_index=ENTRY.categories.index("Egyptian cat")).numpy()
    cup_cam = grad_cam(mobilenet, inputs, LAYER, class_index=ENTRY.categories.index("espresso")).numpy()
    assert cat_cam[:, :224].mean() > 3 * cat_cam[:, 224:].mean()
    assert cup_cam[:, 224:].mean() > 3 * cup_cam[:, :224].mean()


def test_grad_cam_default_is_top1(mobilenet, chelsea):
    inputs = prepare_input(ENTRY, chelsea)
    with torch.inference_mode():
        top1 = int(mobilenet(inputs)[0].argmax())
    assert torch.equal(grad_cam(mobilenet, inputs, LAYER), grad_cam(mobilenet, inputs, LAYER, class_index=top1))


def test_grad_cam_leaves_model_unchanged(mobilenet, chelsea):
    snapshot = state_snapshot(mobilenet)
    flags = {name: parameter.requires_grad for name, parameter in mobilenet.named_parameters()}
    grads = {name: parameter.grad for name, parameter in mobilenet.named_parameters()}
    training = {name: module.training for name, module in mobilenet.named_modules()}
    inputs = prepare_input(ENTRY, chelsea)
    inputs_before = inputs.clone()

    grad_cam(mobilenet, inputs, LAYER)
    with torch.inference_mode():  # a caller's inference_mode must not break the backward pass
        grad_cam(mobilenet, inputs, LAYER)
    default_cam_layer(mobilenet, inputs)

    assert_same_state(mobilenet, snapshot)
    assert {name: parameter.requires_grad for name, parameter in mobilenet.named_parameters()} == flags
    assert all(parameter.grad is grads[name] for name, parameter in mobilenet.named_parameters())
    assert {name: module.training for name, module in mobilenet.named_modules()} == training
    assert _hooks(mobilenet) == []
    assert torch.equal(inputs, inputs_before)
    assert not inputs.requires_grad


def test_grad_cam_inference_tensor_input(mobilenet, chelsea):
    with torch.inference_mode():
        inputs = prepare_input(ENTRY, chelsea)
    assert inputs.is_inference()
    assert torch.equal(grad_cam(mobilenet, inputs, LAYER), grad_cam(mobilenet, inputs.clone(), LAYER))


def test_grad_cam_on_pruned_copy(pruned_mobilenet, chelsea):
    assert not any(parameter.requires_grad for parameter in pruned_mobilenet.parameters())
    snapshot = state_snapshot(pruned_mobilenet)

    cam = grad_cam(pruned_mobilenet, prepare_input(ENTRY, chelsea), LAYER)

    assert cam.shape == (224, 224)
    assert torch.isfinite(cam).all()
    assert float(cam.min()) >= 0.0
    assert float(cam.max()) == pytest.approx(1.0)
    assert not any(parameter.requires_grad for parameter in pruned_mobilenet.parameters())
    assert all(parameter.grad is None for parameter in pruned_mobilenet.parameters())
    assert_same_state(pruned_mobilenet, snapshot)
    assert _hooks(pruned_mobilenet) == []


def test_grad_cam_dead_layer_returns_zeros():
    model = TinyNet().eval()
    with torch.no_grad():
        model.features[0].weight.zero_()
        model.features[0].bias.zero_()
    cam = grad_cam(model, torch.randn(1, 3, 32, 40), "features.0")
    assert cam.shape == (32, 40)
    assert torch.equal(cam, torch.zeros(32, 40))


def test_grad_cam_rejects_bad_arguments(mobilenet):
    inputs = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(mobilenet, inputs, LAYER, class_index=1000)
    with pytest.raises(ValueError, match="not found"):
        grad_cam(mobilenet, inputs, "features.99")
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        grad_cam(mobilenet, torch.zeros(2, 3, 64, 64), LAYER)
    with pytest.raises(ValueError, match="4-D"):
        grad_cam(mobilenet, inputs, "classifier.1")
    assert _hooks(mobilenet) == []


def test_grad_cam_rejects_training_mode():
    model = TinyNet().train()
    with pytest.raises(ValueError, match="training mode"):
        grad_cam(model, torch.zeros(1, 3, 32, 32), "features.2")
    assert model.training


# --- drawing and the model's view ----------------------------------------------------------------

def test_heat_colormap_lightness_rises():
    colours = heat_colormap(np.linspace(0.0, 1.0, 256)).astype(np.float64)
    luma = colours @ np.array([0.299, 0.587, 0.114])
    assert colours.shape == (256, 3)
    assert np.all(np.diff(luma) > 0)
    assert np.array_equal(heat_colormap(np.array([-1.0, np.nan, 2.0])), heat_colormap(np.array([0.0, 0.0, 1.0])))


def test_cam_overlay_blends(chelsea_view):
    cam = torch.linspace(0, 1, 7 * 7).reshape(7, 7)
    overlay = cam_overlay(chelsea_view, cam)
    assert overlay.size == chelsea_view.size
    assert overlay.mode == "RGB"
    assert np.array_equal(np.asarray(cam_overlay(chelsea_view, cam, alpha=0.0)), np.asarray(chelsea_view))

    heat_only = np.asarray(cam_overlay(chelsea_view, torch.zeros(224, 224), alpha=1.0))
    assert np.all(heat_only == heat_colormap(np.zeros(1))[0])

    with pytest.raises(ValueError, match="alpha"):
        cam_overlay(chelsea_view, cam, alpha=1.5)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        cam_overlay(chelsea_view, cam[None])


def test_model_view_matches_input(chelsea):
    view = model_view(ENTRY, chelsea)
    assert view.size == (224, 224)
    assert view.mode == "RGB"
    torch.testing.assert_close(_to_input(view), prepare_input(ENTRY, chelsea), rtol=0, atol=1e-6)


def test_model_view_uncropped_preprocess(chelsea):
    hed = get_model_entry("hed")
    view = model_view(hed, chelsea)
    height, width = prepare_input(hed, chelsea).shape[-2:]
    assert view.size == (width, height)


def _without_view(entry, **changes):
    """Copy a catalogue entry without its own model_view function."""
    return dataclasses.replace(entry, model_view=None, **changes)


def test_model_view_transform_behind_preprocess(chelsea):
    view = model_view(_without_view(ENTRY), chelsea)
    assert view.size == (224, 224)
    torch.testing.assert_close(_to_input(view), prepare_input(ENTRY, chelsea), rtol=0, atol=1e-6)


def test_model_view_unknown_preprocess(chelsea):
    entry = _without_view(ENTRY, preprocess=lambda image: torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="resize_size and crop_size"):
        model_view(entry, chelsea)
    view = model_view(entry, chelsea, resize_size=256, crop_size=224)
    assert view.size == (224, 224)
    assert np.array_equal(np.asarray(view), np.asarray(model_view(ENTRY, chelsea)))
