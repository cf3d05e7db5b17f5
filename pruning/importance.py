"""Channel importance criteria, registered by name.

A criterion follows torch-pruning's contract: a callable takes a dependency group and returns one
score per channel of the group's root layer (higher means more important), or None when the group
contains no layer it can score. Scores are raw: normalising across layers is the allocation's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .registry import Registry

ImportanceFn = Callable[[tp.Group], "torch.Tensor | None"]


@dataclass(frozen=True)
class Criterion:
    """Registry record of one importance criterion."""

    name: str  # registry and CLI name
    label: str  # shown in the UI
    summary: str  # one line, in plain words, for the UI
    reference: str  # paper or documentation link
    factory: Callable[[], ImportanceFn]  # builds a fresh scorer, so no state leaks between runs
    applies_to: Callable[[nn.Module], bool] = lambda model: True  # whether it can score a model
    requirement: str = ""  # what a model needs for this criterion, shown when it does not apply
    needs_gradients: bool = False  # scores read parameter gradients from calibration images

    def check_applies(self, model: nn.Module) -> None:
        """Raise ValueError when this criterion cannot score `model`."""
        if not self.applies_to(model):
            raise ValueError(f"criterion {self.name!r} does not apply to this model: {self.requirement}")


_REGISTRY: Registry[Criterion] = Registry("criterion")


def register_criterion(criterion: Criterion) -> Criterion:
    """Add a criterion; registering a name twice raises ValueError."""
    return _REGISTRY.register(criterion)


def register_callable(name: str, scorer: ImportanceFn, *, label: str | None = None, summary: str = "") -> Criterion:
    """Register a user-supplied scorer (group -> per-channel scores) under `name`."""
    return register_criterion(
        Criterion(
            name=name,
            label=label or name,
            summary=summary or "Custom criterion.",
            reference="",
            factory=lambda: scorer,
        )
    )


def get_criterion(name: str) -> Criterion:
    """Look up a criterion, naming the valid choices when `name` is unknown."""
    return _REGISTRY.get(name)


def list_criteria() -> list[str]:
    return _REGISTRY.names()


def applicable_criteria(model: nn.Module) -> list[str]:
    """Names of the criteria that can score `model` (e.g. no BatchNorm scale without BatchNorm)."""
    return [name for name, criterion in _REGISTRY.items() if criterion.applies_to(model)]


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


class SeededRandomImportance:
    """Uniform random scores from a fixed seed: the baseline every criterion should beat."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: tp.Group) -> torch.Tensor:
        channels = len(group[0].idxs)
        return torch.rand(channels, generator=self.generator)


register_criterion(
    Criterion(
        name="l1",
        label="L1 filter magnitude",
        summary="Sum of absolute weights of each filter, averaged over the layers pruned together with it.",
        reference="Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017, https://arxiv.org/abs/1608.08710",
        factory=lambda: tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="mean"),
    )
)
register_criterion(
    Criterion(
        name="l2",
        label="L2 filter magnitude",
        summary="Sum of squared weights of each filter: like L1, but large weights count more.",
        reference="https://github.com/VainF/Torch-Pruning (GroupMagnitudeImportance, p=2)",
        factory=lambda: tp.importance.MagnitudeImportance(p=2, normalizer=None, group_reduction="mean"),
    )
)
register_criterion(
    Criterion(
        name="bn_scale",
        label="BatchNorm scale (Network Slimming)",
        summary="Absolute BatchNorm scale factor of each channel: a small scale means a quiet channel.",
        reference="Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017, "
        "https://arxiv.org/abs/1708.06519",
        factory=lambda: tp.importance.BNScaleImportance(normalizer=None),
        applies_to=_has_batchnorm,
        requirement="it reads BatchNorm scales, and the model has no BatchNorm layers; choose another criterion",
    )
)
register_criterion(
    Criterion(
        name="taylor",
        label="First-order Taylor (label-free)",
        summary="Estimated loss change if the channel were removed: weight times gradient of a loss against "
        "the dense model's own predictions on calibration images.",
        reference="Molchanov et al., Importance Estimation for Neural Network Pruning, CVPR 2019, "
        "https://arxiv.org/abs/1906.10771",
        factory=lambda: tp.importance.GroupTaylorImportance(normalizer=None),
        needs_gradients=True,
    )
)
register_criterion(
    Criterion(
        name="fpgm",
        label="FPGM (geometric median)",
        summary="Filters close to the layer's geometric median are redundant: the others can stand in for them.",
        reference="He et al., Filter Pruning via Geometric Median, CVPR 2019, https://arxiv.org/abs/1811.00250",
        factory=lambda: tp.importance.FPGMImportance(normalizer=None),
    )
)
register_criterion(
    Criterion(
        name="lamp",
        label="LAMP",
        summary="Squared magnitude divided by the sum of all larger ones in the layer, so layers compare fairly.",
        reference="Lee et al., Layer-adaptive Sparsity for the Magnitude-based Pruning, ICLR 2021, "
        "https://arxiv.org/abs/2010.07611",
        factory=lambda: tp.importance.LAMPImportance(),
    )
)
register_criterion(
    Criterion(
        name="random",
        label="Random (seeded baseline)",
        summary="Random scores from a fixed seed: any useful criterion should beat it.",
        reference="Blalock et al., What is the State of Neural Network Pruning?, MLSys 2020, "
        "https://arxiv.org/abs/2003.03033",
        factory=SeededRandomImportance,
    )
)

DEFAULT_CRITERION = "l1"


def ranking_agreement(
    scores: np.ndarray, other_scores: np.ndarray, removed: set[int], other_removed: set[int]
) -> dict[str, float]:
    """Measure how much two criteria agree on one layer: Spearman rank correlation and removed-channel overlap."""
    from scipy.stats import spearmanr

    correlation = spearmanr(scores, other_scores).statistic if len(scores) > 1 else 1.0
    union = removed | other_removed
    overlap = len(removed & other_removed) / len(union) if union else 1.0
    return {"spearman": float(np.nan_to_num(correlation, nan=0.0)), "removed_overlap": overlap}
