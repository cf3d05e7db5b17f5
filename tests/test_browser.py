"""End-to-end: the real server in a real Chromium, driven by Playwright.

The browser is Debian's /usr/bin/chromium (Playwright's own download cannot run offline). Without
it these tests are skipped with a reason, except under CI, where they fail instead.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from clips import write_clip
from test_app import count

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-results" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL_TIMEOUT_MS = 180_000  # first prune, scoring and latency measurement on a slow CPU


def _require_browser():
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} not found: install Debian's chromium (make browser) to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server():
    """Start the dashboard on a free loopback port, yield its URL, and stop it afterwards."""
    _require_browser()
    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"streamlit did not start on {url}: {process.stdout.read()}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def server():
    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@contextlib.contextmanager
def open_tab(browser, url: str):
    """Open `url` in a tab of a new browser context, and close the context afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(MODEL_TIMEOUT_MS)
    try:
        tab.goto(url)
        yield tab
    finally:
        context.close()


@pytest.fixture
def page(browser, server):
    with open_tab(browser, server) as tab:
        yield tab


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def wait_until_idle(page):
    # Streamlit shows a status widget while the script runs; wait for it to go away.
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=MODEL_TIMEOUT_MS)


def screenshot(page, name: str):
    # plotly draws after the script finishes: wait for every chart's SVG before the picture
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".every(chart => chart.querySelector('.main-svg'))"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_page(page, title: str):
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", level=1).first.wait_for()
    wait_until_idle(page)


def test_overview_slider_changes_numbers(page):
    page.get_by_text("CPU latency (median)").first.wait_for()
    wait_until_idle(page)
    before = metric_value(page, "Parameters")
    screenshot(page, "overview")

    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(6):
        slider.press("ArrowRight")
    wait_until_idle(page)
    page.wait_for_function(
        "before => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')][0].innerText !== before",
        arg=before,
    )
    after = metric_value(page, "Parameters")
    assert after != before
    assert count(after) < count(before)


@pytest.mark.parametrize("title", ["Importance", "Images", "Look inside", "Video", "Sensitivity and sweeps", "Recovery", "Report"])
def test_each_page_opens(page, title):
    # the page list exists once app.py has run; clicking earlier can open the page without it
    page.get_by_text("Pruning setup").first.wait_for()
    open_page(page, title)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert metric_value(page, "MACs").endswith("G")
    screenshot(page, title.lower().replace(" ", "-"))


def test_image_upload(page, tmp_path):
    from PIL import Image

    open_page(page, "Images")
    image = tmp_path / "upload.jpg"
    Image.new("RGB", (640, 480), (30, 120, 200)).save(image)
    page.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(image))
    page.get_by_text("upload.jpg").first.wait_for()
    wait_until_idle(page)
    assert page.get_by_text("Top-5 overlap").count() > 0
    assert page.locator('[data-testid="stException"]').count() == 0


def test_video_upload_plays(page, tmp_path):
    open_page(page, "Video")
    clip = write_clip(tmp_path / "clip.mp4", width=160, height=120, frames=8)
    page.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(clip))
    page.get_by_text("clip.mp4").first.wait_for()
    page.get_by_role("button", name="Run dense and pruned on the clip").click()
    video = page.locator("video").first
    video.wait_for()
    wait_until_idle(page)
    # the browser must be able to decode the H.264 output: metadata loads and playback advances
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    assert page.evaluate("() => document.querySelector('video').videoWidth") > 0
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0")
    assert page.evaluate("() => document.querySelector('video').error") is None
    screenshot(page, "video-result")


def test_video_stop_keeps_partial_clip(page):
    import re

    page.get_by_text("Pruning setup").first.wait_for()
    open_page(page, "Video")
    page.get_by_text("Whole clip").first.click()
    wait_until_idle(page)
    page.get_by_role("button", name="Run dense and pruned on the clip").click()
    # wait until a few of bikes.mp4's 250 frames are done, then stop
    page.get_by_text(re.compile(r"Frame ([3-9]|\d\d+) of 250")).first.wait_for()
    assert page.get_by_text(re.compile(r"left")).count() > 0
    page.get_by_role("button", name=re.compile("Stop and keep")).click()
    heading = page.get_by_text(re.compile(r"bikes: \d+ frames, .*\(stopped early\)")).first
    heading.wait_for()
    frames = int(re.search(r"bikes: (\d+) frames", heading.inner_text()).group(1))
    assert 3 <= frames < 250
    page.locator("video").first.wait_for()
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    assert page.evaluate("() => document.querySelector('video').videoWidth") > 0
    assert page.evaluate("() => document.querySelector('video').error") is None
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_role("button", name="Run dense and pruned on the clip").is_enabled()
    screenshot(page, "video-stopped")


