"""Ratio sweeps: fidelity, parameters, MACs and measured latency together, for several criteria.

Reporting curves over the whole ratio range, with a random baseline, follows ShrinkBench
(Blalock et al., What is the State of Neural Network Pruning?, MLSys 2020): one number at one
ratio hides how methods compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .catalog import get_model_entry
from .explorer import PruneConfig, analyse_entry, prune
from .metrics import count_macs, count_parameters, labelled_accuracy, measure_latency
from .tasks import infer, output_fidelity, primary_fidelity

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SweepPoint:
    """Measurements of one pruned model in a sweep."""

    criterion: str
    ratio: float
    params: int
    macs: int
    latency_ms: float  # median, batch 1 at the entry's example size
    fidelity: float  # primary fidelity on the held-out inputs, 1 = same as dense
    details: dict[str, float] = field(default_factory=dict)  # every fidelity measure
    accuracy: float | None = None  # accuracy on labelled held-out data, for models that have it


def run_sweep(
    model_name: str,
    base_model: nn.Module,
    inputs: torch.Tensor,
    *,
    criteria: tuple[str, ...] = ("l1", "random"),
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    mode: str = "structured",
    allocation: str = "uniform",
    latency_budget_s: float = 0.3,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepPoint]:
    """Prune at every (criterion, ratio) and measure each result on `inputs`."""
    entry = get_model_entry(model_name)
    example = entry.example_inputs()
    timing_input = torch.randn(example.shape, generator=torch.Generator().manual_seed(0))
    dense_output = infer(base_model, inputs)
    labelled = entry.labelled_holdout() if entry.labelled_holdout is not None else None

    points = []
    total = len(criteria) * len(ratios)
    for c, criterion in enumerate(criteria):
        analysis = analyse_entry(entry, base_model, criterion) if mode == "structured" else None
        for r, ratio in enumerate(ratios):
            config = PruneConfig(model_name, ratio, criterion=criterion, mode=mode, allocation=allocation)
            model = prune(base_model, config, analysis=analysis).model
            fidelity = output_fidelity(entry, dense_output, infer(model, inputs))
            latency = measure_latency(model, timing_input, warmup=2, min_runs=5, budget_s=latency_budget_s)
            points.append(
                SweepPoint(
                    criterion=criterion,
                    ratio=ratio,
                    params=count_parameters(model),
                    macs=count_macs(model, example),
                    latency_ms=latency.median_ms,
                    fidelity=primary_fidelity(entry, fidelity),
                    details=fidelity,
                    accuracy=labelled_accuracy(model, *labelled) if labelled is not None else None,
                )
            )
            if progress:
                progress(c * len(ratios) + r + 1, total)
    return points
