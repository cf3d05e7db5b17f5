"""Structured channel pruning through torch-pruning's dependency graph (channels are really removed).

The work is split so that a slider move is cheap:

1. `analyse` traces the model once and scores every channel of every prunable group (cache it).
2. `make_plan` turns scores + ratio + allocation into the channel indices to remove (fast, pure).
3. `apply_plan` removes those channels from a deep copy of the base model.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from .importance import get_criterion

logger = logging.getLogger(__name__)

ALLOCATIONS = ("uniform", "global")

# Never remove more than this share of one group, whatever the allocation: a layer left with a
# handful of channels turns the whole network's output into noise, and zero channels would break it.
MAX_GROUP_RATIO = 0.9
MAX_RATIO = 0.9


@dataclass(frozen=True)
class GroupScores:
    """Importance scores of one dependency group: channels that can only be removed together."""

    name: str  # name of the root layer (the conv whose output channels define the group)
    layer_type: str  # e.g. "Conv2d" or "Conv2d (depthwise)"
    members: tuple[str, ...]  # every layer the group touches, as "name (out)" or "name (in)"
    scores: np.ndarray  # (channels,) importance of each output channel of the root layer

    @property
    def channels(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class Analysis:
    """Scores of every prunable group of one model under one criterion."""

    criterion: str
    groups: tuple[GroupScores, ...]

    def group(self, name: str) -> GroupScores:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no prunable group rooted at {name!r}")


@dataclass(frozen=True)
class PruningPlan:
    """Channels to remove from each group, as indices of the root layer's output channels."""

    ratio: float  # requested channel ratio
    allocation: str
    remove: dict[str, tuple[int, ...]]  # group root name -> sorted channel indices to remove
    round_to: int = 1  # kept channels are a multiple of this, or all of a group

    def removed_count(self, name: str) -> int:
        return len(self.remove.get(name, ()))


def check_ratio(ratio: float) -> float:
    """Validate a channel ratio, raising ValueError with the accepted range."""
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= ratio <= MAX_RATIO:
        raise ValueError(f"invalid ratio {ratio!r}: use a number from 0 to {MAX_RATIO}")
    return float(ratio)


class StructuredPruningError(RuntimeError):
    """Raised when torch-pruning cannot trace or prune an architecture; masks still work on it."""


def _unsupported(model: nn.Module, step: str, error: Exception) -> StructuredPruningError:
    return StructuredPruningError(
        f"torch-pruning {importlib.metadata.version('torch-pruning')} could not {step} {type(model).__name__} for channel removal "
        f"({type(error).__name__}: {error}). Zeroing weights with masks works on every model: choose the masks mode."
    )


def _build_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    # torch-pruning follows autograd's graph while tracing, so gradients must be on here even if
    # the caller runs under torch.no_grad() or inference_mode.
    with torch.enable_grad():
        model.requires_grad_(True)
        try:
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        except Exception as error:  # e.g. ShuffleNetV2's channel shuffle: ZeroDivisionError in index mapping
            raise _unsupported(model, "trace", error) from error