@pytest.fixture(scope="module")
def camera_browser(browser):
    # Chromium's fake capture device replaces a webcam and grants access without a prompt.
    # Playwright allows one sync driver per thread, so the second Chromium comes from the first's.
    flags = [*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    instance = browser.browser_type.launch(executable_path=CHROMIUM, args=flags)
    yield instance
    instance.close()


def test_camera_snapshot_runs_both_models(camera_browser, server):
    context = camera_browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    tab = context.new_page()
    tab.set_default_timeout(MODEL_TIMEOUT_MS)
    try:
        tab.goto(server)
        # the page list exists once app.py has run; clicking earlier can open the page without it
        tab.get_by_text("Pruning setup").first.wait_for()
        open_page(tab, "Camera")
        # Take Photo only captures once the fake camera's stream is playing
        tab.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 2; }")
        tab.get_by_role("button", name="Take Photo").click()
        tab.get_by_text("Top-5 overlap").first.wait_for()
        wait_until_idle(tab)
        assert metric_value(tab, "Top-5 overlap").endswith("%")
        assert tab.locator('[data-testid="stException"]').count() == 0
        screenshot(tab, "camera")
    finally:
        context.close()


def test_exported_report_opens_offline(page, browser, tmp_path):
    page.get_by_text("Pruning setup").first.wait_for()
    open_page(page, "Report")
    page.get_by_role("button", name="Build the report").click()
    html_button = page.get_by_role("button", name="Download the report (HTML)")
    html_button.wait_for()
    wait_until_idle(page)
    screenshot(page, "report")
    with page.expect_download() as download:
        html_button.click()
    report = tmp_path / "report.html"
    download.value.save_as(report)

    # offline, and every request other than the file itself is recorded and aborted
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    requests, errors = [], []

    def block_remote(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    context.route("**/*", block_remote)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(report.as_uri())
        tab.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        assert tab.locator(".js-plotly-plot").count() == 3  # costs, top-5 and the fidelity curve
        assert tab.locator("#chart-costs .barlayer .point path").count() == 4
        assert tab.locator("#chart-fidelity-curve .scatterlayer .trace path.js-line").count() >= 2
        assert tab.locator("img[src^='data:image/jpeg']").count() == 1

        # the charts respond to the mouse: hovering over a bar shows its label. Plotly's drag layer
        # covers the bars, so the mouse moves to the bar's centre instead of hovering the element.
        bar = tab.locator("#chart-costs .barlayer .point path").first
        bar.scroll_into_view_if_needed()
        box = bar.bounding_box()
        tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        tab.locator("#chart-costs .hoverlayer .hovertext").first.wait_for()
        assert "of dense" in tab.locator("#chart-costs .hoverlayer .hovertext").first.text_content()
        assert requests == []
        assert errors == []
    finally:
        context.close()


def test_digits_model_from_link(browser, server):
    with open_tab(browser, f"{server}/images?model=digits_cnn&ratio=0.3") as tab:
        tab.get_by_text("Dense accuracy, 1000 labelled held-out").first.wait_for()
        wait_until_idle(tab)
        assert tab.locator('[data-testid="stException"]').count() == 0
        assert metric_value(tab, "Dense accuracy, 1000 labelled held-out") == "98.5%"
        assert metric_value(tab, "Parameters").endswith(" k")
        assert tab.get_by_text("Where each model looks (Grad-CAM)").count() == 1
        screenshot(tab, "digits-images")


def test_deep_link_on_fresh_server(browser):
    # The first request of a new server goes straight to a page: Streamlit could run that page
    # without app.py, and the sidebar then listed file names (app, camera, images...).
    with running_server() as url, open_tab(browser, f"{url}/images?model=digits_cnn") as tab:
        tab.get_by_text("Dense accuracy, 1000 labelled held-out").first.wait_for()
        wait_until_idle(tab)
        navigation = tab.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Sensitivity and sweeps" in navigation
        assert "sensitivity" not in navigation
        assert tab.get_by_text("Pruning setup").count() == 1
        assert tab.locator('[data-testid="stException"]').count() == 0
