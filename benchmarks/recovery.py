"""Recovery after structured pruning: MobileNetV2 at 1.5x and 2x fewer MACs, agreement on held-out images.

Run: .venv/bin/python benchmarks/recovery.py [--distill-seconds 60]
Prints a markdown table: top-1 agreement with the dense model on all held-out images and on the
ones the dense model is at least 50% sure of, top-5 overlap and KL divergence, for each recovery.
The first row is the yardstick: the dense model on the same images mirrored left to right.
"""

from __future__ import annotations

import argparse
import time

from common import machine, markdown_table  # sets OMP_WAIT_POLICY before torch loads

import torch

from pruning.calibration import calibration_images, holdout_images, to_batch
from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, analyse_entry, prune
from pruning.metrics import count_macs
from pruning.recovery import distill, kept_output_channels, recalibrate_batchnorm, reconstruct
from pruning.tasks import infer, mirrored_output, recovery_row

TARGETS = (1.5, 2.0)  # MAC reduction factors


def ratio_for_reduction(base, analysis, allocation: str, target: float) -> tuple[float, object]:
    """Smallest channel ratio (to 0.005) whose pruned model has at least `target` times fewer MACs."""
    entry = get_model_entry("mobilenet_v2")
    example = entry.example_inputs()
    dense = count_macs(base, example)
    low, high = 0.0, 0.9
    best = None
    while high - low > 0.005:
        middle = (low + high) / 2
        result = prune(base, PruneConfig("mobilenet_v2", middle, allocation=allocation), analysis=analysis)
        if dense / count_macs(result.model, example) >= target:
            high, best = middle, result
        else:
            low = middle
    return high, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distill-seconds", type=float, default=60.0, help="distillation budget per model, in seconds")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    entry = get_model_entry("mobilenet_v2")
    base = entry.build()
    calibration_set = calibration_images()
    calibration = to_batch(entry, calibration_set)
    holdout = to_batch(entry, holdout_images())
    dense_output = infer(base, holdout)
    analysis = analyse_entry(entry, base, "l1")
    example = entry.example_inputs()

    print("machine:", machine())
    print(f"calibration images: {len(calibration)}, held-out images: {len(holdout)}")
    # Yardstick: how often the dense model agrees with itself when each image is mirrored left to right.
    rows = [{"setting": "dense model", **recovery_row(entry, "yardstick: mirrored images", dense_output, mirrored_output(entry, base, holdout))}]
    for target in TARGETS:
        for allocation in ("global", "uniform"):
            ratio, result = ratio_for_reduction(base, analysis, allocation, target)
            reduction = count_macs(base, example) / count_macs(result.model, example)
            label = f"{target}x, {allocation}, ratio {ratio:.3f} ({reduction:.2f}x fewer MACs)"
            models = {"no recovery": result.model}
            started = time.perf_counter()
            models["BatchNorm recalibration"] = recalibrate_batchnorm(result.model, base, calibration)
            kept = kept_output_channels(analysis, result.plan)
            models["least-squares reconstruction"] = reconstruct(result.model, base, calibration, kept)
            reconstruction_s = time.perf_counter() - started
            student, report = distill(entry, models["BatchNorm recalibration"], base, calibration_set, budget_s=args.distill_seconds)
            models[f"BN + distillation {args.distill_seconds:.0f} s ({report.steps} steps)"] = student
            student, report = distill(entry, models["least-squares reconstruction"], base, calibration_set, budget_s=args.distill_seconds)
            models[f"reconstruction + distillation {args.distill_seconds:.0f} s ({report.steps} steps)"] = student
            for name, model in models.items():
                rows.append({"setting": label, **recovery_row(entry, name, dense_output, infer(model, holdout))})
            print(f"{label}: recalibration and reconstruction took {reconstruction_s:.1f} s", flush=True)

    columns = list(rows[0])
    print(markdown_table(columns, [[str(row[column]) for column in columns] for row in rows]))


if __name__ == "__main__":
    main()
