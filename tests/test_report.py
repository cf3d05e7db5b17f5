"""The exported report: numbers, inline charts and images, no external resources, PNG rendering."""

import io
import re
import shutil
import zipfile

import pytest
from PIL import Image

from pruning.calibration import to_batch
from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.metrics import LatencyStats
from pruning.report import (
    CHROMIUM,
    FidelityPoint,
    collect_report,
    curve_criteria,
    export_report,
    fidelity_curve,
    held_out_subset,
    render_pngs,
    report_figures,
)
from pruning.sweep import SweepPoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not found: PNG rendering needs Debian's chromium"
)
# Fixed timings keep the tests fast and let them look for exact numbers in the page.
LATENCY = (
    LatencyStats(median_ms=20.0, q1_ms=19.0, q3_ms=21.0, runs=12, threads=2, preparation="fold-bn+torchscript"),
    LatencyStats(median_ms=12.5, q1_ms=12.0, q3_ms=13.0, runs=12, threads=2, preparation="fold-bn+torchscript"),
)


@pytest.fixture(scope="module")
def mobilenet_report(mobilenet, mobilenet_l1):
    config = PruneConfig("mobilenet_v2", 0.3)
    pruned = prune(mobilenet, config, analysis=mobilenet_l1)
    # the curve is measured here, so this fixture also runs fidelity_curve through collect_report
    return collect_report(config, mobilenet, pruned, sample="chelsea", images=4, latency=LATENCY)


@pytest.fixture(scope="module")
def mobilenet_export(mobilenet_report):
    return export_report(mobilenet_report, render_png=False)


def external_references(page: str) -> list[str]:
    """Every src or href in a tag that does not point into the page itself (data: URIs or #anchors)."""
    references = re.findall(r"<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']*)", page, re.IGNORECASE)
    return [reference for reference in references if not reference.startswith(("data:", "#"))]


def test_html_contains_measured_numbers(mobilenet_report, mobilenet_export):
    page = mobilenet_export.html
    assert f"{mobilenet_report.dense.params:,}" in page
    assert f"{mobilenet_report.pruned.params:,}" in page
    assert f"{mobilenet_report.pruned.macs / 1e9:.3f}" in page
    assert f"{mobilenet_report.pruned.size_bytes / 1e6:.2f}" in page
    assert '<td class="number">20.0</td>' in page  # dense latency
    assert '<td class="number">12.5</td>' in page  # pruned latency
    assert "Speed-up 1.60×" in page
    assert f"MAC reduction {mobilenet_report.mac_reduction:.1%}" in page
    assert f"{mobilenet_report.fidelity['top1_agreement']:.1%}" in page
    assert "Top-5 overlap" in page
    assert "KL(dense ‖ pruned)" in page


def test_html_names_configuration(mobilenet_export):
    page = mobilenet_export.html
    assert "MobileNetV2" in page
    assert "remove channels (structured)" in page
    assert "L1 filter magnitude" in page
    assert "same ratio in every layer" in page
    assert "ratio 0.30" in page


def test_html_embeds_plotly_charts(mobilenet_export):
    page = mobilenet_export.html
    for name in ("costs", "top5", "fidelity-curve"):
        assert f'id="chart-{name}"' in page
    assert page.count("Plotly.newPlot") == 3
    assert len(page) > 3_000_000  # plotly.js itself is about 4.7 MB, so it is inline


def test_html_loads_nothing_external(mobilenet_export):
    page = mobilenet_export.html
    assert external_references(page) == []
    assert not re.search(r"<script\b[^>]*\bsrc=", page, re.IGNORECASE)
    assert "cdn.plot.ly" not in page.split("<body>", 1)[1]


def test_html_embeds_example_photo(mobilenet_report, mobilenet_export):
    page = mobilenet_export.html
    assert '<img src="data:image/jpeg;base64,' in page
    assert "Before and after: chelsea" in page
    dense_class = mobilenet_report.example.dense_top[0][0]
    assert dense_class in page


