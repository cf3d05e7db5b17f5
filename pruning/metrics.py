"""Measurements of a model: parameters, MACs, serialized size, CPU latency, fidelity to the dense model.

Every number here is measured on the model it is given, never derived from a requested ratio.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch_pruning.utils import op_counter
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


_COUNTER_LOCK = threading.Lock()  # torch-pruning's counter keeps its custom-module table in a global


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Multiply-accumulate operations of one forward pass on `example_inputs`."""
    with _COUNTER_LOCK:
        # torch-pruning's counter matches layers by exact type, so subclasses such as
        # EfficientNet-Lite's padded Conv2d would count as zero; map them to their base class's counter.
        for module in model.modules():
            kind = type(module)
            if kind in op_counter.MODULES_MAPPING:
                continue
            for base, hook in op_counter.MODULES_MAPPING.items():
                if isinstance(module, base):
                    op_counter.CUSTOM_MODULES_MAPPING[kind] = hook
                    break
        # count_ops_and_params runs a forward pass on its own deep copy, so `model` is not touched;
        # it also empties the custom table when it ends.
        macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs)


class _ByteCounter(io.RawIOBase):
    """Writable stream that only counts the bytes written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict as written by torch.save (the file a user would ship)."""
    # Counting the stream instead of filling a BytesIO gives the same number without copying
    # every weight into a growing buffer, which was a tenth of a second for ResNet-50.
    counter = _ByteCounter()
    torch.save(model.state_dict(), counter)
    return counter.count


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one forward pass, over repeated runs after warm-up."""

    median_ms: float
    q1_ms: float  # 25th percentile
    q3_ms: float  # 75th percentile
    runs: int
    threads: int  # torch intra-op threads during the measurement
    preparation: str = "eager"  # steps applied before timing, e.g. "fold-bn+torchscript"

    @property
    def spread_ms(self) -> float:
        return self.q3_ms - self.q1_ms


def measure_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    warmup: int = 3,
    min_runs: int = 5,
    max_runs: int = 30,
    budget_s: float = 2.0,
    prepare: bool = True,
) -> LatencyStats:
    """Time forward passes after `warmup` untimed ones and report the median with quartiles.

    With `prepare`, a copy of the model is first prepared by `pruning.speed.prepare_for_inference`
    (BatchNorm folding, TorchScript), so dense and pruned models are timed the way they would be
    deployed. Preparing takes about a second per model on a 2-core CPU (an estimate) and is not
    part of the timings. `model` itself is never modified.
    Runs stop after `max_runs`, or once `min_runs` are done and `budget_s` seconds have passed,
    so a slow model still gets a median of several runs without stalling the caller.
    """
    preparation = "eager"
    if prepare:
        from .speed import (
            prepare_for_inference,  # speed imports torch.fx and TorchScript: load on demand
        )

        model = prepare_for_inference(model, inputs)
        preparation = model.description
    else:
        model.eval()
    timings = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        started = time.perf_counter()
        while len(timings) < max_runs:
            begin = time.perf_counter()
            model(inputs)
            timings.append((time.perf_counter() - begin) * 1000.0)
            if len(timings) >= min_runs and time.perf_counter() - started > budget_s:
                break
    return _stats(timings, preparation)


def _stats(timings: list[float], preparation: str) -> LatencyStats:
    quartiles = statistics.quantiles(timings, n=4) if len(timings) > 1 else [timings[0]] * 3
    return LatencyStats(
        median_ms=statistics.median(timings),
        q1_ms=quartiles[0],
        q3_ms=quartiles[2],
        runs=len(timings),
        threads=torch.get_num_threads(),
        preparation=preparation,
    )


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: torch.Tensor,
    *,
    warmup: int = 3,
    min_runs: int = 5,
    max_runs: int = 30,
    budget_s: float = 3.0,
    prepare: bool = True,
) -> tuple[LatencyStats, LatencyStats]:
    """Time dense and pruned models in alternation and return (dense, pruned) statistics.

    Alternating spreads background load evenly over both models, so their ratio stays steady on
    a busy machine where two separate measurements can differ by several times. Both models get
    the same preparation (see `measure_latency`).
    """
    from .speed import prepare_for_inference, time_interleaved

    models = {"dense": dense.eval(), "pruned": pruned.eval()}
    preparation = "eager"
    if prepare:
        models = {name: prepare_for_inference(model, inputs) for name, model in models.items()}
        preparation = models["pruned"].description
    timings = time_interleaved(models, inputs, warmup=warmup, runs=min_runs)
    started = time.perf_counter()
    while len(timings["dense"]) < max_runs and time.perf_counter() - started < budget_s:
        more = time_interleaved(models, inputs, warmup=0, runs=1)
        for name in timings:
            timings[name].extend(more[name])
    return _stats(timings["dense"], preparation), _stats(timings["pruned"], preparation)


# --- fidelity of the pruned model's outputs to the dense model's ----------------------------------

def classification_fidelity(dense_logits: torch.Tensor, pruned_logits: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Agreement of two classifiers on the same batch: top-1 agreement, top-k overlap, KL(dense || pruned)."""
    if dense_logits.shape != pruned_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(dense_logits.shape)} vs {tuple(pruned_logits.shape)}")
    dense_logits = dense_logits.float()
    pruned_logits = pruned_logits.float()

    top1 = (dense_logits.argmax(1) == pruned_logits.argmax(1)).float().mean().item()
    dense_top = dense_logits.topk(k, dim=1).indices
    pruned_top = pruned_logits.topk(k, dim=1).indices
    overlap = [len(set(d.tolist()) & set(p.tolist())) / k for d, p in zip(dense_top, pruned_top)]
    kl = torch.nn.functional.kl_div(
        pruned_logits.log_softmax(1), dense_logits.log_softmax(1), log_target=True, reduction="batchmean"
    ).item()
    return {"top1_agreement": top1, f"top{k}_overlap": float(np.mean(overlap)), "kl_divergence": max(kl, 0.0)}


