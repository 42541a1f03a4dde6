"""The lab service (issue 13), driven only through its HTTP API.

Eight simulated boards (LTO/Li and graphite/Li cells) run eight different protocols at
once; the service is killed with SIGKILL mid-run and started again on the same data
directory. Every log, fetched through the API, must then hold every record and event of
its run exactly once (no gap, no duplicate), with time, cycle and step counters
continuous, and its charge counters must match what the simulated cell's own truth says
went in and out. One job is paused before the kill and resumed after the restart; one
ends in a fault, which holds its channel.

The boards run paced at SPEED virtual seconds per real second with a 4 s tick (a few
hours of cell time in about 25 s), so the kill falls mid-run for the long jobs and the
test adds well under a minute to the suite.
"""

import copy
import json
import os
import signal
import socket

import numpy as np
import pytest

from cellbench import bdflog
from cellbench.lab import client as labclient
from cellbench.paths import MODELS, PROTOCOLS
from cellbench.sim import read_truth
from polling import wait_for

pytestmark = pytest.mark.hil  # the firmware on simulated boards (tests/conftest.py)

SPEED = 600.0     # virtual s per real s
TICK_MS = 4000    # within the board's 5 s watchdog (a longer tick is fed too late)
TOKEN = "test-token-0123456789"
FINAL = ("done", "fault", "stopped", "failed", "cancelled")
LTO_SAFETY = {"max_voltage_V": 3.0, "min_voltage_V": 0.8, "delay_s": 20}
GR_SAFETY = {"max_voltage_V": 3.0, "min_voltage_V": 0.0, "delay_s": 20}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cycling(capacity_mAh, safety, rate_C, cycles, v_lo, v_hi, cv_until_C=None, rest_s=60):
    """A discharge-first CC (or CC-CV) cycling protocol of a half cell."""
    charge = [{"step": "constant_current", "rate_C": rate_C, "until_voltage_V": v_hi,
               "until_time_s": 4 * 3600 / rate_C}]
    if cv_until_C:
        charge.append({"step": "constant_voltage", "voltage_V": v_hi, "until_rate_C": cv_until_C,
                       "until_time_s": 1800})
    return {"sample": {"name": f"{rate_C}C x{cycles}", "capacity_mAh": capacity_mAh},
            "record": {"time_s": 60, "voltage_V": 0.01}, "safety": dict(safety),
            "method": [{"step": "tag", "tag": "cycle"},
                       {"step": "constant_current", "rate_C": -rate_C, "until_voltage_V": v_lo,
                        "until_time_s": 4 * 3600 / rate_C},
                       {"step": "open_circuit_voltage", "until_time_s": rest_s}, *charge,
                       {"step": "open_circuit_voltage", "until_time_s": rest_s},
                       {"step": "loop", "loop_to": "cycle", "cycle_count": cycles}]}


def library(name, **loop):
    doc = json.loads((PROTOCOLS / f"{name}.json").read_text())
    for step in doc["method"]:
        if step["step"] == "loop":
            step.update(loop)
    return doc


def pulses(n):
    """GITT-like: n C/2 discharge pulses of 10 min, each followed by 20 min at rest."""
    return {"sample": {"name": f"{n} pulses", "capacity_mAh": 0.35},
            "record": {"time_s": 60, "voltage_V": 0.005}, "safety": dict(LTO_SAFETY),
            "method": [{"step": "tag", "tag": "p"},
                       {"step": "constant_current", "rate_C": -0.5, "until_time_s": 600,
                        "until_voltage_V": 1.0},
                       {"step": "open_circuit_voltage", "until_time_s": 1200},
                       {"step": "loop", "loop_to": "p", "cycle_count": n}]}


def faulting():
    """A 1C discharge whose safety floor (1.45 V) lies above where the LTO plateau ends:
    UNDER_VOLTAGE trips mid-run."""
    return {"sample": {"name": "trips UNDER_VOLTAGE", "capacity_mAh": 0.35},
            "record": {"time_s": 60, "voltage_V": 0.01},
            "safety": {"max_voltage_V": 3.0, "min_voltage_V": 1.45, "delay_s": 20},
            "method": [{"step": "constant_current", "rate_C": -1, "until_time_s": 7200}]}


