"""Slider response: from a new ratio to the refreshed importance chart and metrics, latency excluded.

This follows the dashboard's own code path with the analysis (dependency graph scores) cached:
`make_plan`, `apply_plan` on a deep copy, the per-layer report, `model_stats` (parameters, MACs,
serialized size) and the importance chart's plotly figure. Each step is timed on its own.

    .venv/bin/python benchmarks/slider.py [--models mobilenet_v2 resnet50] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

from common import INPUT_SHAPE, build_model, machine, markdown_table
from pruning.explorer import model_stats
from pruning.metrics import count_macs, count_parameters, serialized_size_bytes
from pruning.structured import _build_graph, analyse, apply_plan, layer_channels, make_plan
from pruning.unstructured import weight_sparsity

# A user dragging the slider: each move is a ratio the caches have not seen yet.
RATIOS = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.25, 0.2)
TARGET_MS = {"mobilenet_v2": 250.0, "resnet50": 600.0}


def _chart(analysis, plan):
    from ui.views import all_scores_chart  # imports streamlit and plotly, but starts no server

    return all_scores_chart(analysis, plan)


def slider_move(base, analysis, ratio: float, example: torch.Tensor) -> dict[str, float]:
    """Run one slider move the way the dashboard does and return milliseconds per step."""
    steps = {}
    begin = time.perf_counter()
    plan = make_plan(analysis, ratio)
    steps["make_plan"] = time.perf_counter() - begin

    begin = time.perf_counter()
    _chart(analysis, plan)
    steps["importance chart"] = time.perf_counter() - begin

    begin = time.perf_counter()
    pruned = apply_plan(base, plan, example)
    steps["apply_plan"] = time.perf_counter() - begin

    begin = time.perf_counter()
    layer_channels(base), layer_channels(pruned), weight_sparsity(pruned)  # the per-layer report in prune()
    steps["layer report"] = time.perf_counter() - begin

    begin = time.perf_counter()
    model_stats(pruned, example)
    steps["model_stats"] = time.perf_counter() - begin
    return {name: seconds * 1000.0 for name, seconds in steps.items()}


def breakdown(base, example: torch.Tensor, plan) -> dict[str, float]:
    """Split apply_plan and model_stats into their parts, in milliseconds."""
    parts = {}
    begin = time.perf_counter()
    work = copy.deepcopy(base)
    parts["deepcopy"] = time.perf_counter() - begin
    begin = time.perf_counter()
    _build_graph(work, example)
    parts["dependency graph build"] = time.perf_counter() - begin
    pruned = apply_plan(base, plan, example)
    for name, function in (
        ("count_parameters", lambda: count_parameters(pruned)),
        ("count_macs (torch-pruning counter)", lambda: count_macs(pruned, example)),
        ("serialized_size_bytes", lambda: serialized_size_bytes(pruned)),
    ):
        begin = time.perf_counter()
        function()
        parts[name] = time.perf_counter() - begin
    return {name: seconds * 1000.0 for name, seconds in parts.items()}


def run(models=("mobilenet_v2", "resnet50"), repeats: int = 1) -> list[dict]:
    rows = []
    example = torch.zeros(INPUT_SHAPE)
    for name in models:
        base, heads, pretrained = build_model(name)
        analysis = analyse(base, example, criterion="l1", output_heads=heads)  # cached by the app
        slider_move(base, analysis, 0.3, example)  # warm-up: first calls load kernels and plotly
        totals, per_step = [], {}
        for _ in range(repeats):
            for ratio in RATIOS:
                steps = slider_move(base, analysis, ratio, example)
                totals.append(sum(steps.values()))
                for step, ms in steps.items():
                    per_step.setdefault(step, []).append(ms)
        q1, _, q3 = statistics.quantiles(totals, n=4)
        rows.append(
            {
                "model": name,
                "pretrained": pretrained,
                "median_ms": statistics.median(totals),
                "iqr_ms": q3 - q1,
                "moves": len(totals),
                "target_ms": TARGET_MS.get(name),
                "steps": {step: statistics.median(values) for step, values in per_step.items()},
                "breakdown": breakdown(base, example, make_plan(analysis, 0.5)),
            }
        )
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    header = ["model", "median ms (IQR)", "target ms", "moves"] + list(rows[0]["steps"])
    body = []
    for row in rows:
        target = f"{row['target_ms']:.0f}" if row["target_ms"] else "-"
        steps = [f"{ms:.0f}" for ms in row["steps"].values()]
        label = row["model"] + ("" if row["pretrained"] else " (untrained)")
        body.append([label, f"**{row['median_ms']:.0f}** ({row['iqr_ms']:.0f})", target, str(row["moves"])] + steps)
    return markdown_table(header, body)


def breakdown_table(rows: list[dict]) -> str:
    header = ["model"] + list(rows[0]["breakdown"])
    body = [[row["model"]] + [f"{ms:.0f}" for ms in row["breakdown"].values()] for row in rows]
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50"], help="catalogue names or torchvision resnet names")
    parser.add_argument("--repeats", type=int, default=1, help=f"passes over the {len(RATIOS)} slider ratios (default: %(default)s)")
    args = parser.parse_args()
    print(machine())
    rows = run(tuple(args.models), args.repeats)
    print(table(rows))
    print(breakdown_table(rows))


if __name__ == "__main__":
    main()
