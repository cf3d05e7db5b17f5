"""One-page report of a pruning configuration, exported as a self-contained HTML file and PNG charts.

The HTML embeds plotly.js and the before/after images inline, so it opens without a network. PNG
rendering runs plotly.js's own `Plotly.toImage` in a headless Chromium driven by Playwright, the
browser the browser tests already use, so no separate image-export package is needed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.offline import get_plotlyjs
from torch import nn

from .calibration import holdout_images, load_example, to_batch
from .catalog import TASK_CLASSIFICATION, TASK_SEGMENTATION, ModelEntry, get_model_entry
from .charts import KEPT_COLOUR, PRUNED_COLOUR, top_k_chart
from .explorer import (
    ModelStats,
    PruneConfig,
    PruneResult,
    analyse_entry,
    model_stats,
    prune,
)
from .importance import get_criterion
from .media import SAMPLE_IMAGES
from .metrics import LatencyStats, compare_latency
from .tasks import (
    OUTPUT_MAP_CAPTIONS,
    ImageComparison,
    compare_on_image,
    infer,
    output_fidelity,
    primary_fidelity,
    primary_fidelity_label,
)

logger = logging.getLogger(__name__)

# Ratios of the report's own fidelity curve: five points show the shape of the curve, and each
# point costs one prune and one pass over the held-out subset.
CURVE_RATIOS = (0.0, 0.2, 0.4, 0.6, 0.8)

# Held-out images per task for the report's fidelity numbers and curve. HED (VGG16 at 224×224)
# took about 0.3 s per image on 2 CPU cores, so 8 images keep a 10-point curve near 20 s;
# MobileNetV2 is about 6 times cheaper per image.
REPORT_IMAGES = {TASK_CLASSIFICATION: 24}
DEFAULT_REPORT_IMAGES = 8

# Debian's package. Playwright's own browser download needs a network, so it is not used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run")

PHOTO_MAX_SIDE = 480  # the embedded photo is shrunk to keep the HTML file small


class CurvePoint(Protocol):
    """A point of a fidelity curve; `pruning.sweep.SweepPoint` also fits."""

    criterion: str
    ratio: float
    fidelity: float


@dataclass(frozen=True)
class FidelityPoint:
    """Primary fidelity of one pruned model of the report's curve."""

    criterion: str
    ratio: float
    fidelity: float  # top-1 agreement or edge F1 against the dense model, 1 = same as dense


@dataclass
class ReportData:
    """Every number and picture that the report shows, measured for one configuration."""

    config: PruneConfig
    dense: ModelStats
    pruned: ModelStats
    dense_latency: LatencyStats
    pruned_latency: LatencyStats
    channel_reduction: float  # structured: share of output channels removed
    weight_sparsity: float  # share of prunable weights that are zero

    # fidelity of the pruned model to the dense one on held-out images
    fidelity: dict[str, float]
    fidelity_images: int

    # before/after example on one sample photo
    sample: str
    photo: Image.Image
    example: ImageComparison

    # fidelity against ratio, one curve per criterion
    curve: list[CurvePoint] = field(default_factory=list)
    curve_source: str = ""  # which images and settings the curve was measured with
    generated: str = field(default_factory=lambda: datetime.now().isoformat(sep=" ", timespec="minutes"))

    @property
    def entry(self) -> ModelEntry:
        return get_model_entry(self.config.model)

    @property
    def speedup(self) -> float:
        return self.dense_latency.median_ms / self.pruned_latency.median_ms

    @property
    def mac_reduction(self) -> float:
        """Share of the dense model's MACs that pruning removed."""
        return 1.0 - self.pruned.macs / self.dense.macs