def test_curve_has_criterion_and_baseline(mobilenet_report):
    criteria = {point.criterion for point in mobilenet_report.curve}
    assert criteria == {"l1", "random"}
    start = [point for point in mobilenet_report.curve if point.ratio == 0.0]
    assert [point.fidelity for point in start] == [1.0, 1.0]
    assert mobilenet_report.curve_source == "the same 4 held-out images"


def test_curve_criteria_by_mode():
    assert curve_criteria(PruneConfig("mobilenet_v2", 0.3, criterion="fpgm")) == ("fpgm", "random")
    assert curve_criteria(PruneConfig("mobilenet_v2", 0.3, criterion="random")) == ("random",)
    assert curve_criteria(PruneConfig("mobilenet_v2", 0.3, mode="unstructured")) == ("l1",)


def test_fidelity_curve_masks_mode(mobilenet):
    entry = get_model_entry("mobilenet_v2")
    inputs = to_batch(entry, held_out_subset(2))
    config = PruneConfig("mobilenet_v2", 0.5, mode="unstructured")
    points = fidelity_curve(config, mobilenet, inputs, ratios=(0.0, 0.5))
    assert [(point.criterion, point.ratio) for point in points] == [("l1", 0.0), ("l1", 0.5)]
    assert points[0].fidelity == 1.0


def test_held_out_subset_rejects_bad_count():
    with pytest.raises(ValueError, match="invalid held-out image count 0"):
        held_out_subset(0)
    with pytest.raises(ValueError, match="invalid held-out image count 100000"):
        held_out_subset(100_000)


def test_sweep_points_accepted_as_curve(mobilenet, mobilenet_l1):
    config = PruneConfig("mobilenet_v2", 0.2)
    pruned = prune(mobilenet, config, analysis=mobilenet_l1)
    sweep = [SweepPoint("l1", ratio, 1, 1, 1.0, 1.0 - ratio) for ratio in (0.0, 0.5, 0.9)]
    data = collect_report(
        config, mobilenet, pruned, sample="coffee", images=2, latency=LATENCY, curve=sweep, curve_source="a sweep"
    )
    figure = report_figures(data)["fidelity-curve"]
    assert list(figure.data[0].x) == [0.0, 0.5, 0.9]
    assert figure.data[-1].name == "this configuration"
    assert "Curve measured on a sweep." in export_report(data, render_png=False).html


def test_edges_report_shows_maps(hed):
    config = PruneConfig("hed", 0.3)
    pruned = prune(hed, config)
    curve = [FidelityPoint("l1", 0.0, 1.0), FidelityPoint("l1", 0.3, 0.8)]
    data = collect_report(config, hed, pruned, sample="coffee", images=2, latency=LATENCY, curve=curve, curve_source="x")
    page = export_report(data, render_png=False).html
    assert "PSNR vs dense" in page
    assert "Edge F1 vs dense" in page
    assert page.count('<img src="data:image/png;base64,') == 3  # dense and pruned edges, difference
    assert "Top-5" not in page
    assert set(report_figures(data)) == {"costs", "fidelity-curve"}
    assert external_references(page) == []


def test_png_export_without_chromium(mobilenet_report):
    exported = export_report(mobilenet_report, chromium="/nonexistent/chromium")
    assert exported.pngs == {}
    assert "/nonexistent/chromium" in exported.png_error
    assert exported.html.startswith("<!DOCTYPE html>")


@pytest.mark.browser
@needs_chromium
def test_png_rendering(mobilenet_report):
    figures = report_figures(mobilenet_report)
    pngs = render_pngs(figures, width=800, scale=1)
    assert set(pngs) == {"costs", "top5", "fidelity-curve"}
    for name, data in pngs.items():
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 20_000, name  # an empty plotly figure of this size is about 11 kB
        image = Image.open(io.BytesIO(data))
        assert image.size == (800, figures[name].layout.height), name


@pytest.mark.browser
@needs_chromium
def test_png_zip_lists_every_chart(mobilenet_report):
    exported = export_report(mobilenet_report)
    assert exported.png_error is None
    with zipfile.ZipFile(io.BytesIO(exported.png_zip())) as archive:
        assert sorted(archive.namelist()) == ["costs.png", "fidelity-curve.png", "top5.png"]
        assert archive.read("costs.png").startswith(PNG_SIGNATURE)
