"""The main job (`cncpick run`, README command 1) and the manager, from
outside Rust: the whole simulated cell runs, rclpy listens to the manager's
alerts, CellMetrics and the nodes' heartbeats, the Prometheus endpoint is
scraped during the run, and node processes are killed with SIGKILL."""

import json
import os
import pathlib
import re
import signal
import time
import urllib.request

from rclpy.qos import QoSProfile, ReliabilityPolicy
from cncpick_msgs.msg import Alert, CellMetrics, CncStatus, Heartbeat, PickOutcome, PickResult

from std_srvs.srv import Trigger

from conftest import bin_path, call_service, shm_files_open_by, spin_until

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
INACTIVE, ACTIVE = 2, 3
# The seed's metric names (6.1), as the manager exposes them (cncpick_ prefix).
SEED_METRICS = [
    "objects_per_minute",
    "pickup_success_rate",
    "average_cycle_time",
    "system_utilization",
    "node_message_rate",
    "node_processing_latency",
    "node_error_rate",
    "node_queue_depth",
    "lane_throughput",
    "lane_miss_rate",
    "lane_congestion_score",
]


def wait_for_file(path, proc, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc.proc.poll() is not None:
            break
        time.sleep(0.1)
    return path.exists()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def samples(text):
    """{(name, labels): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+)(\{[^}]*\})? (\S+)", line)
        assert m, f"not a sample line: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def log_tails(out, names, lines=25):
    """The last `lines` lines above DEBUG of each node's log in the run's
    folder: what a failed assertion shows, since CI keeps no files."""
    parts = []
    for name in names:
        path = out / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
        kept = [l[:300] for l in text if " DEBUG " not in l][-lines:]
        parts.append(f"--- {name}.log\n" + "\n".join(kept))
    return "\n".join(parts)


def run_args(out, *extra):
    return [bin_path("cncpick"), "run", "--out", out, "--no-progress", "--metrics-bind", "127.0.0.1:0", *extra]


def test_the_main_job_runs_the_simulated_cell_for_60_s_and_reports(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node
    metrics, alerts = [], []
    node.create_subscription(CellMetrics, "/cell/metrics", metrics.append, 10)
    node.create_subscription(Alert, "/cell/alerts", alerts.append, RELIABLE)
    out = tmp_path / "run"
    proc = spawn(run_args(out, "--duration-s", "60"))
    assert wait_for_file(out / "up", proc, 120), "the cell never came up:\n" + "".join(proc.stderr)
    port = int((out / "metrics_port").read_text())

    # Scrape /metrics mid-run, once something has been picked.
    def picked_some():
        s = samples(scrape(port))
        return s.get(("cncpick_window_picked", ""), 0) > 0

    assert spin_until(executor, picked_some, 60), "nothing picked in 60 s"
    text = scrape(port)
    s = samples(text)
    for name in SEED_METRICS:
        assert re.search(rf"^cncpick_{name}(_seconds)?(\{{| )", text, re.M), f"no {name} in /metrics"
    for rate in ("cncpick_pickup_success_rate", "cncpick_miss_rate", "cncpick_system_utilization"):
        assert 0.0 <= s[(rate, "")] <= 1.0, (rate, s[(rate, "")])
    assert 0.0 < s[("cncpick_pickup_success_rate", "")]
    # The simulated cell's arrival rate is 60/min (params/sim.yaml); over a
    # partial window the rate is lower, never above a few times it.
    assert 0.0 < s[("cncpick_objects_per_minute", "")] < 300.0
    assert 0.5 < s[("cncpick_average_cycle_time_seconds", "")] < 30.0
    assert s[("cncpick_node_message_rate", '{node="detector"}')] > 1.0
    assert s[("cncpick_node_message_rate", '{node="tracker"}')] > 1.0
    # Every node reports its latest processing time (the state manager's is a
    # SQLite transaction; the scheduler's a decision) and the scheduler its
    # held picks.
    assert 0.0 < s[("cncpick_node_processing_latency_seconds", '{node="state_manager"}')] < 1.0
    assert 0.0 < s[("cncpick_node_processing_latency_seconds", '{node="detector"}')] < 1.0
    assert 0 <= s[("cncpick_node_queue_depth", '{node="scheduler"}')] <= 2 * 3  # 2 CNCs, queue_max 3
    assert {l for (n, l) in s if n == "cncpick_lane_congestion_score"} == {f'{{lane="{k}"}}' for k in range(4)}

    code = proc.wait(120)
    assert code == 0, "".join(proc.stderr)
    stdout = "".join(proc.lines.queue)
    for word in ("picked", "missed", "success rate", "latency", "per CNC", "per lane"):
        assert word in stdout, f"the report has no {word!r}:\n{stdout}"
    report = json.loads((out / "report.json").read_text())
    assert 58.0 <= report["duration_s"] <= 65.0
    assert report["picked"] > 0
    assert report["picked_twice"] == 0 and report["stuck"] == 0 and report["event_gaps"] == 0
    assert report["truth"]["binned_twice"] == 0
    # What the state manager says was picked, the simulated world binned.
    assert report["truth"]["binned"] >= report["picked"] - 2
    assert 0.0 < report["success_rate"] <= 1.0
    assert report["exposure_to_registered_ms"]["n"] > 0
    assert 0.0 < report["exposure_to_registered_ms"]["p50"] < 5000.0
    assert report["cycle_time_s"]["n"] > 0
    assert {c["cnc_id"] for c in report["cncs"]} == {"1", "2"}
    assert [l["lane"] for l in report["lanes"]] == [0, 1, 2, 3]
    assert sum(l["objects"] for l in report["lanes"]) == report["objects"]
    assert "<svg" in (out / "plot.html").read_text()
    # CellMetrics reached rclpy, with every CNC and lane.
    spin_until(executor, lambda: False, 0.2)
    assert metrics, "no CellMetrics on /cell/metrics"
    last = metrics[-1]
    assert {c.cnc_id for c in last.cncs} == {"1", "2"} and len(last.lanes) == 4


def test_the_main_job_exits_non_zero_when_the_cell_cannot_come_up(spawn, tmp_path):
    out = tmp_path / "run"
    proc = spawn(run_args(out, "--duration-s", "5", "-p", "state_manager.database_path:=/proc/no/such/dir/state.sqlite"))
    code = proc.wait(120)
    assert code == 3, (code, "".join(proc.stderr))
    err = "".join(proc.stderr)
    assert "did not come up" in err and "state_manager" in err, err


def test_bad_params_are_refused_before_anything_starts_naming_the_source_and_key(spawn, tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (pathlib.Path(__file__).resolve().parents[2] / "params" / "sim.yaml").read_text()
    bad.write_text(text.replace("queue_max: 3", "queue_max: 99"))
    proc = spawn([bin_path("cncpick"), "check-config", "--params-file", bad])
    assert proc.wait(30) == 2
    err = "".join(proc.stderr)
    assert str(bad) in err and "queue_max" in err, err
    # An environment override is checked, and blamed, the same way.
    proc = spawn([bin_path("cncpick"), "check-config"], env={"CNCPICK_PARAM_CNC_2__ORIGIN_X_M": "3.0"})
    assert proc.wait(30) == 2
    err = "".join(proc.stderr)
    assert "cnc_2.origin" in err and "simulated cell" in err, err
    proc = spawn([bin_path("cncpick"), "run", "--out", tmp_path / "r", "-p", "tracker.lanes:=0"])
    assert proc.wait(30) == 2
    assert "command line (-p)" in "".join(proc.stderr) and "lanes" in "".join(proc.stderr)


def test_a_killed_node_process_is_detected_restarted_and_the_cell_recovers(
    sweep_stale_shm, spawn, rclpy_node, tmp_path
):
    """Kills every node of the cell in turn (SIGKILL), with the cell running
    in one process per node. (The `sim` node is the simulated world, not
    part of the cell: killing it would end the world.)"""
    node, executor = rclpy_node
    alerts, beats, picks = [], [], []
    node.create_subscription(Alert, "/cell/alerts", lambda a: alerts.append((time.monotonic(), a)), RELIABLE)
    node.create_subscription(Heartbeat, "/cell/heartbeat", lambda b: beats.append((time.monotonic(), b)), 100)
    node.create_subscription(PickResult, "/cell/pick_results", lambda p: picks.append((time.monotonic(), p)), RELIABLE)
    epochs_1 = []
    node.create_subscription(CncStatus, "/cell/cnc_1/status", lambda s: epochs_1.append((time.monotonic(), s.epoch)), 10)
    out = tmp_path / "run"
    proc = spawn(run_args(out, "--duration-s", "600", "--processes"))
    assert wait_for_file(out / "up", proc, 120), "the cell never came up:\n" + "".join(proc.stderr)
    # Only the processes camera frames pass between use Fast DDS shared
    # memory. The supervisor, whose manager restarts the others, and the
    # control nodes talk UDP only, so that no process killed mid-message can
    # stop them (params/fastdds-control.xml).
    holding = {name: bool(shm_files_open_by(pid)) for name, pid in json.loads((out / "pids.json").read_text()).items()}
    holding["supervisor"] = bool(shm_files_open_by(proc.proc.pid))
    assert holding == {name: name in ("sim", "camera", "detector") for name in holding}, holding
    agent_heartbeat_s = 3.0  # params/sim.yaml
    kills = []
    victims = ("cnc_2", "tracker", "state_manager", "scheduler", "detector", "camera", "cnc_1")
    for victim in victims:
        spin_until(executor, lambda: False, 6.0)
        pid = json.loads((out / "pids.json").read_text())[victim]
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        kills.append(t_kill)

        def exited_alert():
            return any(
                t >= t_kill and a.name == "node_exited" and a.node == f"/cell/{victim}" and a.severity == Alert.CRITICAL
                for t, a in alerts
            )

        assert spin_until(executor, exited_alert, agent_heartbeat_s), (
            f"no node_exited alert for {victim} within agent_heartbeat_s ({agent_heartbeat_s} s)"
        )

        def back():
            recovered = any(t > t_kill and a.name == "node_recovered" and a.node == f"/cell/{victim}" for t, a in alerts)
            beating = any(t > t_kill and b.node == f"/cell/{victim}" and b.state == ACTIVE for t, b in beats)
            return recovered and beating

        assert spin_until(executor, back, 40), (
            f"{victim} not back to active: "
            + str([(a.name, a.node, a.message) for _, a in alerts])
            + "\n"
            + log_tails(out, (victim,))
            + "\nthe supervisor's log (the manager's lines):\n"
            + "".join(proc.stderr[-60:])
        )
        assert json.loads((out / "pids.json").read_text())[victim] != pid
        if victim == "state_manager":
            # Its recovery raised every CNC's epoch: the manager re-activates
            # both for a new one, or they could never pick again.
            def fenced():
                return {a.node for t, a in alerts if t > t_kill and a.name == "epoch_fenced"} == {
                    "/cell/cnc_1",
                    "/cell/cnc_2",
                }

            assert spin_until(executor, fenced, 5), "the CNCs were not re-activated for a new epoch: " + str(
                [(a.name, a.node) for t, a in alerts if t > t_kill]
            )

    # The scheduler's report of a CNC still Active in an epoch the state
    # manager refuses (its re-activation missed), as another node would hear
    # it: the manager re-activates that CNC, which begins a new epoch. Sent
    # again each second until heard (a new publisher's first messages can go
    # out before it has matched the manager).
    spin_until(executor, lambda: bool(epochs_1), 5)
    epoch_before = epochs_1[-1][1]
    stale = node.create_publisher(Alert, "/cell/alerts", RELIABLE)
    t_stale = time.monotonic()

    def refenced():
        return any(t > t_stale and a.name == "epoch_fenced" and a.node == "/cell/cnc_1" for t, a in alerts)

    for _ in range(10):
        stale.publish(Alert(severity=Alert.ERROR, name="cnc_epoch_stale", node="cnc_1", message="from the test"))
        if spin_until(executor, refenced, 1.0):
            break
    assert refenced(), "no epoch_fenced for cnc_1 after cnc_epoch_stale: " + str(
        [(a.name, a.node) for t, a in alerts if t > t_stale]
    )
    assert spin_until(executor, lambda: epochs_1[-1][1] > epoch_before, 10), (
        f"cnc_1 still in epoch {epochs_1[-1][1]} (was {epoch_before})"
    )

    # Full capacity again: both CNCs pick after the last restart.
    def both_pick():
        return {p.cnc_id for t, p in picks if t > kills[-1] and p.outcome.value == PickOutcome.PICKED} == {"1", "2"}

    assert spin_until(executor, both_pick, 60), (
        "not both CNCs picked after the last restart; picks since: "
        + str(sorted({p.cnc_id for t, p in picks if t > kills[-1] and p.outcome.value == PickOutcome.PICKED}))
        + "\n"
        + log_tails(out, ("scheduler", "cnc_1", "cnc_2", "state_manager"))
    )

    # The manager's services: pause deactivates the scheduler, startup brings it back.
    for service, state in (("pause", INACTIVE), ("startup", ACTIVE)):
        client = node.create_client(Trigger, f"/cell/manager/{service}")
        answer = call_service(executor, client, Trigger.Request(), timeout_s=30)
        assert answer.success, answer.message
        t_call = time.monotonic()
        assert spin_until(
            executor,
            lambda: any(t > t_call and b.node == "/cell/scheduler" and b.state == state for t, b in beats),
            5,
        ), f"the scheduler is not in state {state} after {service}"
    # Ctrl-C ends the run early, with its report.
    proc.proc.send_signal(signal.SIGINT)
    code = proc.wait(120)
    assert code == 0, "".join(proc.stderr)
    report = json.loads((out / "report.json").read_text())
    # Nothing lost or picked twice, by the state manager and by the sim's truth.
    assert report["picked_twice"] == 0 and report["stuck"] == 0
    assert report["truth"]["binned_twice"] == 0
    assert report["restarts"] == {v: 1 for v in victims}
    assert report["picked"] > 0
