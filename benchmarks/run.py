"""Run the whole benchmark suite and print its results as markdown tables (`make bench`).

Takes about 5-10 minutes on 2 cores. Timings on a shared machine vary with its load, so the load
average is printed with the machine record. Compare rows of one run, not numbers of different runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
import startup  # noqa: E402
import efficiency  # noqa: E402
import slider  # noqa: E402
from common import machine, markdown_table  # noqa: E402


def main() -> None:
    print("## Machine\n")
    print(markdown_table(["setting", "value"], [[key, value] for key, value in machine().items()]))

    print("\n## Speed-up efficiency (latency speed-up / MAC reduction, ratio 0.5, batch 1, 224x224)\n", flush=True)
    rows = efficiency.run(runs=30)
    print(efficiency.table(rows))

    print("\n## Slider response (latency excluded)\n", flush=True)
    rows = slider.run(repeats=1)
    print(slider.table(rows))
    print()
    print(slider.breakdown_table(rows))

    print("\n## Start-up and memory\n", flush=True)
    prune_times = startup.first_prune_s()
    timings = startup.run()
    table_rows = [
        ["`make run` to health check", f"{timings['health_s']:.1f} s", "-"],
        ["`make run` to first rendered page (Parameters metric)", f"{timings['first_page_s']:.1f} s", "< 10 s"],
        ["... including the latency metric", f"{timings['first_page_with_latency_s']:.1f} s", "-"],
        ["fresh process: imports", f"{prune_times['imports_s']:.2f} s", "-"],
        ["first prune of the default model (build + score + prune + stats)", f"{prune_times['build_s'] + prune_times['score_s'] + prune_times['prune_and_stats_s']:.2f} s", "< 2 s"],
        ["second model shown after switching", f"{timings['second_model_s']:.1f} s", "-"],
    ]
    for label, key in (("one model", "rss_one_model_mb"), ("two models, one pruned copy each", "rss_two_models_mb")):
        total = sum(timings[key].values())
        table_rows.append([f"RSS, {label} (process tree)", f"{total:.0f} MB", "< 1500 MB" if "two" in label else "-"])
    print(markdown_table(["measure", "value", "target"], table_rows))
    print("\nload average after the run:", machine()["load average (1, 5, 15 min)"])


if __name__ == "__main__":
    main()