def edge_map_fidelity(dense_map: torch.Tensor, pruned_map: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Closeness of two maps with values in [0, 1]: PSNR (dB), mean absolute error, and edge F1.

    Edge F1 binarises both maps at `threshold` and scores the pruned edges against the dense ones
    pixel by pixel (no distance tolerance, so it is stricter than the BSDS benchmark's F-measure).
    """
    if dense_map.shape != pruned_map.shape:
        raise ValueError(f"map shapes differ: {tuple(dense_map.shape)} vs {tuple(pruned_map.shape)}")
    dense = dense_map.float().clamp(0, 1)
    pruned = pruned_map.float().clamp(0, 1)

    mse = torch.mean((dense - pruned) ** 2).item()
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))
    mae = torch.mean((dense - pruned).abs()).item()

    dense_edges = dense >= threshold
    pruned_edges = pruned >= threshold
    true_positive = (dense_edges & pruned_edges).sum().item()
    predicted = pruned_edges.sum().item()
    actual = dense_edges.sum().item()
    if predicted == 0 and actual == 0:
        f1 = 1.0  # no edges in either map: they agree
    else:
        f1 = 2.0 * true_positive / (predicted + actual)
    return {"psnr_db": psnr, "mean_abs_error": mae, "edge_f1": f1}


def segmentation_fidelity(dense_scores: torch.Tensor, pruned_scores: torch.Tensor) -> dict[str, float]:
    """Agreement of two segmentation outputs (N, C, H, W): pixel agreement and mIoU of the class maps.

    The dense model's class map is the reference. IoU is averaged over the classes that appear in
    either map, over the whole batch; a class that neither model predicts does not count.
    """
    if dense_scores.shape != pruned_scores.shape:
        raise ValueError(f"score shapes differ: {tuple(dense_scores.shape)} vs {tuple(pruned_scores.shape)}")
    dense = dense_scores.argmax(1)
    pruned = pruned_scores.argmax(1)
    ious = []
    for cls in torch.unique(torch.cat([dense.unique(), pruned.unique()])).tolist():
        dense_mask = dense == cls
        pruned_mask = pruned == cls
        union = (dense_mask | pruned_mask).sum().item()
        ious.append((dense_mask & pruned_mask).sum().item() / union)
    return {"pixel_agreement": (dense == pruned).float().mean().item(), "miou": float(np.mean(ious))}


def labelled_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Return the share of `inputs` whose top-1 class equals the label (the model must be in eval mode)."""
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            logits = model(inputs[start : start + batch_size])
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)
