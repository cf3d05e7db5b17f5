import math

import numpy as np
import pytest
import torch
from conftest import assert_same_state, state_snapshot

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, analyse_entry, prune
from pruning.importance import applicable_criteria, list_criteria
from pruning.metrics import count_macs, count_parameters
from pruning.structured import MAX_GROUP_RATIO, check_ratio, make_plan

MODELS = ["mobilenet_v2", "hed"]


def _image_batch(name):
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 224, 224) if name == "mobilenet_v2" else (1, 3, 96, 128)
    return torch.randn(shape, generator=generator)


@pytest.mark.parametrize("name", MODELS)
def test_ratio_zero_identical_outputs(name, base_models):
    base = base_models[name]
    result = prune(base, PruneConfig(name, 0.0))
    inputs = _image_batch(name)
    with torch.inference_mode():
        assert torch.equal(base(inputs), result.model(inputs))
    assert count_parameters(result.model) == count_parameters(base)
    assert result.model is not base


@pytest.mark.parametrize("name", MODELS)
def test_half_ratio_shrinks_model(name, base_models):
    base = base_models[name]
    entry = get_model_entry(name)
    result = prune(base, PruneConfig(name, 0.5))
    example = entry.example_inputs()

    assert count_parameters(result.model) < count_parameters(base)
    assert count_macs(result.model, example) < count_macs(base, example)
    inputs = _image_batch(name)
    with torch.inference_mode():
        dense_out = base(inputs)
        pruned_out = result.model(inputs)
    assert pruned_out.shape == dense_out.shape
    assert torch.isfinite(pruned_out).all()


def test_mobilenet_half_ratio_macs_under_half(mobilenet):
    example = get_model_entry("mobilenet_v2").example_inputs()
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.5))
    assert count_macs(result.model, example) < count_macs(mobilenet, example) / 2


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["structured", "unstructured"])
def test_base_model_unchanged(name, mode, base_models):
    base = base_models[name]
    snapshot = state_snapshot(base)
    requires_grad = [p.requires_grad for p in base.parameters()]
    for allocation in ("uniform", "global"):
        prune(base, PruneConfig(name, 0.6, mode=mode, allocation=allocation))
    assert_same_state(base, snapshot)
    assert [p.requires_grad for p in base.parameters()] == requires_grad
    assert not base.training


@pytest.mark.parametrize("name", MODELS)
def test_output_heads_never_pruned(name, base_models):
    entry = get_model_entry(name)
    result = prune(base_models[name], PruneConfig(name, 0.9, allocation="global"))
    by_name = {layer.name: layer for layer in result.layers}
    for head in entry.output_heads:
        assert by_name[head].channels_pruned == by_name[head].channels_dense


def test_uniform_plan_counts(mobilenet_l1):
    ratio = 0.37
    plan = make_plan(mobilenet_l1, ratio)
    for group in mobilenet_l1.groups:
        expected = min(math.floor(group.channels * ratio), group.channels - 1)
        assert plan.removed_count(group.name) == expected
        removed = plan.remove[group.name]
        kept = sorted(set(range(group.channels)) - set(removed))
        if removed:
            # the removed channels are the lowest-scoring ones
            assert group.scores[list(removed)].max() <= group.scores[kept].min()


def test_global_plan_total_and_caps(mobilenet_l1):
    plan = make_plan(mobilenet_l1, 0.5, allocation="global")
    total = sum(group.channels for group in mobilenet_l1.groups)
    removed = sum(len(indices) for indices in plan.remove.values())
    assert removed == math.floor(total * 0.5)
    for group in mobilenet_l1.groups:
        assert plan.removed_count(group.name) <= math.floor(group.channels * MAX_GROUP_RATIO)
    # global ranking prunes layers unevenly, unlike uniform
    shares = [plan.removed_count(g.name) / g.channels for g in mobilenet_l1.groups]
    assert max(shares) - min(shares) > 0.1


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_params_never_grow_with_ratio(mobilenet, mobilenet_l1, allocation):
    ratios = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    counts = [
        count_parameters(prune(mobilenet, PruneConfig("mobilenet_v2", r, allocation=allocation), analysis=mobilenet_l1).model)
        for r in ratios
    ]
    assert all(later <= earlier for earlier, later in zip(counts, counts[1:])), counts
    assert counts[-1] < counts[0] / 5


def test_max_ratio_keeps_every_layer(base_models):
    for name, base in base_models.items():
        result = prune(base, PruneConfig(name, 0.9))
        assert all(layer.channels_pruned >= 1 for layer in result.layers)
        inputs = _image_batch(name)
        with torch.inference_mode():
            assert torch.isfinite(result.model(inputs)).all()


# HED has no BatchNorm, so bn_scale does not apply to it (test_bn_scale_rejected_without_batchnorm).
CRITERION_CASES = [(name, c) for name in MODELS for c in list_criteria() if (name, c) != ("hed", "bn_scale")]


