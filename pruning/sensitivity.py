"""Per-layer sensitivity: prune one dependency group alone and measure how far the output moves.

The scan turns into per-layer ratios for a MAC budget: groups that barely change the output for
the MACs they save are pruned first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .catalog import ModelEntry
from .metrics import count_macs
from .structured import Analysis, apply_plan, make_plan
from .tasks import infer, output_fidelity, primary_fidelity

DEFAULT_RATIOS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class SensitivityScan:
    """Fidelity and MACs saved when each group alone is pruned at each ratio."""

    groups: tuple[str, ...]
    ratios: tuple[float, ...]
    fidelity: np.ndarray  # (groups, ratios) primary fidelity to the dense model, 1 = unchanged
    macs_saved: np.ndarray  # (groups, ratios) MACs removed from the whole model
    dense_macs: int

    @property
    def drop(self) -> np.ndarray:
        return 1.0 - self.fidelity


def scan(
    entry: ModelEntry,
    base_model: nn.Module,
    analysis: Analysis,
    inputs: torch.Tensor,
    *,
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityScan:
    """Prune each group alone at each ratio (others untouched) and measure fidelity on `inputs`."""
    example = entry.example_inputs()
    dense_macs = count_macs(base_model, example)
    dense_output = infer(base_model, inputs)
    names = tuple(group.name for group in analysis.groups)
    fidelity = np.ones((len(names), len(ratios)))
    saved = np.zeros((len(names), len(ratios)))

    total = len(names) * len(ratios)
    for g, name in enumerate(names):
        for r, ratio in enumerate(ratios):
            plan = make_plan(analysis, 0.0, overrides={name: ratio})
            if plan.removed_count(name):
                model = apply_plan(base_model, plan, example)
                fidelity[g, r] = primary_fidelity(entry, output_fidelity(entry, dense_output, infer(model, inputs)))
                saved[g, r] = dense_macs - count_macs(model, example)
            if progress:
                progress(g * len(ratios) + r + 1, total)
    return SensitivityScan(names, tuple(ratios), fidelity, saved, dense_macs)


def ratios_for_budget(scan_result: SensitivityScan, mac_reduction: float) -> dict[str, float]:
    """Pick per-group ratios that remove at least `mac_reduction` of the MACs, cheapest fidelity first.

    Greedy: each step raises one group to its next scanned ratio, choosing the step with the
    smallest fidelity drop per MAC saved. MAC savings of separate groups are added, which is an
    estimate: neighbouring groups share a layer, so the real total differs (measure the result).
    """
    if not 0.0 < mac_reduction < 1.0:
        raise ValueError(f"invalid MAC reduction {mac_reduction!r}: use a share between 0 and 1")
    target = mac_reduction * scan_result.dense_macs
    level = [-1] * len(scan_result.groups)  # index into ratios, -1 = not pruned
    saved = 0.0
    while saved < target:
        best = None
        for g in range(len(scan_result.groups)):
            nxt = level[g] + 1
            if nxt >= len(scan_result.ratios):
                continue
            previous_drop = scan_result.drop[g, level[g]] if level[g] >= 0 else 0.0
            previous_saved = scan_result.macs_saved[g, level[g]] if level[g] >= 0 else 0.0
            gain = scan_result.macs_saved[g, nxt] - previous_saved
            if gain <= 0:
                continue
            cost = max(scan_result.drop[g, nxt] - previous_drop, 0.0) / gain
            if best is None or cost < best[0]:
                best = (cost, g, gain)
        if best is None:
            break  # every group is at its highest scanned ratio
        _, g, gain = best
        level[g] += 1
        saved += gain
    return {name: scan_result.ratios[level[g]] for g, name in enumerate(scan_result.groups) if level[g] >= 0}