# channel cell, job request: eight different protocols
JOBS = [
    ("lto-li-coin", {"protocol": library("lto-100-cycles-1C", cycle_count=2),  # 2 cycles: 1 closed
                     "model_file": "lto-li-coin", "mass_mg": 2.0}),
    ("gr-li-coin", {"protocol": cycling(0.398, GR_SAFETY, 2, 2, 0.05, 1.5)}),
    ("lto-li-coin", {"protocol": cycling(0.35, LTO_SAFETY, 2, 3, 1.0, 2.5)}),
    ("gr-li-coin", {"protocol": cycling(0.398, GR_SAFETY, 1, 1, 0.05, 1.2, cv_until_C=0.2)}),
    ("lto-li-coin", {"protocol": pulses(5)}),
    ("lto-li-coin", {"protocol": library("smoke", cycle_count=12), "mass_mg": 2.0}),
    ("lto-li-coin", {"protocol": cycling(0.35, LTO_SAFETY, 2, 2, 1.0, 2.5, rest_s=300)}),
    ("lto-li-coin", {"protocol": faulting()}),
]
PAUSED = 6    # index of the job paused across the restart
FAULTED = 7   # index of the job that trips its safety limit


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lab on a fresh data directory: (data dir, port, {"proc", "api"}); the test may
    replace the process (kill and restart); everything is stopped at the end."""
    data = tmp_path_factory.mktemp("lab")
    port = free_port()
    proc, api = labclient.start(data, port, SPEED, token=TOKEN, log=data / "service.log")
    state = {"proc": proc, "api": api}
    yield data, port, state
    state["proc"].kill()
    state["proc"].wait()
    labclient.stop_boards(data)


def jobs_by_id(api):
    return {j["id"]: j for j in api.get("/api/jobs")}


def channel(api, cid):
    return api.get(f"/api/channels/{cid}")


def log_via_api(api, job_id, folder):
    """The job's log and sidecar, downloaded through the API into ``folder``."""
    status, csv = api.request("GET", f"/api/jobs/{job_id}/log")
    assert status == 200
    path = folder / f"job{job_id}.bdf.csv"
    path.write_bytes(csv)
    status, meta = api.request("GET", f"/api/jobs/{job_id}/sidecar")
    assert status == 200
    bdflog.sidecar_path(path).write_text(json.dumps(meta))
    return path, meta


def check_log(path, meta, truth_path, end_kind):
    """The whole run in the log exactly once, counters continuous, charge as the truth."""
    data = bdflog.read_log(path)
    rec_seq = data["Record Seq / 1"].astype(int).tolist()
    events = [e for e in meta["events"] if isinstance(e.get("seq"), int) and e["kind"] != "INTERRUPTED"]
    ev_seq = [e["seq"] for e in events]
    assert events[0]["kind"] == "START" and events[-1]["kind"] == end_kind
    assert np.all(np.diff(rec_seq) > 0)
    # no gap, no duplicate: every seq of the run, records and events, exactly once
    assert sorted(rec_seq + ev_seq) == list(range(meta["start_seq"], ev_seq[-1] + 1))
    assert np.all(np.diff(data["Test Time / s"]) > 0)
    assert set(np.diff(data["Cycle Count / 1"]).tolist()) <= {0, 1}
    assert set(np.diff(data["Step Count / 1"]).tolist()) <= {0, 1}
    for col in ("Charging Capacity / Ah", "Discharging Capacity / Ah"):
        assert np.all(np.diff(data[col]) >= 0)
    truth = read_truth(truth_path)
    for col, key in (("Charging Capacity / Ah", "q_chg_Ah"), ("Discharging Capacity / Ah", "q_dch_Ah")):
        moved = truth[key][-1] - truth[key][0]
        assert data[col][-1] == pytest.approx(moved, rel=0.01, abs=2e-7), col
    return data