@dataclass
class ReportExport:
    """The report's files: the HTML page and one PNG per chart (empty when rendering failed)."""

    html: str
    pngs: dict[str, bytes]
    png_error: str | None = None  # why there are no PNG files

    def png_zip(self) -> bytes:
        """Zip archive of the PNG files, stored uncompressed because PNG is already compressed."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in self.pngs.items():
                archive.writestr(f"{name}.png", data)
        return buffer.getvalue()


class RendererUnavailableError(RuntimeError):
    """Chromium or Playwright, which PNG rendering needs, is missing or failed to start."""


# --- measurements --------------------------------------------------------------------------------

def report_image_count(entry: ModelEntry) -> int:
    return REPORT_IMAGES.get(entry.task, DEFAULT_REPORT_IMAGES)


def held_out_subset(count: int, entry: ModelEntry | None = None) -> list[Image.Image]:
    """`count` held-out images of `entry`, evenly spaced so that photos and frames of both clips are included."""
    images = holdout_images(entry)
    if not 1 <= count <= len(images):
        raise ValueError(f"invalid held-out image count {count}: choose 1 to {len(images)}")
    step = len(images) / count
    return [images[int(i * step)] for i in range(count)]


def curve_criteria(config: PruneConfig) -> tuple[str, ...]:
    """Return the criteria of the report's curve: the configuration's own and the random baseline."""
    if config.mode != "structured":
        return (config.criterion,)  # masks always rank weights by magnitude, so no baseline applies
    return tuple(dict.fromkeys((config.criterion, "random")))


def fidelity_curve(
    config: PruneConfig,
    base_model: nn.Module,
    inputs: torch.Tensor,
    *,
    ratios: Sequence[float] = CURVE_RATIOS,
    dense_output: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[FidelityPoint]:
    """Prune at every ratio for each of `curve_criteria(config)` and measure fidelity on `inputs`.

    Unlike `pruning.sweep.run_sweep` this skips latency, which costs about 2.5 s per point on HED,
    and it keeps the configuration's allocation, rounding and per-layer maximum (not its overrides).
    """
    entry = get_model_entry(config.model)
    if dense_output is None:
        dense_output = infer(base_model, inputs)
    criteria = curve_criteria(config)
    points = []
    for c, criterion in enumerate(criteria):
        analysis = analyse_entry(entry, base_model, criterion) if config.mode == "structured" else None
        for r, ratio in enumerate(ratios):
            point_config = PruneConfig(
                config.model,
                ratio,
                criterion=criterion,
                mode=config.mode,
                allocation=config.allocation,
                round_to=config.round_to,
                max_layer_ratio=config.max_layer_ratio,
            )
            model = prune(base_model, point_config, analysis=analysis).model
            fidelity = output_fidelity(entry, dense_output, infer(model, inputs))
            points.append(FidelityPoint(criterion, ratio, primary_fidelity(entry, fidelity)))
            if progress:
                progress(c * len(ratios) + r + 1, len(criteria) * len(ratios))
    return points


def collect_report(
    config: PruneConfig,
    base_model: nn.Module,
    pruned: PruneResult,
    *,
    sample: str,
    images: int | None = None,
    latency: tuple[LatencyStats, LatencyStats] | None = None,
    curve: Sequence[CurvePoint] | None = None,
    curve_source: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> ReportData:
    """Measure everything the report shows for `config`; `base_model` is only run, never modified.

    Pass `latency` or `curve` when the caller already has them (cached or from an earlier sweep);
    otherwise they are measured here. `images` is the number of held-out images for fidelity
    (default: `report_image_count`).
    """
    entry = get_model_entry(config.model)
    report = progress or (lambda share, text: None)
    count = images or report_image_count(entry)

    report(0.0, "Measuring size and MACs…")
    dense_stats = model_stats(base_model, entry.example_inputs())
    pruned_stats = model_stats(pruned.model, entry.example_inputs())
    if latency is None:
        report(0.05, "Timing dense and pruned models…")
        timing_input = torch.randn(entry.example_input_shape, generator=torch.Generator().manual_seed(0))
        latency = compare_latency(base_model, pruned.model, timing_input)

    report(0.2, f"Comparing outputs on {count} held-out images…")
    inputs = to_batch(entry, held_out_subset(count, entry))
    dense_output = infer(base_model, inputs)
    fidelity = output_fidelity(entry, dense_output, infer(pruned.model, inputs))
    photo = load_example(entry, sample)
    example = compare_on_image(entry, base_model, pruned.model, photo)

    if curve is None:

        def step(done: int, total: int) -> None:
            report(0.3 + 0.7 * done / total, f"Fidelity curve: {done} of {total} pruned models…")

        curve = fidelity_curve(config, base_model, inputs, dense_output=dense_output, progress=step)
        curve_source = curve_source or f"the same {count} held-out images"
    report(1.0, "Done")

    return ReportData(
        config=config,
        dense=dense_stats,
        pruned=pruned_stats,
        dense_latency=latency[0],
        pruned_latency=latency[1],
        channel_reduction=pruned.channel_reduction,
        weight_sparsity=pruned.weight_sparsity,
        fidelity=fidelity,
        fidelity_images=count,
        sample=sample,
        photo=photo,
        example=example,
        curve=list(curve),
        curve_source=curve_source,
    )


# --- tables --------------------------------------------------------------------------------------

def _change(dense: float, pruned: float) -> str:
    if dense == 0:
        return "n/a"
    if pruned == dense:
        return "no change"
    return f"{(pruned - dense) / dense:+.1%}"


def _mode_label(mode: str) -> str:
    return "remove channels (structured)" if mode == "structured" else "zero weights (masks)"


def fidelity_label(data: ReportData) -> str:
    """Axis title of the primary fidelity measure."""
    return primary_fidelity_label(data.entry)


UNTRAINED_TEXT = "untrained (pretrained weights not on this machine): sizes, MACs and latency are real, outputs are not predictions"


def configuration_rows(data: ReportData) -> list[dict[str, str]]:
    """Rows (setting, value) of the configuration the report measures."""
    config = data.config
    rows = [
        ("Model", data.entry.label),
        ("Weights", data.entry.weights_source if data.entry.pretrained else UNTRAINED_TEXT),
        ("Mode", _mode_label(config.mode)),
        ("Importance criterion", get_criterion(config.criterion).label if config.mode == "structured" else "weight magnitude"),
        ("Allocation", "same ratio in every layer" if config.allocation == "uniform" else "one ranking across layers"),
        ("Ratio", f"{config.ratio:.2f}"),
    ]
    if config.mode == "structured":
        rows += [
            ("Channel rounding", str(config.round_to)),
            ("Per-layer maximum", f"{config.max_layer_ratio:.2f}"),
            ("Per-layer overrides", ", ".join(f"{layer}: {ratio:.2f}" for layer, ratio in config.overrides) or "none"),
        ]
    return [{"setting": setting, "value": value} for setting, value in rows]


def summary_rows(data: ReportData) -> list[dict[str, str]]:
    """Rows (quantity, dense, pruned, change) of size and cost, measured on both models."""
    dense, pruned = data.dense, data.pruned
    rows = [
        ("Parameters", f"{dense.params:,}", f"{pruned.params:,}", _change(dense.params, pruned.params)),
        ("Non-zero parameters", f"{dense.nonzero_params:,}", f"{pruned.nonzero_params:,}",
         _change(dense.nonzero_params, pruned.nonzero_params)),
        ("MACs (G)", f"{dense.macs / 1e9:.3f}", f"{pruned.macs / 1e9:.3f}", _change(dense.macs, pruned.macs)),
        ("File size (MB)", f"{dense.size_bytes / 1e6:.2f}", f"{pruned.size_bytes / 1e6:.2f}",
         _change(dense.size_bytes, pruned.size_bytes)),
        ("CPU latency, median (ms)", f"{data.dense_latency.median_ms:.1f}", f"{data.pruned_latency.median_ms:.1f}",
         _change(data.dense_latency.median_ms, data.pruned_latency.median_ms)),
    ]
    return [{"quantity": q, "dense": d, "pruned": p, "change": c} for q, d, p, c in rows]


def fidelity_rows(fidelity: Mapping[str, float], task: str) -> list[dict[str, str]]:
    """Rows (measure, value) of the pruned model's fidelity to the dense one."""
    if task == TASK_CLASSIFICATION:
        rows = [
            ("Top-1 agreement", f"{fidelity['top1_agreement']:.1%}"),
            ("Top-5 overlap", f"{fidelity['top5_overlap']:.1%}"),
            ("KL(dense ‖ pruned)", f"{fidelity['kl_divergence']:.3f}"),
        ]
    elif task == TASK_SEGMENTATION:
        rows = [
            ("mIoU vs dense", f"{fidelity['miou']:.3f}"),
            ("Pixel agreement", f"{fidelity['pixel_agreement']:.1%}"),
        ]
    else:
        psnr = fidelity["psnr_db"]
        rows = [
            ("PSNR vs dense", "identical" if psnr == float("inf") else f"{psnr:.1f} dB"),
            ("Edge F1 vs dense", f"{fidelity['edge_f1']:.3f}"),
            ("Mean absolute difference", f"{fidelity['mean_abs_error']:.4f}"),
        ]
    return [{"measure": measure, "value": value} for measure, value in rows]