def _ignored_modules(model: nn.Module, output_heads: tuple[str, ...]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [name for name in output_heads if name not in modules]
    if missing:
        raise ValueError(f"output heads not found in the model: {', '.join(missing)}")
    return [modules[name] for name in output_heads]


def _describe_layer(module: nn.Module) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
        kind += " (depthwise)"
    return kind


def _group_members(group: tp.Group, names: dict[nn.Module, str], DG: tp.DependencyGraph) -> tuple[str, ...]:
    members = []
    for dep, _ in group:
        module = dep.target.module
        if module not in names:
            continue  # functional nodes such as additions have no module name
        direction = "out" if DG.is_out_channel_pruning_fn(dep.handler) else "in"
        label = f"{names[module]} ({direction})"
        if label not in members:
            members.append(label)
    return tuple(members)


def analyse(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    criterion: str,
    output_heads: tuple[str, ...] = (),
    backward: Callable[[nn.Module], None] | None = None,
) -> Analysis:
    """Score every prunable group of `model` with `criterion`; the model itself is not touched.

    Criteria that read gradients need `backward`: it runs a loss on calibration images through
    the copy it is given and calls backward() on it.
    """
    criterion_record = get_criterion(criterion)
    criterion_record.check_applies(model)
    if criterion_record.needs_gradients and backward is None:
        raise ValueError(f"criterion {criterion!r} needs calibration images to compute gradients")
    work = copy.deepcopy(model).eval()  # tracing registers hooks, so keep them off the shared model
    DG = _build_graph(work, example_inputs)
    if criterion_record.needs_gradients:
        with torch.enable_grad():
            work.zero_grad(set_to_none=True)
            backward(work)
    names = {module: name for name, module in work.named_modules()}
    scorer = criterion_record.factory()

    groups = []
    ignored = _ignored_modules(work, output_heads)
    for group in DG.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        scores = scorer(group)
        if scores is None:
            continue
        groups.append(
            GroupScores(
                name=names[root],
                layer_type=_describe_layer(root),
                members=_group_members(group, names, DG),
                scores=scores.detach().float().cpu().numpy(),
            )
        )
    # torch-pruning yields groups from the output backwards; show them in network order
    order = {name: index for index, name in enumerate(names.values())}
    groups.sort(key=lambda group: order[group.name])
    logger.info("scored %d groups with %s", len(groups), criterion)
    return Analysis(criterion=criterion, groups=tuple(groups))


def _lowest(scores: np.ndarray, count: int) -> tuple[int, ...]:
    # A stable sort keeps ties (e.g. all-zero filters) in channel order, so plans are reproducible.
    order = np.argsort(scores, kind="stable")
    return tuple(sorted(int(i) for i in order[:count]))


ROUNDINGS = (1, 4, 8, 16)


def _group_cap(channels: int, max_layer_ratio: float = MAX_GROUP_RATIO) -> int:
    # At most max_layer_ratio of a group goes, and at least one channel always stays.
    return max(0, min(channels - 1, int(math.floor(channels * max_layer_ratio + 1e-9))))


def _round_kept(channels: int, count: int, round_to: int) -> int:
    """Lower `count` so the channels kept are a multiple of `round_to` (or all of them).

    Example: 24 channels, 10 to remove, round_to=8 -> 14 kept rounds up to 16, so 8 are removed.
    """
    kept = channels - count
    rounded = min(channels, -(-kept // round_to) * round_to)
    return channels - rounded


def make_plan(
    analysis: Analysis,
    ratio: float,
    *,
    allocation: str = "uniform",
    round_to: int = 1,
    overrides: Mapping[str, float] | None = None,
    max_layer_ratio: float = MAX_GROUP_RATIO,
) -> PruningPlan:
    """Choose the channels to remove at channel ratio `ratio`.

    uniform: every group loses floor(ratio * channels) of its lowest-scoring channels.
    global: scores are divided by their group's mean, so layers compare on one scale, and the
    lowest `ratio` of all channels go.
    `overrides` sets the ratio of single groups (by root layer name), outside the global ranking.
    Each group loses at most `max_layer_ratio` of its channels, and the channels it keeps are
    rounded up to a multiple of `round_to`, because kernels run faster on aligned widths.
    """
    ratio = check_ratio(ratio)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"invalid allocation {allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
    if round_to not in ROUNDINGS:
        raise ValueError(f"invalid channel rounding {round_to!r}: choose one of {', '.join(map(str, ROUNDINGS))}")
    if not 0.0 <= max_layer_ratio <= MAX_GROUP_RATIO:
        raise ValueError(f"invalid per-layer maximum {max_layer_ratio!r}: use a number from 0 to {MAX_GROUP_RATIO}")
    overrides = dict(overrides or {})
    known = {group.name for group in analysis.groups}
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"override for unknown layer {name!r}: use a dependency group root layer")
        check_ratio(value)

    free = [group for group in analysis.groups if group.name not in overrides]
    if allocation == "uniform":
        counts = {group.name: int(math.floor(group.channels * ratio + 1e-9)) for group in free}
    else:
        counts = _global_counts(free, ratio, max_layer_ratio)
    for group in analysis.groups:
        if group.name in overrides:
            counts[group.name] = int(math.floor(group.channels * overrides[group.name] + 1e-9))

    remove: dict[str, tuple[int, ...]] = {}
    for group in analysis.groups:
        count = min(counts[group.name], _group_cap(group.channels, max_layer_ratio))
        count = _round_kept(group.channels, count, round_to)
        remove[group.name] = _lowest(group.scores, count)
    return PruningPlan(ratio=ratio, allocation=allocation, remove=remove, round_to=round_to)


def _global_counts(groups: list[GroupScores], ratio: float, max_layer_ratio: float) -> dict[str, int]:
    # One ranking over all channels of all groups, on scores normalised by each group's mean.
    # Normalising keeps the order inside a group, so each group loses its lowest raw scores.
    entries = []  # (normalised score, group index, channel)
    for g, group in enumerate(groups):
        mean = float(np.mean(group.scores))
        normalised = group.scores / mean if mean > 0 else np.zeros_like(group.scores)
        entries.extend((float(s), g, c) for c, s in enumerate(normalised))
    entries.sort()

    total = sum(group.channels for group in groups)
    budget = int(math.floor(total * ratio + 1e-9))
    counts = [0] * len(groups)
    for _, g, _ in entries:
        if budget == 0:
            break
        if counts[g] < _group_cap(groups[g].channels, max_layer_ratio):
            counts[g] += 1
            budget -= 1
    return {group.name: counts[g] for g, group in enumerate(groups)}


def apply_plan(base_model: nn.Module, plan: PruningPlan, example_inputs: torch.Tensor) -> nn.Module:
    """Remove the planned channels from a deep copy of `base_model` and return the copy."""
    model = copy.deepcopy(base_model).eval()
    if not any(plan.remove.values()):
        return model

    DG = _build_graph(model, example_inputs)
    modules = dict(model.named_modules())
    for name, indices in plan.remove.items():
        if not indices:
            continue
        root = modules[name]
        pruner = DG.get_pruner_of_module(root)
        group = DG.get_pruning_group(root, pruner.prune_out_channels, list(indices))
        if not DG.check_pruning_group(group):
            raise ValueError(f"cannot remove {len(indices)} channels from group {name!r}: it would leave none")
        try:
            group.prune()
        except (RuntimeError, IndexError) as error:  # e.g. RegNet's grouped convolutions: index out of bounds
            raise _unsupported(base_model, "prune", error) from error
    # Tracing switched gradients on; the pruned copy is for inference only.
    model.requires_grad_(False)
    return model


def layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels (or features) of every conv and linear layer, by name."""
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            counts[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            counts[name] = module.out_features
    return counts
