"""Dashboard start-up time and memory, measured through a real browser on a loopback port.

Start-up: from launching `make run` to the first rendered page (the "Parameters" metric on the
Overview page, which needs the default model built, scored, pruned and measured). Memory: resident
set size of the Streamlit process after visiting both catalogue models, each with one pruned copy.

    .venv/bin/python benchmarks/startup.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from common import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 300_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(port: int, deadline: float) -> None:
    url = f"http://localhost:{port}/_stcore/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"streamlit did not respond on {url} within 120 s: check that port {port} is free")


def _tree_rss_mb(root_pid: int) -> dict[str, float]:
    """RSS in MB of `root_pid` and of each descendant, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    result, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
        except OSError:
            continue
        rss_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        result[f"{pid} {cmdline.strip()}"] = rss_kb / 1024
        stack.extend(children.get(pid, []))
    return result


def _wait_rendered(page) -> None:
    page.get_by_text("CPU latency (median)").first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=TIMEOUT_MS)


def run() -> dict:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = dict(os.environ, STREAMLIT_SERVER_HEADLESS="true", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    started = time.monotonic()
    server = subprocess.Popen(
        ["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    result: dict = {}
    try:
        _wait_healthy(port, started + 120)
        result["health_s"] = time.monotonic() - started
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"http://localhost:{port}")
            page.get_by_text("Parameters").first.wait_for()
            result["first_page_s"] = time.monotonic() - started
            _wait_rendered(page)
            result["first_page_with_latency_s"] = time.monotonic() - started
            result["rss_one_model_mb"] = _tree_rss_mb(server.pid)

            # the second catalogue model through the sidebar's model picker
            dense_params = page.locator('[data-testid="stMetric"]', has_text="Parameters").first.inner_text()
            page.locator('[data-testid="stSelectbox"]', has_text="Model").first.locator("input").click(timeout=20_000)
            page.get_by_role("option").filter(has_text="HED").first.click(timeout=20_000)
            begin = time.monotonic()
            page.wait_for_function(
                "old => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
                ".find(e => e.innerText.includes('Parameters')); return m && m.innerText !== old; }",
                arg=dense_params,
            )
            _wait_rendered(page)
            result["second_model_s"] = time.monotonic() - begin
            result["rss_two_models_mb"] = _tree_rss_mb(server.pid)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return result


def first_prune_s() -> dict[str, float]:
    """Time to build, score and prune the default model in a fresh process (the first slider state)."""
    code = (
        "import time; t=time.perf_counter();"
        "from pruning.catalog import DEFAULT_MODEL, get_model_entry;"
        "from pruning.explorer import PruneConfig, analyse_entry, model_stats, prune;"
        "t_import=time.perf_counter();"
        "entry=get_model_entry(DEFAULT_MODEL); base=entry.build(); t_build=time.perf_counter();"
        "analysis=analyse_entry(entry, base, 'l1'); t_score=time.perf_counter();"
        "result=prune(base, PruneConfig(DEFAULT_MODEL, 0.3), analysis=analysis);"
        "model_stats(base, entry.example_inputs()); model_stats(result.model, entry.example_inputs()); t_prune=time.perf_counter();"
        "print(t_import-t, t_build-t_import, t_score-t_build, t_prune-t_score)"
    )
    output = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    imports, build, score, prune_and_stats = (float(value) for value in output.split()[-4:])
    return {"imports_s": imports, "build_s": build, "score_s": score, "prune_and_stats_s": prune_and_stats}


if __name__ == "__main__":
    print(first_prune_s())
    print(run())