def check_estimates(api, cid, log_path, truth_path):
    """The preset tracks capacity and R_ct: the log has them, and the channel's series
    (its per-cycle rows read back from the log, as after a service restart) show, at each
    cycle's end, the log's values in mAh and ohm, close to the plant's own."""
    from cellbench.sim.mpy import simcell

    log = bdflog.read_log(log_path)
    model = json.loads((MODELS / "lto-li-coin.json").read_text())
    states = simcell.read_states(str(truth_path) + simcell.STATE_SUFFIX, len(model["rc"]))
    cap_truth_mAh = states["cap_Ah"][-1] * 1e3
    r_truth = model["rc"][0]["r_ohm"] * states["r_mult"][-1] * states["rct_mult"][-1]
    rows = api.get(f"/api/channels/{cid}/series")["cycles"]
    assert rows
    for row in rows:
        last = np.flatnonzero(log["Cycle Count / 1"] == row["cycle"])[-1]
        assert row["cap_mAh"] == pytest.approx(log["Capacity Estimate / Ah"][last] * 1e3, rel=1e-9)
        assert row["r_ohm"] == pytest.approx(log["Charge Transfer Resistance Estimate / ohm"][last], rel=1e-9)
        assert row["cap_std_mAh"] > 0 and row["r_std_ohm"] > 0
        # two cycles into a fresh cell: the estimates are the plant's to within the prior
        assert row["cap_mAh"] == pytest.approx(cap_truth_mAh, rel=0.05)
        assert row["r_ohm"] == pytest.approx(r_truth, rel=0.3)


def wait_all_final(api, ids, what):
    return wait_for(lambda: jobs_by_id(api), what,
                    until=lambda js: all(js[i]["state"] in FINAL for i in ids))


def test_eight_boards_survive_a_killed_service(lab, tmp_path):
    data, port, state = lab
    api = state["api"]
    ids = []
    for k, (cell, request) in enumerate(JOBS):
        ch = api.post("/api/channels", {"cell": cell, "seed": k})
        job = api.post(f"/api/channels/{ch['id']}/jobs",
                       dict(request, cell_name=f"{cell} #{k + 1}", tick_ms=TICK_MS))
        assert job["state"] == "queued" and job["channel_id"] == ch["id"]
        ids.append(job["id"])
    cids = [f"sim-{k + 1}" for k in range(len(JOBS))]

    # All running and logging; pause one; then kill the service mid-run.
    wait_for(lambda: [channel(api, c)["live"].get("seq") for c in cids], "a record on every channel",
             until=lambda seqs: all(s is not None for s in seqs))
    assert api.post(f"/api/jobs/{ids[PAUSED]}/pause")["id"] == ids[PAUSED]
    wait_for(lambda: jobs_by_id(api)[ids[PAUSED]]["state"], "the pause", until="paused".__eq__)
    wait_for(lambda: jobs_by_id(api)[ids[FAULTED]]["state"], "the fault", until="fault".__eq__)
    faulted = channel(api, cids[FAULTED])
    assert faulted["held"] and "UNDER_VOLTAGE" in faulted["job"]["stop_reason"]
    before = jobs_by_id(api)
    running = [i for i in ids if before[i]["state"] == "running"]
    assert len(running) >= 4, before  # the long jobs are mid-run when the service dies
    state["proc"].send_signal(signal.SIGKILL)
    state["proc"].wait()

    # The boards carry on without it (their truth grows); then the service comes back.
    truths = {c: data / "boards" / c / "sim" / "truth.csv" for c in cids}
    t_before = {c: read_truth(truths[c])["t_s"][-1] for c in cids}
    wait_for(lambda: [read_truth(truths[c])["t_s"][-1] - t_before[c] for c in cids],
             "every board to run on for 5 min of cell time without the service",
             until=lambda dts: min(dts) > 300)
    state["proc"], api = labclient.start(data, port, SPEED, token=TOKEN, log=data / "service.log")
    state["api"] = api
    history = api.get("/api/history?limit=200")
    reattached = {e["job_id"] for e in history if e["kind"] == "reattach"}
    assert set(running) <= reattached  # the page's event list says what happened

    wait_for(lambda: [jobs_by_id(api)[i]["state"] for i in running], "the re-attached jobs to run",
             until=lambda states: all(s in FINAL + ("running",) for s in states))
    assert jobs_by_id(api)[ids[PAUSED]]["state"] == "paused"  # a restart resumes nothing paused
    api.post(f"/api/jobs/{ids[PAUSED]}/resume")
    wait_all_final(api, ids, "every job to end")

    jobs = jobs_by_id(api)
    for k, job_id in enumerate(ids):
        job = jobs[job_id]
        want = ("fault", "FAULT") if k == FAULTED else ("done", "END")
        assert job["state"] == want[0], job
        path, meta = log_via_api(api, job_id, tmp_path)
        check_log(path, meta, truths[cids[k]], want[1])
        kinds = [e["kind"] for e in meta["events"]]
        if job_id in running:
            assert "resume" in kinds  # the restarted service fetched what the board kept
        if k == PAUSED:
            assert "PAUSE" in kinds and "RESUME" in kinds
    # a job with a model logs the board's SoC; its channel shows capacity per cycle
    assert "SOC / 1" in bdflog.read_log(tmp_path / f"job{ids[0]}.bdf.csv")
    check_estimates(api, cids[0], tmp_path / f"job{ids[0]}.bdf.csv", truths[cids[0]])
    cycles = channel(api, cids[2])["cycles"]  # 3 cycles: the last closes no row
    assert [c["cycle"] for c in cycles] == [1, 2]
    series = api.get(f"/api/channels/{cids[2]}/series")
    assert [c["cycle"] for c in series["cycles"]] == [1, 2] and series["job"] == ids[2]
    # the data directory's layout: logs by cell and date
    for job_id in ids:
        log = (data / "logs").glob(f"*/*/*_job{job_id}_*.bdf.csv")
        assert len(list(log)) == 1


