"""Pruning Explorer's compute package: model catalogue, importance, pruning, metrics and media.

This package never imports Streamlit, so the CLI, tests and benchmarks use it directly.
"""

import os

# OpenMP's busy-waiting threads make CPU latency swing by an order of magnitude on small machines.
# The variable only takes effect if it is set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
