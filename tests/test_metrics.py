import io
import math

import pytest
import torch
from torch import nn

from pruning.metrics import (
    classification_fidelity,
    count_macs,
    count_parameters,
    edge_map_fidelity,
    measure_latency,
    serialized_size_bytes,
)


def test_counts_on_known_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    inputs = torch.zeros(1, 3, 10, 10)
    assert count_parameters(model) == 8 * 3 * 3 * 3
    # every output pixel of every output channel costs in_channels * 3 * 3 MACs
    assert count_macs(model, inputs) == 8 * 10 * 10 * 3 * 3 * 3


def test_size_tracks_parameters():
    small = serialized_size_bytes(nn.Linear(100, 10))
    large = serialized_size_bytes(nn.Linear(1000, 100))
    assert large > 50 * 4 * 1000 + small  # float32 weights dominate


def test_latency_stats_are_ordered():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())
    stats = measure_latency(model, torch.randn(1, 3, 64, 64), warmup=1, min_runs=5, max_runs=7, budget_s=0.0)
    assert 5 <= stats.runs <= 7
    assert 0 < stats.q1_ms <= stats.median_ms <= stats.q3_ms
    assert stats.threads == torch.get_num_threads()


def test_classification_fidelity_identical():
    logits = torch.randn(4, 10)
    fidelity = classification_fidelity(logits, logits.clone())
    assert fidelity["top1_agreement"] == 1.0
    assert fidelity["top5_overlap"] == 1.0
    assert fidelity["kl_divergence"] == pytest.approx(0.0, abs=1e-6)


def test_classification_fidelity_disagreeing():
    dense = torch.tensor([[5.0, 0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0]])
    pruned = torch.tensor([[0, 5.0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0]])
    fidelity = classification_fidelity(dense, pruned)
    assert fidelity["top1_agreement"] == 0.5
    assert fidelity["kl_divergence"] > 1.0


def test_edge_fidelity_values():
    dense = torch.zeros(1, 1, 10, 10)
    dense[..., 5, :] = 1.0  # one horizontal edge of 10 pixels
    half = dense.clone()
    half[..., 5, 5:] = 0.0
    same = edge_map_fidelity(dense, dense)
    assert math.isinf(same["psnr_db"])
    assert same["edge_f1"] == 1.0
    partial = edge_map_fidelity(dense, half)
    # precision 1, recall 0.5 -> F1 = 2/3; MSE = 5/100 -> PSNR = 10*log10(20)
    assert partial["edge_f1"] == pytest.approx(2 / 3)
    assert partial["psnr_db"] == pytest.approx(10 * math.log10(20))


def test_fidelity_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        edge_map_fidelity(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def _size_with_bytesio(model: nn.Module) -> int:
    # the original implementation, kept here to prove the byte counter returns the same number
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_size_equals_bytesio_size(name, base_models):
    assert serialized_size_bytes(base_models[name]) == _size_with_bytesio(base_models[name])


def test_size_equals_bytesio_size_after_pruning(mobilenet, mobilenet_l1):
    from pruning.structured import apply_plan, make_plan

    pruned = apply_plan(mobilenet, make_plan(mobilenet_l1, 0.5), torch.zeros(1, 3, 224, 224))
    assert serialized_size_bytes(pruned) == _size_with_bytesio(pruned)


def test_latency_prepared_by_default():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    stats = measure_latency(model, torch.randn(1, 3, 32, 32), warmup=1, min_runs=3, max_runs=3, budget_s=0.0)
    assert stats.preparation == "fold-bn+torchscript"
    assert isinstance(model[1], nn.BatchNorm2d)  # the caller's model keeps its layers


def test_latency_eager_on_request():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    stats = measure_latency(model, torch.randn(1, 3, 32, 32), warmup=1, min_runs=3, max_runs=3, budget_s=0.0, prepare=False)
    assert stats.preparation == "eager"
