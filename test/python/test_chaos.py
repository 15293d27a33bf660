"""The chaos smoke run (`cncpick chaos`, about two minutes): the simulated
cell in one process per node, with a fault of each of nine kinds injected
at seeded random times. The run's own verdict (chaos.json, report.json) is
checked, and the promise is checked again independently, straight from the
state manager's SQLite file: every object that left the cell reached
exactly one terminal state, nothing entered PICKING twice, and nothing was
left open past its timeouts."""

import json
import re
import sqlite3

from conftest import bin_path

# One of each family: node kills, serial and vacuum faults, the camera, the
# lossy DDS link, a full database, a refused parameter update.
KINDS = [
    "kill_state_manager",
    "kill_tracker",
    "kill_cnc",
    "grbl_alarm",
    "disconnect",
    "frame_drop",
    "dds_delay",
    "disk_full",
    "bad_param",
]
TERMINAL = {4, 5, 6, 7}  # PICKED, DROPPED, MISSED, BYPASSED
PICKING = 3


# sweep_stale_shm first, so it runs after the run's processes are gone: the
# nodes the run kills with SIGKILL cannot remove their Fast DDS files.
def test_a_chaos_run_loses_nothing_picks_nothing_twice_and_recovers_from_every_fault(sweep_stale_shm, spawn, tmp_path):
    out = tmp_path / "chaos"
    args = [bin_path("cncpick"), "chaos", "--out", out, "--no-progress", "--metrics-bind", ""]
    args += ["--duration-s", "100", "--warmup-s", "5", "--drain-s", "35", "--seed", "3"]
    args += ["--faults-per-min", "9", "--kinds", ",".join(KINDS)]
    proc = spawn(args)
    code = proc.wait(420)
    stdout, stderr = "".join(list(proc.lines.queue)), "".join(proc.stderr)
    assert (out / "chaos.json").exists(), stderr[-3000:]
    chaos = json.loads((out / "chaos.json").read_text())
    report = json.loads((out / "report.json").read_text())
    faults = chaos["faults"]

    # Every planned fault was injected (the simulator's, by its own truth),
    # each kind once, and the cell was whole again after each.
    assert sorted(f["kind"] for f in faults) == sorted(KINDS), faults
    assert all(f["injected_s"] is not None for f in faults), faults
    assert chaos["unrecovered"] == 0, [f for f in faults if f["recovery_s"] is None]
    # The bad update was refused with a reason; the full disk was refused work.
    bad = next(f for f in faults if f["kind"] == "bad_param")
    assert "refused (" in bad["note"], bad
    disk = next(f for f in faults if f["kind"] == "disk_full")
    assert re.fullmatch(r"cap: accepted; work refused after [0-9.]+ s; lifted: accepted", disk["note"]), disk
    assert any(a["name"] == "state_disk_full" for a in report["alerts"]), report["alerts"]
    # A killed node's process was restarted by the manager.
    for kind, node in (("kill_state_manager", "state_manager"), ("kill_tracker", "tracker")):
        assert report["restarts"].get(node, 0) >= 1, (kind, report["restarts"])

    # The run's verdict.
    assert chaos["lost"] == [] and chaos["truth_objects_checked"] > 20, chaos
    assert chaos["terminal_twice"] == 0 and chaos["out_of_limits"] == []
    assert chaos["bad_params_accepted"] == 0
    assert report["picked_twice"] == 0 and report["stuck"] == 0 and report["event_gaps"] == 0
    assert report["truth"]["binned_twice"] == 0
    assert report["picked"] > 0, "nothing picked"
    assert code == 0, stdout[-2000:] + stderr[-3000:]

    # Independently, from the database.
    db = sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True)
    end_ns = db.execute("SELECT max(at_ns) FROM transitions").fetchone()[0]
    rows = db.execute("SELECT object_id, to_state FROM transitions ORDER BY seq").fetchall()
    ended, picking, twice = {}, {}, []
    for obj, to in rows:
        if obj in ended:
            twice.append(obj.hex())
        if to in TERMINAL:
            ended[obj] = True
        if to == PICKING:
            picking[obj] = picking.get(obj, 0) + 1
    assert twice == [], f"objects that changed after a terminal state: {twice}"
    assert all(n == 1 for n in picking.values()), "an object entered PICKING twice"
    open_old = db.execute(
        "SELECT vision_id, state, (? - updated_at_ns) / 1e9 FROM objects "
        "WHERE state NOT IN (4, 5, 6, 7) AND updated_at_ns < ? - 30e9",
        (end_ns, end_ns),
    ).fetchall()
    assert open_old == [], f"open and unchanged for over 30 s: {open_old}"
    # And the database agrees with the events the run heard.
    assert db.execute("SELECT count(*) FROM objects").fetchone()[0] == report["objects"]
