"""Plotly figures shared by the dashboard and the exported report (plotly only, no Streamlit)."""

from __future__ import annotations

import plotly.graph_objects as go

KEPT_COLOUR = "#2a9d8f"  # dense model, kept channels
PRUNED_COLOUR = "#e76f51"  # pruned model, removed channels


def top_k_chart(dense: list[tuple[str, float]], pruned: list[tuple[str, float]]) -> go.Figure:
    """Plot horizontal bars of the top-k (class, probability) pairs of both models."""
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
