"""Speed-up efficiency: measured latency speed-up divided by MAC reduction, dense vs pruned.

Batch 1, 224x224, channel ratio 0.5, L1 criterion, uniform allocation. Dense and pruned models get
the same preparation in each row, and their forward passes alternate so background load hits both.

    .venv/bin/python benchmarks/efficiency.py [--runs N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

from common import INPUT_SHAPE, build_model, machine, markdown_table
from pruning.metrics import count_macs
from pruning.speed import EAGER_OPTIONS, InferenceOptions, median_and_quartiles, prepare_for_inference, time_interleaved
from pruning.structured import analyse, apply_plan, make_plan
from pruning.unstructured import apply_masks

PREPARATIONS = {
    "eager": EAGER_OPTIONS,
    "fold-bn+channels-last": InferenceOptions(fold_batchnorm=True, channels_last=True, torchscript=False),
    "fold-bn+torchscript (default)": InferenceOptions(),
}
RATIO = 0.5


def _row(model_name, mode, round_to, preparation, threads, dense, pruned, inputs, runs, mac_reduction):
    options = PREPARATIONS[preparation]
    started = time.perf_counter()
    prepared = {"dense": prepare_for_inference(dense, inputs, options=options), "pruned": prepare_for_inference(pruned, inputs, options=options)}
    prepare_s = time.perf_counter() - started
    timings = time_interleaved(prepared, inputs, runs=runs)
    dense_ms, dense_q1, dense_q3 = median_and_quartiles(timings["dense"])
    pruned_ms, pruned_q1, pruned_q3 = median_and_quartiles(timings["pruned"])
    speedup = dense_ms / pruned_ms
    return {
        "model": model_name,
        "mode": mode,
        "round_to": round_to,
        "preparation": preparation,
        "threads": threads,
        "dense_ms": dense_ms,
        "dense_iqr": dense_q3 - dense_q1,
        "pruned_ms": pruned_ms,
        "pruned_iqr": pruned_q3 - pruned_q1,
        "speedup": speedup,
        "mac_reduction": mac_reduction,
        "efficiency": speedup / mac_reduction,
        "prepare_s": prepare_s,
    }


def run(models=("mobilenet_v2", "resnet18"), threads_list=(1, 2), runs=30, rounds=(1, 8), preparations=tuple(PREPARATIONS)) -> list[dict]:
    rows = []
    inputs = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    example = torch.zeros(INPUT_SHAPE)
    default_threads = torch.get_num_threads()
    for name in models:
        dense, heads, _ = build_model(name)
        analysis = analyse(dense, example, criterion="l1", output_heads=heads)
        dense_macs = count_macs(dense, example)
        for round_to in rounds:
            pruned = apply_plan(dense, make_plan(analysis, RATIO, round_to=round_to), example)
            reduction = dense_macs / count_macs(pruned, example)
            for threads in threads_list:
                torch.set_num_threads(threads)
                for preparation in preparations:
                    rows.append(_row(name, "structured", round_to, preparation, threads, dense, pruned, inputs, runs, reduction))
                    print(_format(rows[-1]), flush=True)
        # masks keep every shape, so MACs (as counted) and dense kernels are unchanged
        masked = apply_masks(dense, RATIO, output_heads=heads, scope="layer").requires_grad_(False)
        for threads in threads_list:
            torch.set_num_threads(threads)
            rows.append(_row(name, "unstructured", 1, "fold-bn+torchscript (default)", threads, dense, masked, inputs, runs, 1.0))
            print(_format(rows[-1]), flush=True)
    torch.set_num_threads(default_threads)
    return rows


def _format(row: dict) -> str:
    return (
        f"{row['model']} {row['mode']} round_to={row['round_to']} {row['preparation']} threads={row['threads']}: "
        f"dense {row['dense_ms']:.1f} ms, pruned {row['pruned_ms']:.1f} ms, speed-up {row['speedup']:.2f}x, "
        f"MACs /{row['mac_reduction']:.2f}, efficiency {row['efficiency']:.2f}"
    )


def table(rows: list[dict]) -> str:
    header = ["model", "mode", "round_to", "preparation", "threads", "dense ms (IQR)", "pruned ms (IQR)", "speed-up", "MAC reduction", "efficiency"]
    body = [
        [
            row["model"],
            row["mode"],
            str(row["round_to"]),
            row["preparation"],
            str(row["threads"]),
            f"{row['dense_ms']:.1f} ({row['dense_iqr']:.1f})",
            f"{row['pruned_ms']:.1f} ({row['pruned_iqr']:.1f})",
            f"{row['speedup']:.2f}x",
            f"{row['mac_reduction']:.2f}x",
            f"**{row['efficiency']:.2f}**",
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed forward passes per model and row (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to try")
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"], help="catalogue names or torchvision resnet names")
    args = parser.parse_args()
    print(machine())
    rows = run(models=tuple(args.models), threads_list=tuple(args.threads), runs=args.runs)
    print(table(rows))


if __name__ == "__main__":
    main()