def headline(data: ReportData) -> str:
    """Return one sentence with the speed-up, the MAC reduction and the primary fidelity."""
    primary = primary_fidelity(data.entry, data.fidelity)
    return (
        f"{data.speedup:.2f}× faster on the CPU, {data.mac_reduction:.1%} fewer MACs, "
        f"{fidelity_label(data)} {primary:.1%} on {data.fidelity_images} held-out images."
    )


# --- charts --------------------------------------------------------------------------------------

def costs_chart(data: ReportData) -> go.Figure:
    """Pruned parameters, MACs, file size and latency as a share of the dense model's."""
    shares = {
        "parameters": data.pruned.nonzero_params / data.dense.nonzero_params,
        "MACs": data.pruned.macs / data.dense.macs,
        "file size": data.pruned.size_bytes / data.dense.size_bytes,
        "CPU latency": data.pruned_latency.median_ms / data.dense_latency.median_ms,
    }
    figure = go.Figure(
        go.Bar(
            x=list(shares),
            y=list(shares.values()),
            marker_color=PRUNED_COLOUR,
            text=[f"{share:.0%}" for share in shares.values()],
            textposition="auto",
            name="pruned",
            hovertemplate="%{x}: %{y:.1%} of dense<extra></extra>",
        )
    )
    figure.add_hline(y=1.0, line_dash="dash", line_color=KEPT_COLOUR, annotation_text="dense")
    figure.update_layout(
        title="Pruned model as a share of the dense one",
        height=380,
        margin=dict(t=50, b=40),
        yaxis=dict(title="share of dense", tickformat=".0%", rangemode="tozero"),
    )
    return figure