def test_bad_requests_change_nothing(lab):
    data, port, state = lab
    api = state["api"]
    ch = api.post("/api/channels", {"cell": "lto-li-coin"})
    cid = ch["id"]
    jobs_before = api.get("/api/jobs")

    def refused(body, status, field, raw=None, path=f"/api/channels/{cid}/jobs"):
        got, reply = api.request("POST", path, body, raw=raw)
        assert got == status, reply
        assert reply["field"] == field and reply["error"].startswith(field + ":"), reply

    bad = copy.deepcopy(JOBS[1][1]["protocol"])
    bad["method"][-1]["cycle_count"] = 0
    refused({"protocol": bad, "cell_name": "x"}, 422, "protocol.method[5].loop.cycle_count")
    window = library("smoke")
    window["method"][2]["until_voltage_V"] = 0.5  # below the protocol's own safety floor
    refused({"protocol": window, "cell_name": "x"}, 422, "protocol.method[2].constant_current.until_voltage_V")
    refused({"protocol_file": "smoke", "cell_name": "x", "rate": 1}, 422, "rate")
    refused({"protocol_file": "nope", "cell_name": "x"}, 422, "protocol_file")
    refused({"protocol_file": "smoke"}, 422, "cell_name")
    refused({"protocol_file": "smoke", "cell_name": "x", "mass_mg": -2}, 422, "mass_mg")
    refused({"protocol_file": "smoke", "cell_name": "x", "tick_ms": 10}, 422, "tick_ms")
    refused({"protocol_file": "smoke", "cell_name": "x", "model": {"capacity_Ah": -1}}, 422, "model.schema_version")
    refused(None, 400, "body", raw=b"{not json")
    refused({"cell": "no-such-cell"}, 422, "cell", path="/api/channels")
    assert api.request("POST", "/api/channels/sim-99/jobs", {})[0] == 404
    assert api.request("POST", "/api/jobs/999999/resume")[0] == 404
    done = [j for j in jobs_before if j["state"] == "done"]
    if done:  # after the first test: a finished job cannot be resumed
        assert api.request("POST", f"/api/jobs/{done[0]['id']}/resume")[0] == 409
    # without the token nothing that changes anything is done
    anonymous = labclient.LabClient(api.url)
    status, reply = anonymous.request("POST", f"/api/channels/{cid}/jobs",
                                      {"protocol_file": "smoke", "cell_name": "x"})
    assert status == 401 and reply["field"] == "token"
    assert anonymous.get("/api/channels")  # reading needs no token
    assert api.get("/api/jobs") == jobs_before
    assert channel(api, cid)["job"] is None and channel(api, cid)["queued"] == []


def test_openapi_schema_lists_every_route(lab):
    from aiohttp import web  # noqa: F401 (the server's library is installed)

    api = lab[2]["api"]
    spec = api.get("/api/openapi.json")
    assert spec["openapi"].startswith("3.")
    for path in ("/api/channels", "/api/channels/{cid}/jobs", "/api/jobs/{jid}/pause",
                 "/api/jobs/{jid}/log", "/api/events"):
        assert path in spec["paths"]
    request = spec["components"]["schemas"]["JobRequest"]
    assert request["additionalProperties"] is False and "protocol" in request["properties"]


