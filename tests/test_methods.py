"""Calibration sets, sensitivity scans, sweeps and recovery, on the real pretrained models."""

import numpy as np
import pytest
import torch
from conftest import assert_same_state, state_snapshot

from pruning.calibration import calibration_images, holdout_images, to_batch
from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, analyse_entry, prune
from pruning.metrics import count_macs
from pruning.recovery import (
    distill,
    kept_output_channels,
    recalibrate_batchnorm,
    reconstruct,
)
from pruning.sensitivity import ratios_for_budget, scan
from pruning.sweep import run_sweep
from pruning.tasks import infer, mirrored_output, output_fidelity

MOBILENET = get_model_entry("mobilenet_v2")


@pytest.fixture(scope="module")
def calibration():
    return to_batch(MOBILENET, calibration_images())


@pytest.fixture(scope="module")
def holdout():
    return to_batch(MOBILENET, holdout_images())


def test_calibration_and_holdout_disjoint():
    calibration_set = calibration_images()
    holdout_set = holdout_images()
    assert len(calibration_set) >= 32
    assert len(holdout_set) >= 48
    calibration_bytes = {image.tobytes() for image in calibration_set}
    assert not any(image.tobytes() in calibration_bytes for image in holdout_set)
    assert all(image.mode == "RGB" for image in calibration_set + holdout_set)


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_batches_have_example_size(name):
    entry = get_model_entry(name)
    batch = to_batch(entry, calibration_images()[:3])
    assert batch.shape == (3, *entry.example_input_shape[1:])


def test_taylor_differs_from_magnitude(mobilenet):
    taylor = analyse_entry(MOBILENET, mobilenet, "taylor")
    l1 = analyse_entry(MOBILENET, mobilenet, "l1")
    correlations = [np.corrcoef(t.scores, m.scores)[0, 1] for t, m in zip(taylor.groups, l1.groups)]
    assert all(np.isfinite(t.scores).all() and (t.scores >= 0).all() for t in taylor.groups)
    assert np.mean(correlations) < 0.95


@pytest.mark.slow
def test_sensitivity_scan_and_budget(mobilenet, mobilenet_l1, calibration):
    # a subset of groups keeps the scan short; the budget logic is the same for all
    from pruning.structured import Analysis

    subset = Analysis(criterion="l1", groups=mobilenet_l1.groups[-6:])
    result = scan(MOBILENET, mobilenet, subset, calibration[:8], ratios=(0.5, 0.75))
    assert result.fidelity.shape == (6, 2)
    assert ((0 <= result.fidelity) & (result.fidelity <= 1)).all()
    assert (result.macs_saved[:, 1] >= result.macs_saved[:, 0]).all()
    assert (result.macs_saved > 0).all()

    overrides = ratios_for_budget(result, 0.05)
    assert overrides
    pruned = prune(mobilenet, PruneConfig("mobilenet_v2", 0.0, overrides=tuple(overrides.items())), analysis=mobilenet_l1)
    example = MOBILENET.example_inputs()
    saved = 1 - count_macs(pruned.model, example) / count_macs(mobilenet, example)
    assert saved >= 0.04  # the additive estimate is close to the measured saving
    with pytest.raises(ValueError, match="invalid MAC reduction"):
        ratios_for_budget(result, 1.5)


def test_sweep_curves_monotonic_cost(mobilenet, holdout):
    points = run_sweep("mobilenet_v2", mobilenet, holdout[:8], criteria=("l1", "random"), ratios=(0.0, 0.3, 0.6), latency_budget_s=0.0)
    assert len(points) == 6
    for criterion in ("l1", "random"):
        rows = [p for p in points if p.criterion == criterion]
        assert rows[0].fidelity == 1.0
        assert rows[0].params > rows[1].params > rows[2].params
        assert rows[0].macs > rows[1].macs > rows[2].macs
        assert all(p.latency_ms > 0 for p in rows)


def test_batchnorm_recalibration_keeps_dense_fixed(mobilenet, calibration, holdout):
    snapshot = state_snapshot(mobilenet)
    same = recalibrate_batchnorm(mobilenet, mobilenet, calibration)
    dense_output = infer(mobilenet, holdout)
    assert output_fidelity(MOBILENET, dense_output, infer(same, holdout))["top1_agreement"] == 1.0
    assert_same_state(mobilenet, snapshot)


@pytest.mark.slow
def test_reconstruction_recovers_agreement(mobilenet, mobilenet_l1, calibration, holdout):
    snapshot = state_snapshot(mobilenet)
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.15, allocation="global"), analysis=mobilenet_l1)
    dense_output = infer(mobilenet, holdout)
    before = output_fidelity(MOBILENET, dense_output, infer(result.model, holdout))
    repaired = reconstruct(result.model, mobilenet, calibration, kept_output_channels(mobilenet_l1, result.plan))
    after = output_fidelity(MOBILENET, dense_output, infer(repaired, holdout))
    assert after["kl_divergence"] < before["kl_divergence"] / 1.5
    assert after["top1_agreement"] > before["top1_agreement"] + 0.2
    assert_same_state(mobilenet, snapshot)
    # the pruned model handed in stays as it was
    assert not torch.equal(repaired.classifier[1].weight, result.model.classifier[1].weight)


def test_mirrored_output_of_symmetric_input(mobilenet, holdout):
    # an image glued to its own mirror image is unchanged by mirroring, so the class scores must be too
    symmetric = torch.cat([holdout[:2, :, :, :112], holdout[:2, :, :, :112].flip(-1)], dim=-1)
    assert torch.allclose(mirrored_output(MOBILENET, mobilenet, symmetric), infer(mobilenet, symmetric), atol=1e-4)


def test_mirrored_output_of_asymmetric_input(mobilenet, hed, holdout):
    mirrored = mirrored_output(MOBILENET, mobilenet, holdout)
    assert not torch.allclose(mirrored, infer(mobilenet, holdout), atol=1e-3)
    edges = get_model_entry("hed")
    inputs = to_batch(edges, holdout_images()[:4])
    dense_edges = infer(hed, inputs)
    mirrored_edges = mirrored_output(edges, hed, inputs)
    assert output_fidelity(edges, dense_edges, mirrored_edges)["edge_f1"] > 0.8
    # edge maps come back flipped: left as the model outputs them, the edges miss each other
    assert output_fidelity(edges, dense_edges, mirrored_edges.flip(-1))["edge_f1"] < 0.6


def test_mirrored_output_skips_digits():
    digits = get_model_entry("digits_cnn")
    assert mirrored_output(digits, digits.build(), torch.zeros(1, 1, 28, 28)) is None


def test_reconstruction_of_dense_is_identity(mobilenet, calibration, holdout):
    same = reconstruct(mobilenet, mobilenet, calibration[:8], {})
    assert torch.allclose(infer(same, holdout[:4]), infer(mobilenet, holdout[:4]), atol=1e-3)


def test_distillation_runs_and_learns(mobilenet, mobilenet_l1):
    result = prune(mobilenet, PruneConfig("mobilenet_v2", 0.3), analysis=mobilenet_l1)
    seen = []
    student, report = distill(MOBILENET, result.model, mobilenet, calibration_images()[:8], budget_s=4.0, batch_size=4, progress=lambda *args: seen.append(args))
    assert report.steps >= 1
    assert len(seen) == report.steps
    assert all(np.isfinite(report.losses))
    assert student is not result.model
    assert not any(p.requires_grad for p in student.parameters())
    with pytest.raises(ValueError, match="invalid time budget"):
        distill(MOBILENET, result.model, mobilenet, calibration_images()[:2], budget_s=0)