def top5_chart(example: ImageComparison) -> go.Figure:
    """Horizontal bars of the top-5 classes of both models on the example photo."""
    figure = top_k_chart(example.dense_top, example.pruned_top)
    figure.update_layout(title="Top-5 classes on the example photo", height=420, margin=dict(t=50, b=40))
    return figure


def curve_chart(data: ReportData) -> go.Figure:
    """Fidelity against ratio, one line per criterion, with this configuration marked."""
    structured = data.config.mode == "structured"
    figure = go.Figure()
    for criterion in dict.fromkeys(point.criterion for point in data.curve):
        points = sorted((p for p in data.curve if p.criterion == criterion), key=lambda p: p.ratio)
        name = get_criterion(criterion).label if structured else "weight magnitude (masks)"
        figure.add_trace(
            go.Scatter(
                x=[p.ratio for p in points],
                y=[p.fidelity for p in points],
                mode="lines+markers",
                name=name,
                line=dict(dash="dot") if criterion == "random" else None,
            )
        )
    if not data.config.overrides:
        # with per-layer overrides the slider's ratio does not describe the pruned model, so no point is drawn
        figure.add_trace(
            go.Scatter(
                x=[data.config.ratio],
                y=[primary_fidelity(data.entry, data.fidelity)],
                mode="markers",
                name="this configuration",
                marker=dict(symbol="star", size=16, color=PRUNED_COLOUR),
            )
        )
    figure.update_layout(
        title="Fidelity against pruning ratio",
        height=420,
        margin=dict(t=50, b=40),
        xaxis=dict(title="channel ratio" if structured else "weight sparsity", range=[-0.02, 0.92]),
        yaxis=dict(title=fidelity_label(data), tickformat=".0%", range=[-0.03, 1.05]),
    )
    return figure