def test_only_loopback_goes_without_a_token(tmp_path):
    from cellbench import cli
    from cellbench.commands.lab import is_local

    assert is_local("127.0.0.1") and is_local("::1") and is_local("localhost")
    assert not is_local("0.0.0.0") and not is_local("192.0.2.7")
    assert cli.main(["lab", "--data", str(tmp_path / "d"), "--port", "0"]) == 2
    assert not (tmp_path / "d").exists()


def test_usb_boards_are_found_by_identity():
    from types import SimpleNamespace as Port

    from cellbench.lab.boards import usb_boards

    ports = [Port(device="/dev/ttyACM1", vid=0x2E8A, pid=0x0005, serial_number="E6614C311B7A8B2F"),
             Port(device="/dev/ttyACM0", vid=0x2E8A, pid=0x0005, serial_number="E66138935F4B3A25"),
             Port(device="/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number="FT123"),
             Port(device="/dev/ttyS0", vid=None, pid=None, serial_number=None)]
    assert usb_boards(ports) == [
        {"id": "usb-E66138935F4B3A25", "port": "/dev/ttyACM0", "usb_serial": "E66138935F4B3A25"},
        {"id": "usb-E6614C311B7A8B2F", "port": "/dev/ttyACM1", "usb_serial": "E6614C311B7A8B2F"}]


def test_database_migrates_an_older_file(tmp_path):
    import sqlite3

    from cellbench.lab import db

    path = tmp_path / "lab.sqlite"
    old = sqlite3.connect(path)
    old.executescript(db.MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    old.execute("INSERT INTO channels (id, kind, created_unix_s) VALUES ('sim-1', 'sim', 0)")
    old.commit()
    old.close()
    lab_db = db.Database(path)
    assert lab_db.version == len(db.MIGRATIONS)
    assert [c["id"] for c in lab_db.channels()] == ["sim-1"]  # kept across the migration
    lab_db.set_setting("k", {"a": 1})
    assert lab_db.setting("k") == {"a": 1}
    lab_db.close()
    assert db.Database(path).version == len(db.MIGRATIONS)  # a second open changes nothing


def test_stop_holds_the_channel_and_a_queued_job_can_be_cancelled(lab, tmp_path):
    data, port, state = lab
    api = state["api"]
    cid = api.post("/api/channels", {"cell": "lto-li-coin", "seed": 11})["id"]
    request = {"protocol": cycling(0.35, LTO_SAFETY, 1, 3, 1.0, 2.5), "cell_name": "stopped",
               "tick_ms": TICK_MS}
    first = api.post(f"/api/channels/{cid}/jobs", request)
    second = api.post(f"/api/channels/{cid}/jobs", dict(request, cell_name="cancelled"))
    wait_for(lambda: channel(api, cid)["live"].get("seq"), "a record of the first job",
             until=lambda seq: seq is not None and seq > 5)
    api.post(f"/api/jobs/{first['id']}/stop")
    wait_for(lambda: api.get(f"/api/jobs/{first['id']}")["state"], "the stop", until="stopped".__eq__)
    ch = channel(api, cid)
    assert ch["held"] and ch["queued"] == [second["id"]]  # a stop holds the queue
    assert api.get(f"/api/jobs/{second['id']}")["state"] == "queued"
    api.post(f"/api/jobs/{second['id']}/stop")
    assert api.get(f"/api/jobs/{second['id']}")["state"] == "cancelled"
    path, meta = log_via_api(api, first["id"], tmp_path)
    check_log(path, meta, data / "boards" / cid / "sim" / "truth.csv", "STOP")
    assert meta["stop_reason"] == "interrupted"  # the session's word, as after Ctrl-C
    assert api.get(f"/api/jobs/{first['id']}")["stop_reason"] == "stopped by the user"


def test_a_board_reset_waits_for_the_user_then_recovers(lab, tmp_path):
    """The board's process killed mid-run stands for a reset (its relay boots it again):
    the job waits as interrupted, and resume continues it from the board's journal."""
    from cellbench.sim import detached

    data, port, state = lab
    api = state["api"]
    cid = api.post("/api/channels", {"cell": "lto-li-coin", "seed": 12})["id"]
    job = api.post(f"/api/channels/{cid}/jobs", {"protocol": cycling(0.35, LTO_SAFETY, 2, 1, 1.0, 2.5),
                                                 "cell_name": "reset", "tick_ms": TICK_MS})
    wait_for(lambda: channel(api, cid)["live"].get("seq"), "a few records",
             until=lambda seq: seq is not None and seq > 20)
    board_dir = data / "boards" / cid
    os.kill(detached.info(board_dir)["board_pid"], signal.SIGKILL)
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}")["state"], "the reset to be noticed",
             until="interrupted".__eq__)
    api.post(f"/api/jobs/{job['id']}/resume")
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}")["state"], "the recovered run to end",
             until=lambda s: s in FINAL)
    assert api.get(f"/api/jobs/{job['id']}")["state"] == "done"
    path, meta = log_via_api(api, job["id"], tmp_path)
    data_ = bdflog.read_log(path)
    kinds = [e["kind"] for e in meta["events"]]
    assert "INTERRUPTED" in kinds and "recover" in kinds and "seq_gap" in kinds
    assert np.all(np.diff(data_["Test Time / s"]) > 0)
    assert set(np.diff(data_["Cycle Count / 1"]).tolist()) <= {0, 1}
    for col in ("Charging Capacity / Ah", "Discharging Capacity / Ah"):
        assert np.all(np.diff(data_[col]) >= 0)


