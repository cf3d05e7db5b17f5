"""Long distillation after reconstruction: MobileNetV2 at 1.5x fewer MACs, measured along the way.

Run: .venv/bin/python benchmarks/recovery_distill.py [--minutes 15] [--learning-rate 2e-5]
Prunes MobileNetV2 (l1, global allocation) to 1.5x fewer MACs and refits it by least squares on
the 69 calibration images. Then it distils the model from the dense one on those images plus every
odd frame of both sample clips, which neither the calibration nor the held-out set contains. After
each checkpoint it prints the measures of benchmarks/recovery.py on the 72 held-out images, so the
table shows whether more training time keeps helping.
"""

from __future__ import annotations

import argparse

from common import machine, markdown_table  # sets OMP_WAIT_POLICY before torch loads

import torch

# _frames is private to pruning.calibration; reused so the frames are decoded the same way.
from pruning.calibration import _frames, calibration_images, holdout_images, to_batch
from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, analyse_entry, prune
from pruning.metrics import count_macs
from pruning.recovery import distill, kept_output_channels, reconstruct
from pruning.tasks import infer, recovery_row

RATIO = 0.218  # global l1 channel ratio that gives 1.50x fewer MACs (found by benchmarks/recovery.py)
CHECKPOINTS_MIN = (1, 3, 5, 10, 15, 30, 60)  # minutes of distillation after which the model is measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="total distillation time, in minutes")
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="Adam learning rate of the distillation")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    entry = get_model_entry("mobilenet_v2")
    base = entry.build()
    calibration_set = calibration_images()
    training_set = list(calibration_set)
    for clip in ("bikes", "bigbuckbunny"):
        training_set += _frames(clip, offset=1, stride=2, count=10_000)
    holdout = to_batch(entry, holdout_images())
    dense_output = infer(base, holdout)
    analysis = analyse_entry(entry, base, "l1")
    example = entry.example_inputs()

    result = prune(base, PruneConfig("mobilenet_v2", RATIO, allocation="global"), analysis=analysis)
    reduction = count_macs(base, example) / count_macs(result.model, example)
    print("machine:", machine())
    print(f"{reduction:.2f}x fewer MACs; distillation on {len(training_set)} images, learning rate {args.learning_rate}")
    model = reconstruct(result.model, base, to_batch(entry, calibration_set), kept_output_channels(analysis, result.plan))
    rows = [recovery_row(entry, "least-squares reconstruction", dense_output, infer(model, holdout))]

    elapsed_s, steps = 0.0, 0
    for minutes in CHECKPOINTS_MIN:
        if minutes > args.minutes:
            break
        # Each chunk restarts Adam's moment estimates; the weights carry over.
        model, report = distill(entry, model, base, training_set, budget_s=minutes * 60 - elapsed_s, learning_rate=args.learning_rate, seed=steps)
        elapsed_s, steps = minutes * 60.0, steps + report.steps
        rows.append(recovery_row(entry, f"+ {minutes} min distillation ({steps} steps)", dense_output, infer(model, holdout)))
        print(rows[-1], flush=True)

    columns = list(rows[0])
    print(markdown_table(columns, [[str(row[column]) for column in columns] for row in rows]))


if __name__ == "__main__":
    main()
