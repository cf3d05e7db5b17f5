"""Helpers shared by the benchmark scripts: the machine record and the models under test."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported, as in the app

import platform
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pruning.catalog import get_model_entry  # noqa: E402

INPUT_SHAPE = (1, 3, 224, 224)  # batch 1, 224x224, as in the speed targets


def machine() -> dict[str, str]:
    """CPU model, core count, load average and the settings that change CPU timings."""
    model_name = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model_name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "cpu": model_name,
        "cores (nproc)": str(os.cpu_count()),
        "load average (1, 5, 15 min)": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "torch threads": str(torch.get_num_threads()),
    }


def build_model(name: str) -> tuple[nn.Module, tuple[str, ...], bool]:
    """Return (model in eval mode, output heads, pretrained) for a catalogue name or a torchvision ResNet.

    ResNets are built with weights=None because no pretrained file is available offline: their
    numbers are for the architecture's speed only.
    """
    if name.startswith("resnet"):
        import torchvision

        model = getattr(torchvision.models, name)(weights=None).eval()
        heads, pretrained = ("fc",), False
    else:
        entry = get_model_entry(name)
        model, heads, pretrained = entry.build(), entry.output_heads, entry.pretrained
    model.requires_grad_(False)
    return model, heads, pretrained


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
