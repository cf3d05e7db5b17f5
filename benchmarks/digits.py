"""Digits CNN: labelled accuracy after structured pruning, and after fine-tuning with labels.

Run: .venv/bin/python benchmarks/digits.py [--seconds 10]
Prints a markdown table: parameters, MACs and held-out accuracy (1,000 labelled digits) at channel
ratios 0.3, 0.5 and 0.7 (L1, uniform), before and after `--seconds` of fine-tuning with labels.
"""

from __future__ import annotations

import argparse
import copy

from common import machine  # sets OMP_WAIT_POLICY before torch loads

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.metrics import count_macs, count_parameters, labelled_accuracy

RATIOS = (0.3, 0.5, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="fine-tuning time per ratio, in seconds (default: %(default)s)")
    args = parser.parse_args()

    entry = get_model_entry("digits_cnn")
    dense = entry.build()
    inputs, labels = entry.labelled_holdout()
    example = entry.example_inputs()
    print(machine())
    print("| ratio | parameters | MACs | accuracy after pruning | after fine-tuning | steps |")
    print("|---|---|---|---|---|---|")
    print(f"| 0 (dense) | {count_parameters(dense):,} | {count_macs(dense, example):,} | {labelled_accuracy(dense, inputs, labels):.1%} | | |")
    for ratio in RATIOS:
        pruned = prune(dense, PruneConfig("digits_cnn", ratio)).model
        before = labelled_accuracy(pruned, inputs, labels)
        student = copy.deepcopy(pruned)
        report = entry.finetune_with_labels(student, seconds=args.seconds)
        after = labelled_accuracy(student, inputs, labels)
        print(
            f"| {ratio} | {count_parameters(pruned):,} | {count_macs(pruned, example):,} | {before:.1%} | {after:.1%} "
            f"| {report['steps']} |"
        )


if __name__ == "__main__":
    main()