@pytest.mark.parametrize(("name", "criterion"), CRITERION_CASES)
def test_every_criterion_scores_every_channel(name, criterion, base_models):
    analysis = analyse_entry(get_model_entry(name), base_models[name], criterion)
    assert analysis.groups
    for group in analysis.groups:
        assert group.scores.shape == (group.channels,)
        assert np.isfinite(group.scores).all()
    result = prune(base_models[name], PruneConfig(name, 0.3, criterion=criterion), analysis=analysis)
    assert result.channel_reduction > 0.2


def test_criteria_rank_differently(mobilenet):
    entry = get_model_entry("mobilenet_v2")
    l1 = make_plan(analyse_entry(entry, mobilenet, "l1"), 0.5)
    random = make_plan(analyse_entry(entry, mobilenet, "random"), 0.5)
    assert l1.remove != random.remove


def test_analysis_for_other_criterion_rejected(mobilenet, mobilenet_l1):
    with pytest.raises(ValueError, match="scored with 'l1'"):
        prune(mobilenet, PruneConfig("mobilenet_v2", 0.5, criterion="l2"), analysis=mobilenet_l1)


@pytest.mark.parametrize("ratio", [-0.1, 0.95, float("nan"), "0.5"])
def test_invalid_ratio_rejected(ratio):
    with pytest.raises(ValueError, match="invalid ratio"):
        check_ratio(ratio)


def test_dependency_group_members(mobilenet_l1):
    # a residual stage: the projection convs of blocks joined by additions share channels
    group = mobilenet_l1.group("features.16.conv.2")
    outputs = {member for member in group.members if member.endswith("(out)")}
    assert {"features.14.conv.2 (out)", "features.15.conv.2 (out)", "features.16.conv.2 (out)"} <= outputs


def test_bn_scale_rejected_without_batchnorm(hed, mobilenet):
    assert "bn_scale" not in applicable_criteria(hed)
    assert "bn_scale" in applicable_criteria(mobilenet)
    with pytest.raises(ValueError, match="no BatchNorm layers"):
        prune(hed, PruneConfig("hed", 0.3, criterion="bn_scale"))


@pytest.mark.parametrize("round_to", [4, 8, 16])
def test_rounding_keeps_aligned_widths(mobilenet, mobilenet_l1, round_to):
    plan = make_plan(mobilenet_l1, 0.45, round_to=round_to)
    for group in mobilenet_l1.groups:
        kept = group.channels - plan.removed_count(group.name)
        assert kept % round_to == 0 or kept == group.channels
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.45, round_to=round_to), analysis=mobilenet_l1)
    convs = [layer for layer in result.layers if layer.channels_pruned != layer.channels_dense]
    assert convs
    assert all(layer.channels_pruned % round_to == 0 for layer in convs)


def test_rounding_worked_example():
    from pruning.structured import _round_kept

    # 24 channels, 10 to remove: 14 kept rounds up to 16, so 8 go
    assert _round_kept(24, 10, 8) == 8
    assert _round_kept(24, 10, 1) == 10
    # a group narrower than the rounding keeps everything
    assert _round_kept(3, 2, 4) == 0


def test_overrides_and_layer_maximum(mobilenet_l1):
    first, second = mobilenet_l1.groups[0], mobilenet_l1.groups[1]
    plan = make_plan(mobilenet_l1, 0.5, overrides={first.name: 0.0, second.name: 0.75})
    assert plan.removed_count(first.name) == 0
    assert plan.removed_count(second.name) == math.floor(second.channels * 0.75)
    capped = make_plan(mobilenet_l1, 0.9, max_layer_ratio=0.25)
    for group in mobilenet_l1.groups:
        assert capped.removed_count(group.name) <= math.floor(group.channels * 0.25)
    with pytest.raises(ValueError, match="unknown layer"):
        make_plan(mobilenet_l1, 0.5, overrides={"features.99": 0.5})
    with pytest.raises(ValueError, match="invalid channel rounding"):
        make_plan(mobilenet_l1, 0.5, round_to=3)


def test_custom_callable_criterion(mobilenet, monkeypatch):
    from pruning import importance
    from pruning.importance import register_callable
    from pruning.registry import Registry

    # a private copy of the registry, so the test criterion does not reach other tests
    registry = Registry("criterion")
    for _, criterion in importance._REGISTRY.items():
        registry.register(criterion)
    monkeypatch.setattr(importance, "_REGISTRY", registry)

    # scores = channel index, so the first channels of every group go
    register_callable("by_index", lambda group: torch.arange(len(group[0].idxs), dtype=torch.float32), label="By index")
    analysis = analyse_entry(get_model_entry("mobilenet_v2"), mobilenet, "by_index")
    plan = make_plan(analysis, 0.25)
    group = analysis.groups[0]
    assert plan.remove[group.name] == tuple(range(math.floor(group.channels * 0.25)))
    with pytest.raises(ValueError, match="already registered"):
        register_callable("by_index", lambda group: None)