def test_a_job_whose_board_is_not_up_yet_waits_queued(tmp_path, monkeypatch):
    """A job that reaches a channel before its board answers (a simulated board still
    booting on a loaded machine, a USB board being re-plugged) stays queued and starts
    once the board is there; it is not failed as a run the lab lost. Meanwhile the
    channel's card says why the job waits (published as it changes, never blanked between
    two tries), and says nothing once there is nothing to wait for."""
    from cellbench.lab import channel as labchannel
    from cellbench.lab.service import Lab

    monkeypatch.setattr(labchannel.Channel, "start", lambda self: None)  # driven by hand
    lab = Lab(tmp_path / "lab", sim_speed=480.0, usb=False)
    ch = lab.add_sim_channel({"cell": "lto-li-coin"})
    monkeypatch.setattr(lab.boards, "ensure", lambda row: None)
    shown = []  # the errors of the channel's published states, in order
    monkeypatch.setattr(lab.hub, "publish", lambda m: shown.append(m["state"]["error"])
                        if m["type"] == "state" and m["channel"] == ch.id else None)

    def not_up(row):
        raise ConnectionRefusedError(111, "the board's socket is not listening yet")

    monkeypatch.setattr(lab.boards, "open", not_up)
    job = lab.queue_job(ch.id, {"protocol": library("smoke", cycle_count=1), "cell_name": "W1",
                                "tick_ms": TICK_MS})
    del shown[:]  # the queued job's own state
    causes = ["no detached simulated board"] * 2 + ["not listening yet"] * 2  # relay file, socket
    for k, cause in enumerate(causes):  # the thread tries again and again while the board is down
        if k == 2:  # booted far enough to say where its truth goes, not yet listening
            monkeypatch.setattr(lab.boards, "sim_meta", lambda row: {})
        with pytest.raises(labchannel._Retry):
            ch._turn()
        row = lab.db.job(job["id"])
        assert row["state"] == "queued" and row["started_unix_s"] is None, dict(row)
        said = shown[-1]
        assert said.startswith(f"job {job['id']} waits for the board: ") and cause in said, said
    assert len(shown) == 2 and all(shown), shown  # each cause once, no blank in between
    assert lab.channel(ch.id).request("stop", lab.db.job(job["id"])) is None  # cancelled
    ch._turn()  # nothing to wait for now
    assert shown[-1] == "" and ch.state()["error"] == ""
    lab.close()


def test_a_job_is_not_taken_before_its_files_are_stored(tmp_path):
    """queue_job adds the row before it stores the protocol (the job's id names its
    folder): a channel looking in between must not take it (and refuse it as unreadable)."""
    from cellbench.lab.db import Database

    db = Database(tmp_path / "lab.sqlite")
    db.add_channel("sim-1", "sim", board="sim")
    job_id = db.add_job("sim-1", "C1", None, "p", "", None, TICK_MS)
    assert db.next_queued("sim-1") is None
    db.set_job(job_id, protocol_path=str(tmp_path / "protocol.json"))
    assert db.next_queued("sim-1")["id"] == job_id
