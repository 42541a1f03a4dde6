"""``make bench`` figures of the lab service (area ``lab`` of BENCHMARKS.md).

64 simulated channels at real time (CELLBENCH_SIM_SPEED=1), 1 s tick, a record every
second each, and the grid page open in headless chromium (the server pushes every
record to it). Measured over WINDOW_S of wall time:

- the service's own CPU (its process only: /proc/<pid>/stat utime + stime; the boards
  and their relays are other processes, as real boards would be other hardware) as %
  of one core, per channel, and its resident memory;
- latency from the service receiving a record (``rx_unix_s``, stamped when the session
  hands it over, after the board's line came through its relay and was logged) to the
  page's handler for it (same host clock);
- page load: navigation to the grid showing all 64 cards, in the browser's own clock.
"""

import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from ..paths import PROTOCOLS
from . import client as labclient

CHANNELS = 64
WINDOW_S = 30.0
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGET_CPU = "target < 25 % of one core for 64 channels"


def _cpu_s(pid):
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_MB(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _protocol():
    """Long 1C cycling with a record every second (ends long after the window)."""
    doc = json.loads((PROTOCOLS / "lto-100-cycles-1C.json").read_text())
    doc["record"] = {"time_s": 1}
    return doc


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seqs(api):
    return {c["id"]: c["live"].get("seq") for c in api.get("/api/channels")}


def _wait(probe, until, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if until(value):
            return value
        time.sleep(0.5)
    raise RuntimeError(f"lab bench: gave up after {timeout_s:.0f} s; last {value!r}")


def _browser():
    """(playwright context manager, reason it cannot run or None)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        return None, f"playwright not installed ({exc})"
    if not Path(CHROMIUM).is_file():
        return None, f"no {CHROMIUM}"
    return sync_playwright, None


def run():
    with tempfile.TemporaryDirectory(prefix="cellbench-labbench-") as data:
        proc, api = labclient.start(data, _free_port(), sim_speed=1.0)
        try:
            return _measure(proc, api)
        finally:
            proc.kill()
            proc.wait()
            labclient.stop_boards(data)


def _measure(proc, api):
    protocol = _protocol()
    t0 = time.monotonic()
    for k in range(CHANNELS):
        ch = api.post("/api/channels", {"cell": "lto-li-coin", "seed": k})
        api.post(f"/api/channels/{ch['id']}/jobs", {"protocol": protocol, "cell_name": f"bench-{k}",
                                                    "tick_ms": 1000, "model_file": "lto-li-coin"})
    _wait(lambda: _seqs(api), lambda s: all(v is not None for v in s.values()), 600)
    started_s = time.monotonic() - t0
    sync_playwright, why = _browser()
    rows = [{"name": "channels", "value": CHANNELS, "unit": "",
             "note": f"simulated LTO/Li at real time, 1 s tick, a record per second each, SoC "
                     f"estimator on; all running {started_s:.0f} s after the first was added"}]
    if sync_playwright is None:
        return rows + _service_rows(proc, api, None) + [
            {"name": "page", "value": "not measured", "unit": "", "note": why}]
    profile = tempfile.mkdtemp(prefix="cellbench-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                   headless=True, viewport={"width": 1600, "height": 1000})
        page = ctx.new_page()
        page.goto(api.url + "/")
        page.wait_for_function(f"document.body.dataset.loaded === '{CHANNELS}'", timeout=120_000)
        load_ms = page.evaluate("performance.now()")
        page.evaluate("lab.stats.latencies_s.length = 0")
        rows += _service_rows(proc, api, page)
        lat = sorted(page.evaluate("lab.stats.latencies_s"))
        ctx.close()
    rows.append({"name": "page load, 64-channel grid", "value": round(load_ms), "unit": "ms",
                 "note": "navigation start to every card drawn (headless chromium, same host)"})
    if lat:
        rows += [
            {"name": "record to page, median", "value": round(1000 * statistics.median(lat), 1),
             "unit": "ms", "note": f"{len(lat)} records; service receipt -> page handler; target < 1 s"},
            {"name": "record to page, p99", "value": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
             "unit": "ms", "note": f"max {1000 * lat[-1]:.0f} ms"}]
    return rows


def _service_rows(proc, api, page):
    """CPU and memory of the service process over WINDOW_S (the page connected, if any)."""
    before, cpu0, w0 = _seqs(api), _cpu_s(proc.pid), time.monotonic()
    if page is not None:
        page.wait_for_timeout(WINDOW_S * 1000)
    else:
        time.sleep(WINDOW_S)
    cpu1, w1, after = _cpu_s(proc.pid), time.monotonic(), _seqs(api)
    share = 100 * (cpu1 - cpu0) / (w1 - w0)
    records = sum(after[c] - before[c] for c in before if after.get(c) is not None)
    rss = _rss_MB(proc.pid)
    return [
        {"name": "records ingested", "value": round(records / (w1 - w0), 1), "unit": "records/s",
         "note": f"over {w1 - w0:.0f} s, logged and pushed to {'the page' if page else 'no page'}"},
        {"name": "service CPU, 64 channels", "value": round(share, 1), "unit": "% of one core",
         "note": TARGET_CPU},
        {"name": "service CPU per channel", "value": round(share / CHANNELS, 2), "unit": "% of one core", "note": ""},
        {"name": "service memory", "value": round(rss, 1), "unit": "MB RSS",
         "note": f"{rss / CHANNELS:.2f} MB per channel"}]
