"""Streamlit drawing helpers shared by the pages: the metrics panel and the plotly charts."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pruning.explorer import PruneConfig, PruneResult
from pruning.structured import Analysis, PruningPlan

from . import state

KEPT_COLOUR = "#2a9d8f"
PRUNED_COLOUR = "#e76f51"


def _reduction(dense: float, pruned: float) -> str:
    if dense <= 0:
        return "n/a"
    return f"{pruned / dense:.2f}× of dense ({1 - pruned / dense:+.0%} removed)".replace("+", "")


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def metrics_panel(config: PruneConfig) -> PruneResult | None:
    """Show params, MACs, size and latency, dense vs pruned, measured on the pruned copy itself."""
    try:
        result = state.load_pruned(config)
        dense = state.dense_stats(config.model)
        pruned = state.pruned_stats(config)
    except (ValueError, RuntimeError) as error:
        st.error(f"Pruning {config.model} at ratio {config.ratio:.2f} failed: {error}. Try a lower ratio or another criterion.")
        return None

    columns = st.columns(4)
    columns[0].metric(
        "Parameters",
        f"{pruned['params'] / 1e6:.2f} M",
        f"{(pruned['params'] - dense['params']) / dense['params']:+.1%}",
        delta_color="inverse",
        help=f"Dense: {dense['params']:,}. Non-zero after pruning: {pruned['nonzero_params']:,}.",
    )
    columns[1].metric(
        "MACs",
        f"{pruned['macs'] / 1e9:.3f} G",
        f"{(pruned['macs'] - dense['macs']) / dense['macs']:+.1%}",
        delta_color="inverse",
        help=f"Multiply-accumulates for one {tuple(state.current_entry().example_input_shape)} input. Dense: {dense['macs']:,}.",
    )
    columns[2].metric(
        "File size",
        _size(pruned["size_bytes"]),
        f"{(pruned['size_bytes'] - dense['size_bytes']) / dense['size_bytes']:+.1%}",
        delta_color="inverse",
        help=f"torch.save of the state_dict. Dense: {_size(dense['size_bytes'])}.",
    )
    dense_latency = state.latency(config, dense=True)
    pruned_latency = state.latency(config, dense=False)
    columns[3].metric(
        "CPU latency (median)",
        f"{pruned_latency.median_ms:.1f} ms",
        f"{(pruned_latency.median_ms - dense_latency.median_ms) / dense_latency.median_ms:+.1%}",
        delta_color="inverse",
        help=(
            f"Dense: {dense_latency.median_ms:.1f} ms (IQR {dense_latency.spread_ms:.1f} ms), "
            f"pruned IQR {pruned_latency.spread_ms:.1f} ms; median of {pruned_latency.runs} runs after warm-up, "
            f"{pruned_latency.threads} threads, batch 1."
        ),
    )

    requested = f"Requested ratio **{config.ratio:.2f}**"
    if config.mode == "structured":
        achieved = (
            f"achieved: **{result.channel_reduction:.1%}** of channels, "
            f"**{1 - pruned['params'] / dense['params']:.1%}** of parameters, "
            f"**{1 - pruned['macs'] / dense['macs']:.1%}** of MACs removed "
            f"(speed-up {dense_latency.median_ms / pruned_latency.median_ms:.2f}×)."
        )
    else:
        achieved = (
            f"achieved: **{result.weight_sparsity:.1%}** of conv/linear weights are zero; "
            "shapes and MACs are unchanged, so dense kernels run just as long."
        )
    st.markdown(f"{requested} · {achieved}")
    if config.ratio > 0 and config.mode == "structured" and result.channel_reduction == 0:
        st.warning("Nothing was pruned at this ratio: every group is too small to lose a whole channel.")
    return result


def layer_overview_chart(result: PruneResult) -> go.Figure:
    """Stacked bars of kept and removed output channels for every conv and linear layer."""
    layers = [layer for layer in result.layers if layer.channels_dense > 0]
    names = [layer.name for layer in layers]
    kept = [layer.channels_pruned for layer in layers]
    removed = [layer.channels_dense - layer.channels_pruned for layer in layers]
    figure = go.Figure(
        [
            go.Bar(name="kept", x=names, y=kept, marker_color=KEPT_COLOUR),
            go.Bar(name="removed", x=names, y=removed, marker_color=PRUNED_COLOUR),
        ]
    )
    figure.update_layout(barmode="stack", height=360, margin=dict(t=30, b=10), yaxis_title="output channels", xaxis_tickangle=-60)
    return figure


def all_scores_chart(analysis: Analysis, plan: PruningPlan) -> go.Figure:
    """Every channel of every prunable group: its score (relative to the group's mean), kept or removed."""
    traces = {True: ([], [], []), False: ([], [], [])}
    for group in analysis.groups:
        removed = set(plan.remove.get(group.name, ()))
        mean = float(np.mean(group.scores)) or 1.0
        for channel, score in enumerate(group.scores):
            xs, ys, texts = traces[channel in removed]
            xs.append(group.name)
            ys.append(float(score) / mean)
            texts.append(f"channel {channel}, score {float(score):.4g}")
    figure = go.Figure()
    for is_removed, (xs, ys, texts) in traces.items():
        figure.add_trace(
            go.Scattergl(
                x=xs,
                y=ys,
                text=texts,
                mode="markers",
                name="removed" if is_removed else "kept",
                marker=dict(color=PRUNED_COLOUR if is_removed else KEPT_COLOUR, size=5, opacity=0.7),
                hovertemplate="%{x}<br>%{text}<extra></extra>",
            )
        )
    figure.update_layout(height=380, margin=dict(t=30, b=10), yaxis_title="score / layer mean", xaxis_tickangle=-60)
    return figure


def layer_scores_chart(scores: np.ndarray, removed: set[int], title: str) -> go.Figure:
    """Scores of one group's channels, sorted, coloured by kept or removed."""
    order = np.argsort(scores, kind="stable")
    colours = [PRUNED_COLOUR if int(i) in removed else KEPT_COLOUR for i in order]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(order))),
            y=scores[order],
            marker_color=colours,
            customdata=order,
            hovertemplate="channel %{customdata}<br>score %{y:.4g}<extra></extra>",
        )
    )
    figure.update_layout(title=title, height=320, margin=dict(t=40, b=10), xaxis_title="channels, lowest score first", yaxis_title="score")
    return figure


def top_k_chart(dense: list[tuple[str, float]], pruned: list[tuple[str, float]]) -> go.Figure:
    """Horizontal bars of the top-5 classes of both models."""
    figure = go.Figure()
    for label, rows, colour in (("dense", dense, KEPT_COLOUR), ("pruned", pruned, PRUNED_COLOUR)):
        figure.add_trace(
            go.Bar(
                y=[f"{label}: {name}" for name, _ in rows][::-1],
                x=[probability for _, probability in rows][::-1],
                orientation="h",
                name=label,
                marker_color=colour,
                text=[f"{probability:.1%}" for _, probability in rows][::-1],
                textposition="auto",
            )
        )
    figure.update_layout(height=380, margin=dict(t=30, b=10), xaxis=dict(title="probability", range=[0, 1]), barmode="group")
    return figure


def latency_chart(dense_ms: list[float], pruned_ms: list[float]) -> go.Figure:
    figure = go.Figure(
        [
            go.Scatter(y=dense_ms, name="dense", mode="lines", line=dict(color=KEPT_COLOUR)),
            go.Scatter(y=pruned_ms, name="pruned", mode="lines", line=dict(color=PRUNED_COLOUR)),
        ]
    )
    figure.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title="frame", yaxis_title="model latency (ms)")
    return figure
