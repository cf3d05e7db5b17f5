"""torchvision architectures for the catalogue: weights from torchvision's cache, explicit download.

Nothing here downloads on its own. A model whose weights file is not in torchvision's cache
(`torch.hub.get_dir()/checkpoints`) builds with untrained weights. `download_weights` fetches the
file only when a user asks for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models
from torchvision.models import segmentation

DOWNLOAD_TIMEOUT_S = 30


def weights_enum(name: str) -> models.WeightsEnum:
    """Return the default pretrained weights record of a torchvision model name."""
    return models.get_model_weights(name).DEFAULT


def cache_path(name: str) -> Path:
    """Return where torchvision keeps (or would keep) the weights file of model `name`."""
    filename = Path(urlparse(weights_enum(name).url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_size_mb(name: str) -> float:
    return float(weights_enum(name).meta.get("_file_size", 0.0))


def download_weights(name: str, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download the pretrained weights of model `name` into torchvision's cache and return the path.

    `progress(bytes_done, bytes_total)` is called after every chunk. The file is written to a
    temporary name and moved into place only after its SHA-256 matches the prefix in its file name,
    the check torchvision itself makes. Raises OSError (URLError is one) when the download fails.
    """
    weights = weights_enum(name)
    target = cache_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # torchvision's file names end in -<first hex digits of the SHA-256>.pth
    expected_prefix = target.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(weights.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 20):
                file.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if not digest.hexdigest().startswith(expected_prefix):
            raise OSError(f"the downloaded file for {name} failed its SHA-256 check; try again")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


class SegmentationNet(nn.Module):
    """torchvision segmentation model that returns the class map tensor instead of a dict.

    Tracing, TorchScript and the pruning graph all want one tensor out. The submodules keep
    torchvision's names (`backbone`, `classifier`), so torchvision state_dicts load unchanged once
    the auxiliary head's keys are left out.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.backbone = net.backbone
        self.classifier = net.classifier
        # LR-ASPP's head reads two backbone stages; DeepLabV3's and FCN's read only the last one
        self.reads_all_features = isinstance(net, segmentation.LRASPP)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.backbone(inputs)
        if self.reads_all_features:
            scores = self.classifier(features)
        else:
            scores = self.classifier(features["out"])
        return F.interpolate(scores, size=inputs.shape[-2:], mode="bilinear", align_corners=False)


def is_segmentation(name: str) -> bool:
    return name in models.list_models(module=segmentation)


def build(name: str, *, pretrained: bool) -> nn.Module:
    """Build torchvision model `name`, with its cached pretrained weights or untrained.

    With `pretrained=True` the weights file must be in torchvision's cache already, so nothing is
    downloaded. Untrained segmentation models also skip their ImageNet backbone weights.
    """
    weights = weights_enum(name) if pretrained else None
    if pretrained and not cache_path(name).is_file():
        raise FileNotFoundError(f"the weights of {name} are not in torchvision's cache ({cache_path(name)})")
    if is_segmentation(name):
        net = models.get_model(name, weights=weights, weights_backbone=None)
        return SegmentationNet(net)
    return models.get_model(name, weights=weights)
