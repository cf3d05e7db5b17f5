import copy
import pickle

import pytest
import torch
from conftest import assert_same_state, state_snapshot

from pruning.explorer import PruneConfig, prune
from pruning.metrics import count_parameters
from pruning.unstructured import apply_masks, count_nonzero_parameters, weight_sparsity


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_reach_requested_sparsity(mobilenet, scope):
    masked = apply_masks(mobilenet, 0.5, output_heads=("classifier.1",), scope=scope)
    sparsity = weight_sparsity(masked)
    prunable = {name: value for name, value in sparsity.items() if name != "classifier.1"}
    assert sparsity["classifier.1"] < 0.01
    if scope == "layer":
        assert all(abs(value - 0.5) < 0.01 for value in prunable.values())
    else:
        # a global ranking zeroes layers unevenly but hits the total
        assert max(prunable.values()) - min(prunable.values()) > 0.1
    assert count_parameters(masked) == count_parameters(mobilenet)
    modules = dict(masked.named_modules())
    prunable_weights = sum(modules[name].weight.numel() for name in prunable)
    zeros = count_parameters(masked) - count_nonzero_parameters(masked)
    assert zeros == pytest.approx(0.5 * prunable_weights, rel=0.01)


def test_masked_copy_has_no_live_masks(mobilenet):
    masked = apply_masks(mobilenet, 0.3, output_heads=("classifier.1",))
    names = {name for name, _ in masked.named_parameters()} | {name for name, _ in masked.named_buffers()}
    assert not any(name.endswith(("weight_orig", "weight_mask")) for name in names)
    assert all(not module._forward_pre_hooks for module in masked.modules())
    # plain weights deep-copy and pickle
    clone = copy.deepcopy(masked)
    restored = pickle.loads(pickle.dumps(clone))
    inputs = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(masked(inputs), restored(inputs))


def test_masks_leave_base_untouched(mobilenet):
    snapshot = state_snapshot(mobilenet)
    apply_masks(mobilenet, 0.8, scope="global")
    assert_same_state(mobilenet, snapshot)


def test_unstructured_mode_keeps_shapes(hed):
    result = prune(hed, PruneConfig("hed", 0.5, mode="unstructured"))
    assert result.plan is None
    assert result.channel_reduction == 0.0
    assert 0.45 < result.weight_sparsity < 0.55


def test_invalid_scope_rejected(mobilenet):
    with pytest.raises(ValueError, match="invalid scope"):
        apply_masks(mobilenet, 0.5, scope="row")
