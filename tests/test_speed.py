import pytest
import torch
from conftest import state_snapshot
from torch import nn

from pruning.explorer import PruneConfig, prune
from pruning.speed import (
    DEFAULT_OPTIONS,
    EAGER_OPTIONS,
    InferenceOptions,
    PreparedModel,
    fold_batchnorm,
    median_and_quartiles,
    prepare_for_inference,
    time_interleaved,
)


def _close(expected: torch.Tensor, actual: torch.Tensor) -> bool:
    scale = float(expected.abs().max())
    return bool(torch.allclose(expected, actual, rtol=1e-3, atol=1e-3 * scale))


def _outputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(inputs)


@pytest.fixture(scope="module")
def image_batch():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_fold_removes_batchnorm(mobilenet, image_batch):
    folded = fold_batchnorm(mobilenet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in mobilenet.modules())
    assert _close(_outputs(mobilenet, image_batch), _outputs(folded, image_batch))


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_prepared_matches_eager(name, base_models, image_batch):
    model = base_models[name]
    before = state_snapshot(model)
    prepared = prepare_for_inference(model, image_batch)
    assert isinstance(prepared, PreparedModel)
    assert "torchscript" in prepared.steps
    assert _close(_outputs(model, image_batch), _outputs(prepared, image_batch))
    after = state_snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_hed_keeps_unfoldable_layers(hed, image_batch):
    # HED has no BatchNorm, so there is nothing to fold and its fx-untraceable forward is never traced by fx
    prepared = prepare_for_inference(hed, image_batch)
    assert "fold-bn" not in prepared.steps


def test_prepared_pruned_matches_eager(mobilenet, mobilenet_l1, image_batch):
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.5, round_to=8), analysis=mobilenet_l1)
    prepared = prepare_for_inference(result.model, image_batch)
    assert prepared.steps == ("fold-bn", "torchscript")
    assert _close(_outputs(result.model, image_batch), _outputs(prepared, image_batch))


def test_masks_made_permanent():
    # without gradients the masked weight is a leaf tensor, which deepcopy accepts
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval().requires_grad_(False)
    torch.nn.utils.prune.l1_unstructured(model[0], "weight", amount=0.5)
    inputs = torch.randn(1, 3, 16, 16)
    prepared = prepare_for_inference(model, inputs, options=InferenceOptions(torchscript=False))
    names = [name for name, _ in prepared.named_parameters()]
    assert "inner.0.weight" in names
    assert not any(name.endswith("weight_orig") for name in names)
    assert int((prepared.inner[0].weight == 0).sum()) == 8 * 3 * 3 * 3 // 2
    assert hasattr(model[0], "weight_orig")  # the caller's model keeps its mask
    assert _close(_outputs(model, inputs), _outputs(prepared, inputs))


def test_masked_model_matches_eager(mobilenet, image_batch):
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.5, mode="unstructured"))
    prepared = prepare_for_inference(result.model, image_batch)
    assert prepared.steps == ("fold-bn", "torchscript")
    assert _close(_outputs(result.model, image_batch), _outputs(prepared, image_batch))


def test_channels_last_matches_eager(mobilenet, image_batch):
    options = InferenceOptions(fold_batchnorm=True, channels_last=True, torchscript=False)
    prepared = prepare_for_inference(mobilenet, image_batch, options=options)
    assert prepared.steps == ("fold-bn", "channels-last")
    assert _close(_outputs(mobilenet, image_batch), _outputs(prepared, image_batch))


def test_eager_options_apply_nothing(mobilenet, image_batch):
    prepared = prepare_for_inference(mobilenet, image_batch, options=EAGER_OPTIONS)
    assert prepared.steps == ()
    assert prepared.description == "eager"
    assert DEFAULT_OPTIONS.torchscript


def test_untraceable_model_falls_back():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.norm(self.conv(x))
            return y * 2 if y.sum() > 0 else y  # value-dependent branch: fx cannot trace it

    model = DataDependent().eval()
    inputs = torch.randn(1, 3, 16, 16)
    prepared = prepare_for_inference(model, inputs, options=InferenceOptions(torchscript=False))
    assert prepared.steps == ()
    assert _close(_outputs(model, inputs), _outputs(prepared, inputs))


def test_interleaved_timings_per_model():
    models = {"a": nn.Conv2d(3, 4, 3), "b": nn.Conv2d(3, 8, 3)}
    timings = time_interleaved(models, torch.randn(1, 3, 16, 16), warmup=1, runs=4)
    assert set(timings) == {"a", "b"}
    assert all(len(values) == 4 for values in timings.values())
    assert all(value > 0 for values in timings.values() for value in values)


def test_median_and_quartiles_order():
    median, q1, q3 = median_and_quartiles([4.0, 1.0, 3.0, 2.0, 5.0])
    assert median == 3.0
    assert q1 <= median <= q3
    assert median_and_quartiles([7.0]) == (7.0, 7.0, 7.0)
