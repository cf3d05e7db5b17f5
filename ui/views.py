"""Streamlit drawing helpers shared by the pages: the metrics panel and the plotly charts."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION, TASK_SEGMENTATION
from pruning.charts import KEPT_COLOUR, PRUNED_COLOUR, top_k_chart
from pruning.explorer import PruneConfig, PruneResult
from pruning.importance import get_criterion
from pruning.structured import Analysis, PruningPlan
from pruning.tasks import OUTPUT_MAP_CAPTIONS

from . import state


def _reduction(dense: float, pruned: float) -> str:
    if dense <= 0:
        return "n/a"
    return f"{pruned / dense:.2f}× of dense ({1 - pruned / dense:+.0%} removed)".replace("+", "")


def _size(num_bytes: int) -> str:
    if num_bytes < 1e6:
        return f"{num_bytes / 1e3:.1f} kB"
    return f"{num_bytes / 1e6:.1f} MB"


def _parameters(count: int) -> str:
    """Format a parameter count in millions, or in thousands for small models such as the digits CNN."""
    if count < 1e6:
        return f"{count / 1e3:.1f} k"
    return f"{count / 1e6:.2f} M"


def _macs(count: int) -> str:
    """Format a MAC count in G from 0.1 G up, else in M, so small models do not read 0.000 G."""
    if count < 1e8:
        return f"{count / 1e6:.2f} M"
    return f"{count / 1e9:.3f} G"


def _change(dense: float, pruned: float, *, exact: bool = True) -> dict:
    """Delta arguments for st.metric: green when pruning lowered a cost, grey without an arrow when unchanged."""
    if exact and pruned == dense:
        return {"delta": "no change", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{(pruned - dense) / dense:+.1%}", "delta_color": "inverse"}


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
    if config.mode == "structured":
        columns[0].metric(
            "Parameters",
            _parameters(pruned["params"]),
            **_change(dense["params"], pruned["params"]),
            help=f"Dense: {dense['params']:,}. After pruning: {pruned['params']:,}.",
        )
    else:
        columns[0].metric(
            "Non-zero parameters",
            _parameters(pruned["nonzero_params"]),
            **_change(dense["nonzero_params"], pruned["nonzero_params"]),
            help=f"Masks zero weights but keep every tensor: the model still stores {pruned['params']:,} parameters.",
        )
    columns[1].metric(
        "MACs",
        _macs(pruned["macs"]),
        **_change(dense["macs"], pruned["macs"]),
        help=f"Multiply-accumulates for one {tuple(state.current_entry().example_input_shape)} input. Dense: {dense['macs']:,}. "
        "Masked zeros are still multiplied by a dense kernel, so masks do not lower this.",
    )
    columns[2].metric(
        "File size",
        _size(pruned["size_bytes"]),
        **_change(dense["size_bytes"], pruned["size_bytes"]),
        help=f"torch.save of the state_dict. Dense: {_size(dense['size_bytes'])}.",
    )
    dense_latency, pruned_latency = state.latency_pair(config)
    columns[3].metric(
        "CPU latency (median)",
        f"{pruned_latency.median_ms:.1f} ms",
        **_change(dense_latency.median_ms, pruned_latency.median_ms, exact=False),
        help=(
            f"Dense: {dense_latency.median_ms:.1f} ms (IQR {dense_latency.spread_ms:.1f} ms), "
            f"pruned IQR {pruned_latency.spread_ms:.1f} ms; median of {pruned_latency.runs} runs after warm-up, "
            f"{pruned_latency.threads} threads, batch 1, timed in alternation; both models prepared the same way "
            f"({pruned_latency.preparation}) before timing."
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
            f"achieved: **{result.weight_sparsity:.1%}** of the prunable conv/linear weights are zero "
            "(output heads keep theirs); shapes and MACs are unchanged, so dense kernels run just as long."
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
    """Plot every channel of every prunable group: its score relative to the group mean, kept or removed."""
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


def latency_chart(dense_ms: list[float], pruned_ms: list[float]) -> go.Figure:
    figure = go.Figure(
        [
            go.Scatter(y=dense_ms, name="dense", mode="lines", line=dict(color=KEPT_COLOUR)),
            go.Scatter(y=pruned_ms, name="pruned", mode="lines", line=dict(color=PRUNED_COLOUR)),
        ]
    )
    figure.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title="frame", yaxis_title="model latency (ms)")
    return figure


def layer_sparsity_chart(result: PruneResult) -> go.Figure:
    """Share of zero weights reached in every conv and linear layer (masks mode)."""
    layers = result.layers
    figure = go.Figure(
        go.Bar(
            x=[layer.name for layer in layers],
            y=[layer.sparsity for layer in layers],
            marker_color=[KEPT_COLOUR if layer.output_head else PRUNED_COLOUR for layer in layers],
            hovertemplate="%{x}<br>%{y:.1%} zeros<extra></extra>",
        )
    )
    figure.update_layout(height=340, margin=dict(t=30, b=10), yaxis=dict(title="weights set to zero", tickformat=".0%", range=[0, 1]), xaxis_tickangle=-60)
    return figure


def sensitivity_heatmap(groups: tuple[str, ...], ratios: tuple[float, ...], fidelity) -> go.Figure:
    figure = go.Figure(
        go.Heatmap(
            z=fidelity.T,
            x=list(groups),
            y=[f"{ratio:.0%}" for ratio in ratios],
            zmin=0,
            zmax=1,
            colorscale="RdYlGn",
            colorbar=dict(title="fidelity"),
            hovertemplate="%{x} pruned %{y} alone<br>fidelity %{z:.2f}<extra></extra>",
        )
    )
    figure.update_layout(height=320, margin=dict(t=30, b=10), yaxis_title="ratio of this layer", xaxis_tickangle=-60)
    return figure


def sweep_charts(points, fidelity_label: str) -> list[go.Figure]:
    """Fidelity vs ratio (and labelled accuracy where the model has labels), fidelity vs MACs,
    latency and parameters vs ratio, one line per criterion."""
    figures = []
    charts = [
        ("ratio", "fidelity", "channel ratio", fidelity_label),
        ("macs", "fidelity", "MACs (G)", fidelity_label),
        ("ratio", "latency_ms", "channel ratio", "latency (ms, median)"),
        ("ratio", "params", "channel ratio", "parameters (M)"),
    ]
    if all(point.accuracy is not None for point in points):
        charts.insert(1, ("ratio", "accuracy", "channel ratio", "labelled accuracy (held-out)"))
    for x_key, y_key, x_title, y_title in charts:
        figure = go.Figure()
        for criterion in dict.fromkeys(point.criterion for point in points):
            rows = [point for point in points if point.criterion == criterion]
            xs = [getattr(p, x_key) / (1e9 if x_key == "macs" else 1) for p in rows]
            ys = [getattr(p, y_key) / (1e6 if y_key == "params" else 1) for p in rows]
            figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=get_criterion(criterion).label))
        figure.update_layout(height=300, margin=dict(t=30, b=10), xaxis_title=x_title, yaxis_title=y_title)
        figures.append(figure)
    return figures


def group_members_table(members: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of (layer, what it loses) from members written as 'name (out)' or 'name (in)'."""
    rows = []
    for member in members:
        name, _, direction = member.rpartition(" (")
        rows.append({"layer": name, "loses": "output channels" if direction.startswith("out") else "input channels"})
    return rows


