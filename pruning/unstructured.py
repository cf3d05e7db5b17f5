"""Unstructured magnitude pruning through `torch.nn.utils.prune`: weights become zeros, shapes stay.

Masks are made permanent before a model leaves this module, so copies carry plain weights: a
model with live masks carries forward pre-hooks and duplicate tensors that do not deep-copy,
pickle or export cleanly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

SCOPES = ("layer", "global")


def _prunable_weights(model: nn.Module, output_heads: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in output_heads
    ]


def apply_masks(
    base_model: nn.Module,
    ratio: float,
    *,
    output_heads: tuple[str, ...] = (),
    scope: str = "layer",
) -> nn.Module:
    """Zero the smallest-magnitude share `ratio` of conv and linear weights on a deep copy.

    scope="layer" zeroes `ratio` of each layer; scope="global" ranks all weights together, so
    layers with small weights lose more. Output heads keep all their weights.
    """
    if scope not in SCOPES:
        raise ValueError(f"invalid scope {scope!r}: choose one of {', '.join(SCOPES)}")
    model = copy.deepcopy(base_model).eval()
    targets = _prunable_weights(model, output_heads)
    if ratio <= 0 or not targets:
        return model

    if scope == "global":
        prune.global_unstructured(
            [(module, "weight") for _, module in targets], pruning_method=prune.L1Unstructured, amount=ratio
        )
    else:
        for _, module in targets:
            prune.l1_unstructured(module, "weight", amount=ratio)

    # make the zeros permanent: drops weight_orig, weight_mask and the pre-hook
    for _, module in targets:
        prune.remove(module, "weight")
    return model


def weight_sparsity(model: nn.Module) -> dict[str, float]:
    """Share of exactly-zero weights in each conv and linear layer, by name."""
    sparsity = {}
    for name, module in _prunable_weights(model, ()):
        weight = module.weight.detach()
        sparsity[name] = float((weight == 0).sum()) / weight.numel()
    return sparsity


def count_nonzero_parameters(model: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p.detach())) for p in model.parameters()))
