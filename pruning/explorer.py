"""One pruning run from a configuration: the entry point shared by the CLI, the dashboard and tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .catalog import ModelEntry, get_model_entry
from .importance import DEFAULT_CRITERION, get_criterion
from .metrics import count_macs, count_parameters, serialized_size_bytes
from .structured import ALLOCATIONS, Analysis, PruningPlan, analyse, apply_plan, check_ratio, layer_channels, make_plan
from .unstructured import apply_masks, count_nonzero_parameters, weight_sparsity

MODES = ("structured", "unstructured")


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruned model; hashable, so it can key a cache."""

    model: str
    ratio: float  # share of channels (structured) or of weights (unstructured) to remove
    criterion: str = DEFAULT_CRITERION
    mode: str = "structured"
    allocation: str = "uniform"  # structured: uniform or global; unstructured: layer scope for uniform

    def validate(self) -> PruneConfig:
        """Check every field, raising ValueError or KeyError that names the bad value and the choices."""
        get_model_entry(self.model)
        get_criterion(self.criterion)
        check_ratio(self.ratio)
        if self.mode not in MODES:
            raise ValueError(f"invalid mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"invalid allocation {self.allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
        return self


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model, measured on the model itself."""

    params: int
    nonzero_params: int  # differs from params only after unstructured masking
    macs: int  # for the catalogue entry's example input
    size_bytes: int  # torch.save of the state_dict


def model_stats(model: nn.Module, example_inputs: torch.Tensor) -> ModelStats:
    return ModelStats(
        params=count_parameters(model),
        nonzero_params=count_nonzero_parameters(model),
        macs=count_macs(model, example_inputs),
        size_bytes=serialized_size_bytes(model),
    )


@dataclass(frozen=True)
class LayerReport:
    """Channels and weight sparsity of one conv or linear layer, dense vs pruned."""

    name: str
    channels_dense: int
    channels_pruned: int
    weights: int  # weight elements in the pruned layer
    sparsity: float  # share of zero weights in the pruned layer


@dataclass
class PruneResult:
    """A pruned copy of the base model with the plan that made it and per-layer measurements."""

    config: PruneConfig
    model: nn.Module
    plan: PruningPlan | None  # None in unstructured mode
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def channel_reduction(self) -> float:
        """Share of conv and linear output channels removed, measured on the pruned model."""
        dense = sum(layer.channels_dense for layer in self.layers)
        pruned = sum(layer.channels_pruned for layer in self.layers)
        return 1.0 - pruned / dense if dense else 0.0

    @property
    def weight_sparsity(self) -> float:
        """Share of all conv and linear weights that are zero in the pruned model."""
        total = sum(layer.weights for layer in self.layers)
        zeros = sum(layer.sparsity * layer.weights for layer in self.layers)
        return zeros / total if total else 0.0


def analyse_entry(entry: ModelEntry, base_model: nn.Module, criterion: str) -> Analysis:
    return analyse(base_model, entry.example_inputs(), criterion=criterion, output_heads=entry.output_heads)


def prune(
    base_model: nn.Module,
    config: PruneConfig,
    *,
    analysis: Analysis | None = None,
) -> PruneResult:
    """Prune a deep copy of `base_model` as `config` says; `base_model` itself is never modified.

    Pass a cached `analysis` (same model and criterion) to skip re-scoring in structured mode.
    """
    config.validate()
    entry = get_model_entry(config.model)

    plan = None
    if config.mode == "structured":
        if analysis is None:
            analysis = analyse_entry(entry, base_model, config.criterion)
        elif analysis.criterion != config.criterion:
            raise ValueError(f"analysis was scored with {analysis.criterion!r}, config asks for {config.criterion!r}")
        plan = make_plan(analysis, config.ratio, allocation=config.allocation)
        model = apply_plan(base_model, plan, entry.example_inputs())
    else:
        scope = "global" if config.allocation == "global" else "layer"
        model = apply_masks(base_model, config.ratio, output_heads=entry.output_heads, scope=scope)
        model.requires_grad_(False)

    dense_channels = layer_channels(base_model)
    pruned_channels = layer_channels(model)
    sparsity = weight_sparsity(model)
    modules = dict(model.named_modules())
    layers = [
        LayerReport(
            name=name,
            channels_dense=dense_channels[name],
            channels_pruned=pruned_channels[name],
            weights=modules[name].weight.numel(),
            sparsity=sparsity[name],
        )
        for name in dense_channels
    ]
    return PruneResult(config=config, model=model, plan=plan, layers=layers)