def report_figures(data: ReportData) -> dict[str, go.Figure]:
    """Build the report's charts, keyed by file name stem: costs, the top-5 example (classifiers) and the curve."""
    figures = {"costs": costs_chart(data)}
    if data.entry.task == TASK_CLASSIFICATION and data.entry.pretrained:
        figures["top5"] = top5_chart(data.example)
    figures["fidelity-curve"] = curve_chart(data)
    return figures


# --- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
.lead { font-size: 1.15rem; }
.muted { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.images { display: flex; gap: 0.8rem; flex-wrap: wrap; }
figure { margin: 0; }
figure img { max-width: 250px; height: auto; display: block; }
figcaption { font-size: 0.9rem; color: #555; }
"""


def image_data_uri(image: Image.Image, fmt: str = "PNG", max_side: int | None = None) -> str:
    """Encode an image as a PNG or JPEG data URI for an <img> tag, shrunk to `max_side` pixels if given."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _table(rows: list[dict[str, str]], *, numeric: bool = True) -> str:
    """HTML table of `rows`; with `numeric`, every column after the first is right-aligned."""
    header = "".join(f"<th>{html.escape(key)}</th>" for key in rows[0])
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row.values()):
            css = ' class="number"' if numeric and index > 0 else ""
            cells.append(f"<td{css}>{html.escape(str(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_html(figure: go.Figure, name: str) -> str:
    # plotly.js is embedded once in the page head, so each chart brings only its div and data
    return figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"chart-{name}", config={"displaylogo": False, "responsive": True}
    )


def _img(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _example_html(data: ReportData, figures: Mapping[str, go.Figure]) -> str:
    example = data.example
    credit = SAMPLE_IMAGES[data.sample].credit if data.sample in SAMPLE_IMAGES else ""
    photo = _img(image_data_uri(data.photo, "JPEG", PHOTO_MAX_SIDE), f"input: {data.sample}")
    if data.entry.task == TASK_CLASSIFICATION and not data.entry.pretrained:
        pictures = f'<div class="images">{photo}</div>'
        details = f"<p>{html.escape(UNTRAINED_TEXT)}, so no class names are shown.</p>"
    elif data.entry.task == TASK_CLASSIFICATION:
        pictures = f'<div class="images">{photo}</div>'
        ranks = [
            {"rank": str(i + 1), "dense": f"{d[0]} ({d[1]:.1%})", "pruned": f"{p[0]} ({p[1]:.1%})"}
            for i, (d, p) in enumerate(zip(example.dense_top, example.pruned_top))
        ]
        details = _table(ranks, numeric=False) + _figure_html(figures["top5"], "top5")
    else:
        captions = OUTPUT_MAP_CAPTIONS[data.entry.task]
        maps = [
            _img(image_data_uri(example.dense_image), captions[0]),
            _img(image_data_uri(example.pruned_image), captions[1]),
            _img(image_data_uri(example.difference_image), captions[2]),
        ]
        pictures = f'<div class="images">{photo}{"".join(maps)}</div>'
        details = ""
    return (
        f"<h2>Before and after: {html.escape(data.sample)}</h2>"
        f'<p class="muted">{html.escape(credit)}</p>{pictures}'
        f"<h3>Fidelity on this photo</h3>{_table(fidelity_rows(example.fidelity, data.entry.task))}{details}"
    )


def build_html(data: ReportData, figures: Mapping[str, go.Figure] | None = None) -> str:
    """Render the report as one self-contained HTML page: plotly.js, charts and images are all inline."""
    figures = figures or report_figures(data)
    config = data.config
    title = f"Pruning report: {data.entry.label}, ratio {config.ratio:.2f}"
    latency = data.pruned_latency
    reduction = (
        f"{data.channel_reduction:.1%} of output channels removed"
        if config.mode == "structured"
        else f"{data.weight_sparsity:.1%} of prunable weights set to zero; shapes and MACs are unchanged"
    )
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">Generated {html.escape(data.generated)} by Pruning Explorer.</p>',
        f'<p class="lead">{html.escape(headline(data))}</p>',
        "<h2>Configuration</h2>",
        _table(configuration_rows(data), numeric=False),
        "<h2>Size and speed</h2>",
        (
            f"<p>{html.escape(reduction)}. Speed-up {data.speedup:.2f}×, MAC reduction {data.mac_reduction:.1%} "
            f"({data.dense.macs / max(data.pruned.macs, 1):.2f}× fewer).</p>"
        ),
        _table(summary_rows(data)),
        (
            f'<p class="muted">Latency: median of {latency.runs} runs after warm-up, batch 1 at '
            f"{html.escape(str(tuple(data.entry.example_input_shape)))}, {latency.threads} threads, dense and pruned "
            f"timed in alternation after the same preparation ({html.escape(latency.preparation)}). File size: "
            "torch.save of the state_dict.</p>"
        ),
        _figure_html(figures["costs"], "costs"),
        f"<h2>Fidelity on {data.fidelity_images} held-out images</h2>",
        _table(fidelity_rows(data.fidelity, data.entry.task)),
        (
            '<p class="muted">Measured against the dense model\'s own outputs, on photos and video frames that '
            "calibration never saw.</p>"
        ),
        _example_html(data, figures),
        "<h2>Fidelity against ratio</h2>",
        _figure_html(figures["fidelity-curve"], "fidelity-curve"),
        (
            f'<p class="muted">Curve measured on {html.escape(data.curve_source)}. A random ranking is the '
            "baseline every criterion should beat.</p>"
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


# --- PNG -----------------------------------------------------------------------------------------

def render_pngs(
    figures: Mapping[str, go.Figure],
    *,
    width: int = 1000,
    scale: float = 2.0,
    chromium: str = CHROMIUM,
    timeout_s: float = 60.0,
) -> dict[str, bytes]:
    """Render each figure to PNG bytes with plotly.js in a headless Chromium, offline.

    Each image is `width` CSS pixels wide and as high as the figure's layout height (450 if unset),
    times `scale`. Raises RendererUnavailableError when Playwright or Chromium is missing or fails.
    """
    if not Path(chromium).is_file():
        raise RendererUnavailableError(f"PNG export needs Chromium at {chromium}, which is missing: install Debian's chromium package")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise RendererUnavailableError(f"PNG export needs the playwright package, which is missing: {error}") from error

    pngs = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS), timeout=timeout_s * 1000)
            try:
                # offline: a chart that tried to fetch anything would fail here as in the exported file
                page = browser.new_context(offline=True).new_page()
                page.set_default_timeout(timeout_s * 1000)
                page.set_content('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body></body></html>')
                page.add_script_tag(content=get_plotlyjs())
                for name, figure in figures.items():
                    height = figure.layout.height or 450
                    uri = page.evaluate(
                        "([figure, options]) => Plotly.toImage(figure, options)",
                        [json.loads(figure.to_json()), {"format": "png", "width": width, "height": height, "scale": scale}],
                    )
                    pngs[name] = base64.b64decode(uri.split(",", 1)[1])
            finally:
                browser.close()
    except PlaywrightError as error:
        raise RendererUnavailableError(f"PNG export failed in Chromium at {chromium}: {error}") from error
    return pngs


def export_report(data: ReportData, *, render_png: bool = True, chromium: str = CHROMIUM) -> ReportExport:
    """Build the HTML page and, if `render_png`, the PNG charts; a PNG failure is kept, not raised."""
    figures = report_figures(data)
    page = build_html(data, figures)
    if not render_png:
        return ReportExport(page, {}, "PNG rendering was not requested")
    try:
        pngs = render_pngs(figures, chromium=chromium)
    except RendererUnavailableError as error:
        logger.warning("report charts not rendered as PNG, only the HTML is offered: %s", error)
        return ReportExport(page, {}, str(error))
    return ReportExport(page, pngs)
