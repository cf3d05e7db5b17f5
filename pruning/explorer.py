"""One pruning run from a configuration: the entry point shared by the CLI, the dashboard and tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .calibration import calibration_images, to_batch
from .catalog import ModelEntry, get_model_entry
from .importance import DEFAULT_CRITERION, get_criterion
from .metrics import count_macs, count_parameters, serialized_size_bytes
from .structured import (
    ALLOCATIONS,
    MAX_GROUP_RATIO,
    ROUNDINGS,
    Analysis,
    PruningPlan,
    analyse,
    apply_plan,
    check_ratio,
    layer_channels,
    make_plan,
)
from .tasks import distillation_loss
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
    round_to: int = 1  # structured: kept channels per group rounded up to a multiple of this
    overrides: tuple[tuple[str, float], ...] = ()  # structured: (group root layer, ratio) pairs
    max_layer_ratio: float = MAX_GROUP_RATIO  # structured: no group loses more than this share

    def validate(self) -> PruneConfig:
        """Check every field, raising ValueError or KeyError that names the bad value and the choices."""
        get_model_entry(self.model)
        get_criterion(self.criterion)
        check_ratio(self.ratio)
        if self.mode not in MODES:
            raise ValueError(f"invalid mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"invalid allocation {self.allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
        if self.round_to not in ROUNDINGS:
            raise ValueError(f"invalid channel rounding {self.round_to!r}: choose one of {', '.join(map(str, ROUNDINGS))}")
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
    output_head: bool = False  # never pruned, so left out of the totals below


@dataclass
class PruneResult:
    """A pruned copy of the base model with the plan that made it and per-layer measurements."""

    config: PruneConfig
    model: nn.Module
    plan: PruningPlan | None  # None in unstructured mode
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def channel_reduction(self) -> float:
        """Share of output channels removed from prunable conv and linear layers, measured on the pruned model."""
        layers = [layer for layer in self.layers if not layer.output_head]
        dense = sum(layer.channels_dense for layer in layers)
        pruned = sum(layer.channels_pruned for layer in layers)
        return 1.0 - pruned / dense if dense else 0.0

    @property
    def weight_sparsity(self) -> float:
        """Share of the weights of prunable conv and linear layers that are zero in the pruned model."""
        layers = [layer for layer in self.layers if not layer.output_head]
        total = sum(layer.weights for layer in layers)
        zeros = sum(layer.sparsity * layer.weights for layer in layers)
        return zeros / total if total else 0.0


# Calibration images used for gradients: enough to average out single photos, small enough
# for one forward and backward pass on a CPU in a few seconds.
GRADIENT_IMAGES = 16


def analyse_entry(entry: ModelEntry, base_model: nn.Module, criterion: str) -> Analysis:
    """Score every prunable group of a catalogue model, with calibration images if the criterion needs them."""
    backward = None
    if get_criterion(criterion).needs_gradients:
        inputs = to_batch(entry, calibration_images(entry)[:GRADIENT_IMAGES])
        with torch.inference_mode():
            teacher = base_model(inputs)

        def backward(student: nn.Module) -> None:
            distillation_loss(entry, student(inputs), teacher.clone()).backward()

    return analyse(
        base_model, entry.example_inputs(), criterion=criterion, output_heads=entry.output_heads, backward=backward
    )


def prune(
    base_model: nn.Module,
    config: PruneConfig,
    *,
    analysis: Analysis | None = None,
) -> PruneResult:
    """Prune a deep copy of `base_model` as `config` specifies; `base_model` itself is never modified.

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
        plan = make_plan(
            analysis,
            config.ratio,
            allocation=config.allocation,
            round_to=config.round_to,
            overrides=dict(config.overrides),
            max_layer_ratio=config.max_layer_ratio,
        )
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
            output_head=name in entry.output_heads,
        )
        for name in dense_channels
    ]
    return PruneResult(config=config, model=model, plan=plan, layers=layers)
