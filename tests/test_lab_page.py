"""The lab's web page in a real headless browser (Debian's chromium, driven by Playwright).

The grid shows every channel; a fault shows on its card, in red, as the very record the
board flagged (the page is pushed each record, it does not poll); a job queued from the
channel page's form starts and its plots fill. Marked ``hil``: under
CELLBENCH_REQUIRE_HIL=1 (make test) a browser that cannot start fails the test instead of
skipping it. With CELLBENCH_LAB_SCREENSHOTS=DIR the grid and channel screenshots are
written there (docs/lab-grid.png and docs/lab-channel.png come from this test).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cellbench import bdflog
from cellbench.lab import client as labclient
from cellbench.paths import MODELS, PROTOCOLS
from cellbench.session import hms
from polling import wait_for
from test_lab import TICK_MS, faulting, free_port, library

pytestmark = pytest.mark.hil

CHROMIUM = "/usr/bin/chromium"
# Flags that let chromium run as root on a machine with no network but the loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPEED = 480.0
UPLOT = Path(__file__).resolve().parents[1] / "host/cellbench/lab/static/node_modules/uplot/dist/uPlot.iife.min.js"


@pytest.fixture(scope="module")
def browser():
    """A Playwright page in a fresh chromium profile (skip, failed by make test, if none)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed: {exc}")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium; make test does)")
    if not UPLOT.is_file():
        pytest.skip(f"no {UPLOT.name}: npm ci --prefix host/cellbench/lab/static (make does)")
    profile = tempfile.mkdtemp(prefix="cellbench-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                   headless=True, viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors
        yield page
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    data = tmp_path_factory.mktemp("labpage")
    proc, api = labclient.start(data, free_port(), SPEED, log=data / "service.log")
    yield data, api
    proc.kill()
    proc.wait()
    labclient.stop_boards(data)


def shot(page, name, tmp_path):
    out = Path(os.environ.get("CELLBENCH_LAB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / name), full_page=True)


def wait_shown(page, lab, selector, cid, timeout_ms=120_000):
    """Wait for ``selector`` on the page; on a timeout fail with what the service says of
    channel ``cid`` and its log's tail, so a slow CI run shows where it stood."""
    from playwright.sync_api import TimeoutError as PageTimeout

    data, api = lab
    try:
        page.wait_for_selector(selector, timeout=timeout_ms)
    except PageTimeout:
        state = api.get(f"/api/channels/{cid}")
        log = (data / "service.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"{selector} not shown; the page says {page.locator('#link').inner_text()!r}, "
                    f"the API: job {state['job']}, live {state['live']}, error {state['error']!r}; "
                    f"page errors {page.errors}; service log tail:\n{log}")


def card(page, cid):
    return page.locator(f'#grid a.card[data-channel="{cid}"]')


def check_estimates(where):
    """A card's capacity (mAh, % of the model's, ± 2 sigma) and R_ct (ohm ± 2 sigma) are
    shown, and are the fresh preset cell's: its capacity_Ah and rc[0] resistance."""
    import re

    model = json.loads((MODELS / "lto-li-coin.json").read_text())
    cap = re.fullmatch(r"([\d.]+) mAh \(([\d.]+) %\) ± ([\d.]+)", where.locator("dd.cap").inner_text())
    rct = re.fullmatch(r"([\d.]+) Ω ± ([\d.]+)", where.locator("dd.rct").inner_text())
    assert cap and rct
    assert float(cap[1]) == pytest.approx(model["capacity_Ah"] * 1e3, rel=0.05)
    assert float(cap[2]) == pytest.approx(100 * float(cap[1]) / (model["capacity_Ah"] * 1e3), abs=0.1)
    assert float(rct[1]) == pytest.approx(model["rc"][0]["r_ohm"], rel=0.3)
    assert float(cap[3]) > 0 and float(rct[2]) > 0


def test_grid_fault_and_a_job_queued_from_the_page(browser, lab, tmp_path):
    data, api = lab
    page = browser
    cells = ["lto-li-coin", "lto-li-coin", "gr-li-coin", "lto-li-coin"]
    cids = [api.post("/api/channels", {"cell": c, "seed": k})["id"] for k, c in enumerate(cells)]
    api.post(f"/api/channels/{cids[1]}/jobs", {"protocol": library("smoke", cycle_count=50),
             "cell_name": "LTO-A1", "mass_mg": 2.0, "model_file": "lto-li-coin", "tick_ms": TICK_MS})
    gr = json.loads((PROTOCOLS / "gr-ageing-1Ag.json").read_text())
    api.post(f"/api/channels/{cids[2]}/jobs", {"protocol": gr, "cell_name": "GR-B1", "mass_mg": 2.0,
                                               "tick_ms": TICK_MS})

    # The grid: one card per channel, live.
    page.goto(api.url + "/")
    page.wait_for_function(f"document.body.dataset.loaded === '{len(cids)}'")
    assert page.locator("#grid a.card").count() == len(cids)
    for cid in cids:
        assert cid in card(page, cid).inner_text()
    page.wait_for_function("document.getElementById('link').textContent === 'live'")

    # A fault, queued through the API, turns its card red, showing the faulting record.
    trips = faulting()
    trips["safety"]["min_voltage_V"] = 1.53  # above the LTO plateau under 1C: trips early
    job = api.post(f"/api/channels/{cids[3]}/jobs", {"protocol": trips, "cell_name": "LTO-F1",
                                                     "tick_ms": TICK_MS})
    wait_shown(page, lab, f'#grid a.card.fault[data-channel="{cids[3]}"]', cids[3])
    text = card(page, cids[3]).inner_text()
    assert "UNDER_VOLTAGE" in text
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}")["state"], "the faulted job to end",
             until="fault".__eq__)
    status, csv = api.request("GET", f"/api/jobs/{job['id']}/log")
    log = tmp_path / "fault.bdf.csv"
    log.write_bytes(csv)
    rows = bdflog.read_log(log)
    first = int((rows["Fault Flags / 1"] > 0).argmax())
    assert rows["Fault Flags / 1"][first] and first == len(rows["Fault Flags / 1"]) - 1
    shown = card(page, cids[3]).locator("dd.elapsed").inner_text()
    assert shown == hms(rows["Test Time / s"][first])  # the faulting record itself, pushed

    # A job queued from the channel page's form starts, and its plots fill.
    protocol = tmp_path / "cycles.json"
    protocol.write_text(json.dumps(library("smoke", cycle_count=40)))
    page.goto(f"{api.url}/channel/{cids[0]}")
    page.wait_for_function("document.getElementById('link').textContent === 'live'")
    page.fill("form#queue input[name=cell_name]", "LTO-Q1")
    page.set_input_files("form#queue input[name=protocol_upload]", str(protocol))
    page.fill("form#queue input[name=mass_mg]", "2")
    page.select_option("form#queue select[name=model_file]", "lto-li-coin")
    page.click("form#queue button[type=submit]")
    page.wait_for_function("document.getElementById('said').textContent.includes('queued')")
    wait_shown(page, lab, "#card.running", cids[0])
    page.wait_for_function("Number(document.body.dataset.points) >= 20", timeout=120_000)
    queued = [j for j in api.get(f"/api/jobs?channel={cids[0]}")]
    assert len(queued) == 1 and queued[0]["state"] == "running" and queued[0]["cell_name"] == "LTO-Q1"
    assert queued[0]["has_model"] and queued[0]["mass_mg"] == 2.0
    assert page.locator("td.job-state").first.inner_text() == "running"
    # Its pause button pauses it on the board.
    page.click("#pause")
    wait_for(lambda: api.get(f"/api/jobs/{queued[0]['id']}")["state"], "the pause from the page",
             until="paused".__eq__)
    wait_shown(page, lab, "#card.paused", cids[0], 30_000)

    # Screenshots: a channel with cycles done (capacity and CE plots), then the grid.
    page.goto(f"{api.url}/channel/{cids[1]}")
    page.wait_for_function("Number(document.body.dataset.cycles) >= 3", timeout=120_000)
    page.wait_for_timeout(300)  # one animation frame for the plots to draw
    # The board's estimates of the fresh LTO cell (its plant is the preset): capacity
    # and R_ct on the card, and a point per cycle in the capacity and resistance plots.
    check_estimates(page.locator("#card"))
    assert int(page.evaluate("document.body.dataset.estimates")) >= 3
    shot(page, "lab-channel.png", tmp_path)
    page.goto(api.url + "/")
    page.wait_for_function(f"document.body.dataset.loaded === '{len(cids)}'")
    page.wait_for_timeout(300)
    check_estimates(card(page, cids[1]))  # compactly on the grid card too
    shot(page, "lab-grid.png", tmp_path)
    assert page.errors == []