def channel_removal_unavailable(config: PruneConfig) -> bool:
    """Say why tools that remove channels do not apply to this model and return True; return False when they do."""
    if state.structured_problem(config.model) is None:
        return False
    st.info(
        f"{state.current_entry().label} cannot lose whole channels here, because torch-pruning cannot prune its "
        "graph (the sidebar gives the reason), so this part does not apply. Zeroing weights with masks works: "
        "see the Overview, Images and Video pages."
    )
    return True


def untrained_notice(entry) -> None:
    """Say plainly that an untrained model's outputs are not predictions."""
    st.warning(
        f"{entry.label} is untrained here: its pretrained weights are not in torchvision's cache. "
        "Sizes, MACs and latency are real; its outputs are not predictions, so only the agreement "
        "between dense and pruned means something. Download the weights from the sidebar to fix that."
    )


def image_comparison(entry, image, comparison, caption: str, *, pretrained: bool = True) -> None:
    """Draw one input and both models' outputs with their fidelity (Images and Camera pages)."""
    fidelity = comparison.fidelity
    if not pretrained:
        untrained_notice(entry)
    if entry.task == TASK_CLASSIFICATION:
        photo, chart = st.columns([1, 2])
        photo.image(image, caption=caption, width="stretch")
        if pretrained:
            chart.plotly_chart(top_k_chart(comparison.dense_top, comparison.pruned_top), width="stretch")
        else:
            chart.dataframe(
                [{"rank": rank + 1, "dense output index": entry.categories.index(d[0]), "pruned output index": entry.categories.index(p[0])}
                 for rank, (d, p) in enumerate(zip(comparison.dense_top, comparison.pruned_top))],
                hide_index=True,
            )
        columns = st.columns(3)
        columns[0].metric("Same top-1 class", "yes" if fidelity["top1_agreement"] == 1.0 else "no")
        columns[1].metric("Top-5 overlap", f"{fidelity['top5_overlap']:.0%}")
        columns[2].metric("KL(dense ‖ pruned)", f"{fidelity['kl_divergence']:.3f}")
        if fidelity["top1_agreement"] < 1.0 and pretrained:
            repair = (
                "fine-tuning with labels" if entry.finetune_with_labels is not None else "a short repair"
            )
            st.info(
                "The pruned model no longer agrees with the dense one. Trained networks lose their "
                "predictions after even light structured pruning unless they are retrained; compare "
                f"ratio 0.05 with 0.3, and see the Recovery page for what {repair} can win back."
            )
        return

    output_maps(entry, image, caption, comparison)
    if entry.task == TASK_SEGMENTATION:
        _segmentation_metrics(entry, comparison, pretrained=pretrained)
        return
    metrics = st.columns(3)
    psnr = fidelity["psnr_db"]
    metrics[0].metric("PSNR vs dense", "identical" if psnr == float("inf") else f"{psnr:.1f} dB")
    metrics[1].metric("Edge F1 vs dense", f"{fidelity['edge_f1']:.3f}")
    metrics[2].metric("Mean absolute difference", f"{fidelity['mean_abs_error']:.4f}")
    st.caption("Edge F1 compares the two maps thresholded at 0.5, pixel by pixel.")


