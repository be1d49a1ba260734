"""The live map end to end, in a real browser: `trajstream demo` with the map on, headless
Chromium (Debian's) driven by Playwright.

The simulator is deterministic, so the test knows its ground truth before the demo starts:
it waits for the demo to publish an alert for a pair that really collides, and checks that
the page draws that pair highlighted within 1 s of the alert being published. It also checks
that vehicles are on the canvas, that clicking the alert in the list centres the map on it,
and saves a screenshot (set TRAJSTREAM_MAP_SCREENSHOT=path to keep it; the README's image is
made that way).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.cli import cli_cmd, cli_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Demo traffic: reckless drivers, so that collisions come within seconds.
VEHICLES, SEED, RECKLESS, DURATION_S = 120, 0, 0.3, 40.0
HIGHLIGHT_WITHIN_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _truth_collisions(seconds: float) -> set[tuple[str, str]]:
    from trajstream.simulator import SimConfig, iter_ticks

    cfg = SimConfig(vehicles=VEHICLES, duration_s=seconds, seed=SEED,
                    reckless_fraction=RECKLESS)
    pairs = set()
    for tick in iter_ticks(cfg):
        for event in tick.truth:
            if event.get("type") == "collision":
                a, b = str(event["vehicle_a"]), str(event["vehicle_b"])
                pairs.add((min(a, b), max(a, b)))
    return pairs


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _wait_http(url: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the demo exited before serving the map"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not served within {timeout_s} s")


def _read_alerts(proc: subprocess.Popen[str], out: queue.Queue[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            out.put(orjson.loads(line))


def _page_state(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
        const s = window.trajstreamMap;
        return {frames: s.frames, drawn: s.drawnVehicles, total: s.totalVehicles,
                open: s.openAlerts, shown: s.alertsShown, connected: s.connected,
                view: s.view, errors: s.errors};
    }""")


def _lit_pixels(page: Any) -> int:
    """Canvas pixels brighter than the background (vehicles, paths, highlights)."""
    return int(page.evaluate("""() => {
        const c = document.getElementById('map');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 200) n++;
        return n;
    }"""))


@pytest.mark.slow
def test_demo_map_in_chromium_shows_vehicles_and_highlights_a_true_collision(
    browser: Any, tmp_path: Path
) -> None:
    truth = _truth_collisions(DURATION_S)
    assert truth, "the scenario must contain collisions"
    port = _free_port()
    proc = subprocess.Popen(
        cli_cmd("demo", "--vehicles", str(VEHICLES), "--seed", str(SEED), "--reckless",
                str(RECKLESS), "--duration", str(DURATION_S), "--json", "--metrics-port", "0",
                "--map-port", str(port), log_level="WARNING"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    alerts: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read_alerts, args=(proc, alerts), daemon=True)
    reader.start()
    console: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url + "healthz", proc, 120)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(url)
        page.wait_for_function("() => window.trajstreamMap.drawnVehicles > 0", timeout=30_000)
        assert _lit_pixels(page) > 500

        # The first alert the demo publishes for a pair that truly collides...
        deadline = time.monotonic() + DURATION_S
        known = None
        while known is None and time.monotonic() < deadline:
            try:
                a = alerts.get(timeout=1.0)
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                continue
            if (min(a["vehicle_a"], a["vehicle_b"]), max(a["vehicle_a"], a["vehicle_b"])) in truth:
                known = a
        assert known is not None, "no alert for a ground-truth collision"
        # ...is drawn highlighted within 1 s of being published.
        alert_id = known["alert_id"]
        page.wait_for_function(f"() => '{alert_id}' in window.trajstreamMap.alertsShown",
                               timeout=10_000)
        shown = _page_state(page)["shown"][alert_id]
        delay = shown["shownWall"] - shown["pub"]
        print(f"alert {alert_id} ({known['vehicle_a']} x {known['vehicle_b']}, "
              f"{known['severity']}) drawn {delay * 1000:.0f} ms after publication")
        assert delay <= HIGHLIGHT_WITHIN_S, f"highlighted {delay:.2f} s after publication"
        assert {shown["a"], shown["b"]} == {known["vehicle_a"], known["vehicle_b"]}

        # The alert list: clicking the alert centres the map on its closest approach.
        item = page.locator(f'#alert-list li[data-alert-id="{alert_id}"]')
        item.click()
        page.wait_for_function(
            "([x, y]) => { const v = window.trajstreamMap.view; return v &&"
            " Math.abs((v.x0 + v.x1) / 2 - x) < 1 && Math.abs((v.y0 + v.y1) / 2 - y) < 1; }",
            arg=[known["closest_approach"]["x"], known["closest_approach"]["y"]],
            timeout=5_000,
        )
        time.sleep(0.6)  # a frame for the new view
        state = _page_state(page)
        assert state["connected"] and state["frames"] > 3 and not state["errors"]
        shot = tmp_path / "live-map.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("TRAJSTREAM_MAP_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
        page.close()
        assert not [c for c in console if c.startswith(("error", "pageerror"))], console
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