def output_maps(entry, image, caption: str, comparison) -> None:
    """Draw the input next to the dense map, the pruned map and their difference (edges, segmentation)."""
    columns = st.columns(4)
    columns[0].image(image, caption=caption, width="stretch")
    pictures = (comparison.dense_image, comparison.pruned_image, comparison.difference_image)
    for column, picture, text in zip(columns[1:], pictures, OUTPUT_MAP_CAPTIONS[entry.task]):
        column.image(picture, caption=text, width="stretch")


def _segmentation_metrics(entry, comparison, *, pretrained: bool) -> None:
    fidelity = comparison.fidelity
    metrics = st.columns(2)
    metrics[0].metric("mIoU vs dense", f"{fidelity['miou']:.3f}")
    metrics[1].metric("Pixel agreement", f"{fidelity['pixel_agreement']:.1%}")
    if pretrained:
        left, right = st.columns(2)
        left.dataframe([{"dense: class": name, "share of pixels": f"{share:.1%}"} for name, share in comparison.dense_areas], hide_index=True)
        right.dataframe([{"pruned: class": name, "share of pixels": f"{share:.1%}"} for name, share in comparison.pruned_areas], hide_index=True)
    st.caption(
        "mIoU averages, over the classes either model predicts, the overlap of the two class maps divided by "
        "their union; the dense model's map is the reference, not a human labelling. Every class counts the "
        "same, so a class of a few pixels that only one model predicts can halve the mIoU while the pixel "
        "agreement stays near 100%."
    )
