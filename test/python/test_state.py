"""The state manager from outside Rust: rclpy drives its lifecycle, calls its
services and hears objects/events. Every state service is idempotent (a
request id, or a read), so requests may be sent again when an answer is lost."""

import os
import signal
import sqlite3
import time
import uuid

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_services_default
from cncpick_msgs.msg import Alert, ObjectEvent, ObjectState, PickOutcome, PickResult
from cncpick_msgs.srv import BeginEpoch, GetObject, ListObjects, ObjectHistory, RegisterObject, TransitionObject

from conftest import bin_path, call_service, spin_until
from test_lifecycle import Client

NS = "/cell/state_manager"
EVENTS_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
DETECTED, ASSIGNED, PICKING, PICKED = ObjectState.DETECTED, ObjectState.ASSIGNED, ObjectState.PICKING, ObjectState.PICKED
MISSED, BYPASSED = ObjectState.MISSED, ObjectState.BYPASSED
# Many requests in flight at once: the client keeps them all, as the server does.
BUSY_QOS = QoSProfile(depth=1000, reliability=qos_profile_services_default.reliability, durability=qos_profile_services_default.durability)


class State:
    def __init__(self, node, executor):
        self.executor = executor
        self.clients = {
            t: node.create_client(t, f"{NS}/{name}", qos_profile=BUSY_QOS)
            for t, name in [
                (RegisterObject, "register_object"),
                (TransitionObject, "transition_object"),
                (GetObject, "get_object"),
                (ListObjects, "list_objects"),
                (ObjectHistory, "object_history"),
                (BeginEpoch, "begin_epoch"),
            ]
        }
        self.events = []
        self.sub = node.create_subscription(ObjectEvent, "/cell/objects/events", self.events.append, EVENTS_QOS)

    def call(self, t, **fields):
        req = t.Request()
        for k, v in fields.items():
            setattr(req, k, v)
        return call_service(self.executor, self.clients[t], req, resend_after_s=2.0)

    def register_request(self, oid, x=0.5, velocity_x_mps=0.0, seen_s_ago=0.0):
        req = dict(request_id=f"reg-{oid.hex}", vision_id=f"vision_1_0_{oid.hex[:4]}", lane=0, class_id="red_box", actor="tracker")
        r = RegisterObject.Request(**req)
        r.object_id.uuid = list(oid.bytes)
        r.position.x, r.position.y = x, 0.075
        r.velocity_x_mps = velocity_x_mps
        if seen_s_ago:
            ns = time.time_ns() - int(seen_s_ago * 1e9)
            r.detected_at.sec, r.detected_at.nanosec = ns // 10**9, ns % 10**9
        return r

    def register(self, oid, **seen):
        r = self.register_request(oid, **seen)
        return call_service(self.executor, self.clients[RegisterObject], r, resend_after_s=2.0)

    def transition_request(self, rid, oid, frm, to, cnc="1", epoch=1):
        r = TransitionObject.Request(request_id=rid, actor="scheduler", cnc_id=cnc, epoch=epoch, reason="test")
        r.object_id.uuid = list(oid.bytes)
        r.expected_state.id, r.new_state.id = frm, to
        return r

    def transition(self, rid, oid, frm, to, cnc="1", epoch=1):
        r = self.transition_request(rid, oid, frm, to, cnc, epoch)
        return call_service(self.executor, self.clients[TransitionObject], r, resend_after_s=2.0)

    def history(self, oid):
        h = ObjectHistory.Request()
        h.object_id.uuid = list(oid.bytes)
        return call_service(self.executor, self.clients[ObjectHistory], h, resend_after_s=2.0)

    def all_at_once(self, t, requests, answered, timeout_s=60):
        """Sends every request at once; spins until `answered` of them are."""
        futures = [self.clients[t].call_async(r) for r in requests]
        assert spin_until(self.executor, lambda: sum(f.done() for f in futures) >= answered, timeout_s), sum(
            f.done() for f in futures
        )
        return futures

    def get(self, oid):
        r = GetObject.Request()
        r.object_id.uuid = list(oid.bytes)
        return call_service(self.executor, self.clients[GetObject], r, resend_after_s=2.0)


@pytest.fixture
def start(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node

    def run(db, name="state_manager", **params):
        # The services are named state_manager/... whatever the node's name;
        # a restarted node gets a name of its own, so its lifecycle services
        # are not confused with the killed one's, which DDS forgets only later.
        args = [bin_path("state_manager"), "--ros-args", "-r", f"__node:={name}", "-p", f"database_path:={db}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        proc = spawn(args)
        life = Client(node, executor, f"/cell/{name}")
        return proc, life

    return run


def test_services_compare_and_set_fence_epochs_and_publish_gap_free_events(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    proc, life = start(tmp_path / "state.sqlite")
    assert life.change_state("configure"), "".join(proc.stderr)
    assert life.change_state("activate"), "".join(proc.stderr)
    s = State(node, executor)
    a, b = uuid.uuid4(), uuid.uuid4()
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 1
    for oid in (a, b):
        r = s.register(oid)
        assert r.accepted and r.created and r.object.state.id == DETECTED, r.error
    again = s.register(a)
    assert again.accepted and not again.created

    ok = s.transition("t1", a, DETECTED, ASSIGNED)
    assert ok.accepted and ok.seq == 3 and ok.current_state.id == ASSIGNED, ok.error
    # The same request id again: the first answer, not a second transition.
    repeat = s.transition("t1", a, DETECTED, ASSIGNED)
    assert (repeat.accepted, repeat.seq) == (True, 3)
    # Compare-and-set: refused with the current state.
    cas = s.transition("t2", a, DETECTED, ASSIGNED, cnc="1")
    assert not cas.accepted and cas.current_state.id == ASSIGNED and "expected DETECTED" in cas.error
    # Illegal and unknown requests are refused with a clear reason. (A UUID of
    # the wrong length cannot be sent from rclpy; state::node's unit test has it.)
    illegal = s.transition("t3", b, DETECTED, PICKED)
    assert not illegal.accepted and "not a transition" in illegal.error and illegal.current_state.id == DETECTED
    ghost = uuid.uuid4()
    unknown = s.transition("t5", ghost, DETECTED, ASSIGNED)
    assert not unknown.accepted and str(ghost) in unknown.error and "no such object" in unknown.error
    # CNC 1 is re-activated: in the same step, what its old epoch held is
    # settled (the assignment revoked, published like any transition), and
    # the old epoch is fenced off.
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 2
    stale = s.transition("t6", a, DETECTED, ASSIGNED, epoch=1)
    assert not stale.accepted and "stale epoch 1" in stale.error and stale.current_state.id == DETECTED
    fresh = s.transition("t7", a, DETECTED, ASSIGNED, epoch=2)
    assert fresh.accepted and fresh.seq == 5

    got = s.get(a)
    assert got.found and (got.object.state.id, got.object.cnc_id, got.object.epoch, got.object.last_seq) == (ASSIGNED, "1", 2, 5)
    listed = s.call(ListObjects, states=[DETECTED], lane=-1)
    assert [bytes(o.object_id.uuid) for o in listed.objects] == [b.bytes] and not listed.truncated
    h = ObjectHistory.Request()
    h.object_id.uuid = list(a.bytes)
    hist = call_service(executor, s.clients[ObjectHistory], h, resend_after_s=2.0)
    assert [(e.from_state.id, e.to_state.id) for e in hist.transitions] == [
        (0, DETECTED), (DETECTED, ASSIGNED), (ASSIGNED, DETECTED), (DETECTED, ASSIGNED)
    ]
    revoked = hist.transitions[2]
    assert (revoked.actor, revoked.epoch) == ("state_manager", 1) and revoked.reason.startswith("recovery: "), revoked

    # objects/events: every accepted transition once, gap-free, transient_local.
    assert spin_until(executor, lambda: len(s.events) >= 5, 10), [e.seq for e in s.events]
    assert [e.seq for e in s.events] == [1, 2, 3, 4, 5]
    assert [(bytes(e.object_id.uuid), e.to_state.id) for e in s.events] == [
        (a.bytes, DETECTED), (b.bytes, DETECTED), (a.bytes, ASSIGNED), (a.bytes, DETECTED), (a.bytes, ASSIGNED)
    ]


def test_after_kill_9_under_load_every_acknowledged_transition_is_there(sweep_stale_shm, start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    db = tmp_path / "state.sqlite"
    proc, life = start(db)
    assert life.change_state("configure") and life.change_state("activate")
    s = State(node, executor)
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 1
    objects = [uuid.uuid4() for _ in range(300)]
    regs = s.all_at_once(RegisterObject, [s.register_request(o) for o in objects], len(objects))
    assert all(f.result().accepted for f in regs)
    # Under load: every object's assignment sent at once; the process dies
    # when a third of them are answered, with the rest in flight.
    asks = [s.transition_request(f"a{k}", o, DETECTED, ASSIGNED) for k, o in enumerate(objects)]
    futures = s.all_at_once(TransitionObject, asks, len(objects) // 3)
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait(10)
    acked = {o for o, f in zip(objects, futures) if f.done() and f.result().accepted}
    assert len(acked) >= len(objects) // 3

    proc2, life2 = start(db, name="state_manager_restarted")
    assert life2.change_state("configure"), "".join(proc2.stderr)
    assert life2.change_state("activate"), "".join(proc2.stderr)
    seqs, applied = [], 0
    for oid in objects:
        got = s.get(oid)
        assert got.found, oid
        trail = s.history(oid).transitions
        moves = [(e.from_state.id, e.to_state.id, e.actor) for e in trail]
        # Each assignment is wholly there (record, audit row, seq) or not at
        # all; every acknowledged one is there. Recovery then revoked it (the
        # object, seen at 0.5 m and not moving, is still reachable).
        if (DETECTED, ASSIGNED, "scheduler") in moves:
            applied += 1
            assert moves == [(0, DETECTED, "tracker"), (DETECTED, ASSIGNED, "scheduler"), (ASSIGNED, DETECTED, "state_manager")]
            assert "recovery" in trail[-1].reason
        else:
            assert oid not in acked, f"{oid}: acknowledged, then lost"
            assert moves == [(0, DETECTED, "tracker")]
        assert got.object.state.id == DETECTED and got.object.cnc_id == ""
        assert trail[-1].seq == got.object.last_seq
        seqs += [e.seq for e in trail]
    assert applied >= len(acked)
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "the trail has a gap"
    # Recovery raised the epoch: CNC 1's old one is fenced off.
    stale = s.transition("stale", objects[0], DETECTED, ASSIGNED, epoch=1)
    assert not stale.accepted and "stale epoch 1" in stale.error and "its epoch is 2" in stale.error
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 3
    r = s.transition("after", objects[0], DETECTED, ASSIGNED, epoch=3)
    assert r.accepted and r.seq == len(seqs) + 1


def wal_commits(db):
    """The commits in a database's WAL since it last started over: the frames
    that end a transaction (a nonzero page count after the commit) whose
    salts are the header's."""
    try:
        b = open(f"{db}-wal", "rb").read()
    except FileNotFoundError:
        return 0
    if len(b) < 32:
        return 0
    page, salts, n = int.from_bytes(b[8:12], "big"), b[16:24], 0
    for off in range(32, len(b) - (24 + page) + 1, 24 + page):
        if b[off + 8 : off + 16] != salts:
            break
        n += b[off + 4 : off + 8] != bytes(4)
    return n


def test_writes_queued_behind_a_stalled_commit_share_the_next_one(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    db = tmp_path / "state.sqlite"
    proc, life = start(db, heartbeat_period_s=0.05)
    assert life.change_state("configure") and life.change_state("activate"), "".join(proc.stderr)
    s = State(node, executor)
    counters = {}
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: counters.update({kv.key: kv.value for st in m.status if st.name == NS for kv in st.values}),
        10,
    )
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 1
    objects = [uuid.uuid4() for _ in range(40)]
    regs = s.all_at_once(RegisterObject, [s.register_request(o) for o in objects], len(objects))
    assert all(f.result().accepted for f in regs)
    # Another writer holds the database, as a slow disk would hold a commit:
    # the store's next commit waits for it (its busy timeout is 10 s).
    other = sqlite3.connect(db, isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    before = wal_commits(db)
    asks = [s.transition_request(f"a{k}", o, DETECTED, ASSIGNED) for k, o in enumerate(objects)]
    futures = [s.clients[TransitionObject].call_async(r) for r in asks]
    # Every request handed to the store thread (the epoch, the registrations
    # and these), which waits on the first, and the rest in its queue.
    received = 1 + 2 * len(objects)
    assert spin_until(executor, lambda: int(counters.get("requests_received", 0)) >= received, 8), counters
    assert int(counters["queue_depth"]) >= 1, counters
    assert not any(f.done() for f in futures), "answered before the commit could be made"
    other.execute("COMMIT")
    other.close()
    assert spin_until(executor, lambda: all(f.done() for f in futures), 20), sum(f.done() for f in futures)
    answers = [f.result() for f in futures]
    assert all(a.accepted for a in answers), [a.error for a in answers if not a.accepted]
    # One commit for the one taken first, one for all queued behind it.
    commits = wal_commits(db) - before
    assert 1 <= commits <= 2, f"{len(objects)} transitions took {commits} commits"
    # Each its own seq, gap-free after the registrations', and durable.
    assert sorted(a.seq for a in answers) == list(range(len(objects) + 1, 2 * len(objects) + 1))
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM objects WHERE state = ?", (ASSIGNED,)).fetchone()
    assert rows == (len(objects),)
    assert spin_until(executor, lambda: int(counters.get("queue_depth", -1)) == 0, 5), counters


def test_reactivation_reconciles_open_objects_and_a_late_joiner_hears_it(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    proc, life = start(tmp_path / "state.sqlite", reach_end_x_m=3.4)
    assert life.change_state("configure") and life.change_state("activate"), "".join(proc.stderr)
    s = State(node, executor)
    assert s.call(BeginEpoch, cnc_id="1", actor="cnc_1").epoch == 1
    gone, near, held = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # Seen 20 s ago at 0.5 m, moving 0.2 m/s: now at 4.5 m, past 3.4 m.
    assert s.register(gone, velocity_x_mps=0.2, seen_s_ago=20).accepted
    assert s.register(near, velocity_x_mps=0.2).accepted
    assert s.register(held, velocity_x_mps=0.2).accepted
    for k, oid in enumerate((gone, near, held)):
        assert s.transition(f"a{k}", oid, DETECTED, ASSIGNED).accepted
    assert s.transition("p", held, ASSIGNED, PICKING).accepted
    assert life.change_state("deactivate") and life.change_state("activate"), "".join(proc.stderr)

    # The pick in flight is left PICKING for its CNC's next epoch.
    assert [s.get(o).object.state.id for o in (gone, near, held)] == [MISSED, DETECTED, PICKING]
    late = State(node, executor)
    want = [(ASSIGNED, DETECTED), (DETECTED, MISSED), (ASSIGNED, DETECTED)]
    recovery = lambda: [(e.from_state.id, e.to_state.id) for e in late.events if e.actor == "state_manager"]
    assert spin_until(executor, lambda: len(recovery()) >= 3, 10), late.events
    assert recovery() == want
    assert [e.seq for e in late.events] == list(range(1, 11))
    # The CNC's old epoch cannot record its pick's outcome...
    stale = s.transition("late-pick", held, PICKING, PICKED, epoch=1)
    assert not stale.accepted and stale.current_state.id == PICKING and "stale epoch 1" in stale.error
    # ...so its next epoch reports it. A malformed report refuses the call,
    # naming the field, and begins no epoch.
    picked = PickResult(cnc_id="1", epoch=1, outcome=PickOutcome(value=PickOutcome.PICKED))
    picked.object_id.uuid = list(held.bytes)
    bad = PickResult(cnc_id="1", epoch=1, outcome=PickOutcome(value=9))
    bad.object_id.uuid = list(held.bytes)
    refused = s.call(BeginEpoch, cnc_id="1", actor="cnc_1", unrecorded=[picked, bad])
    assert not refused.accepted and "unrecorded[1].outcome 9 is not a PickOutcome" in refused.error, refused.error
    begun = s.call(BeginEpoch, cnc_id="1", actor="cnc_1", unrecorded=[picked])
    assert begun.accepted and begun.epoch == 3, begun.error
    assert s.get(held).object.state.id == PICKED
    assert spin_until(executor, lambda: len(late.events) >= 11, 10), late.events
    e = late.events[10]
    assert (e.seq, e.from_state.id, e.to_state.id, e.actor, e.epoch) == (11, PICKING, PICKED, "cnc_1", 1)
    assert "reported with epoch 3" in e.reason, e.reason


def test_a_full_disk_refuses_new_work_raises_an_alert_and_keeps_the_rest(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    db = tmp_path / "state.sqlite"
    proc, life = start(db, size_limit_mb=0.08)
    alerts = []
    node.create_subscription(Alert, "/cell/alerts", alerts.append, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    assert life.change_state("configure") and life.change_state("activate"), "".join(proc.stderr)
    s = State(node, executor)
    accepted = []
    for _ in range(2000):
        oid = uuid.uuid4()
        r = s.register(oid)
        if not r.accepted:
            break
        accepted.append(oid)
    assert not r.accepted and "disk is full" in r.error and str(db) in r.error, r.error
    assert len(accepted) > 20
    # Four more refused: still one alert for the whole episode.
    for _ in range(4):
        assert not s.register(uuid.uuid4()).accepted
    assert spin_until(executor, lambda: any(a.name == "state_disk_full" for a in alerts), 10), alerts
    alert = next(a for a in alerts if a.name == "state_disk_full")
    assert alert.severity == Alert.CRITICAL and "disk is full" in alert.message
    # Reads go on.
    assert s.get(accepted[0]).found
    # Room again (the cap lifted by a parameter update): the next write is
    # taken, and raises state_disk_ok with the count. One publisher, reliable:
    # every alert raised before it has arrived before it.
    lift = SetParameters.Request(
        parameters=[Parameter(name="size_limit_mb", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0))]
    )
    setter = node.create_client(SetParameters, "/cell/state_manager/set_parameters")
    assert call_service(executor, setter, lift, resend_after_s=2.0).results[0].successful
    roomy = uuid.uuid4()
    assert s.register(roomy).accepted
    accepted.append(roomy)
    assert spin_until(executor, lambda: any(a.name == "state_disk_ok" for a in alerts), 10), alerts
    disk = [(a.name, a.severity) for a in alerts if a.name.startswith("state_disk_")]
    assert disk == [("state_disk_full", Alert.CRITICAL), ("state_disk_ok", Alert.INFO)], disk
    ok = next(a for a in alerts if a.name == "state_disk_ok")
    assert "5 were refused" in ok.message, ok.message
    # Everything accepted is there after a restart with room.
    assert life.change_state("deactivate") and life.change_state("cleanup")
    assert proc.terminate() == 0
    proc2, life2 = start(db, name="state_manager_roomy")
    assert life2.change_state("configure") and life2.change_state("activate"), "".join(proc2.stderr)
    listed = s.call(ListObjects, lane=-1, limit=5000)
    assert {bytes(o.object_id.uuid) for o in listed.objects} == {o.bytes for o in accepted}


def test_snapshots_are_taken_and_old_terminal_objects_pruned_while_serving(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    db = tmp_path / "state.sqlite"
    snaps = tmp_path / "snaps"
    # Retention of 2 s (in days), checked every 0.2 s; a snapshot every second.
    proc, life = start(db, snapshot_dir=snaps, snapshot_period_s=1.0, snapshot_keep=2, retention_days=2.0 / 86400, prune_period_s=0.2)
    assert life.change_state("configure") and life.change_state("activate"), "".join(proc.stderr)
    s = State(node, executor)
    objects = [uuid.uuid4() for _ in range(6)]
    for k, oid in enumerate(objects):
        assert s.register(oid).accepted
        if k < 4:
            assert s.transition(f"b{k}", oid, DETECTED, BYPASSED, cnc="").accepted
    assert spin_until(executor, lambda: not any(s.get(o).found for o in objects[:4]), 20), "never pruned"
    assert all(s.get(o).found for o in objects[4:])
    assert spin_until(executor, lambda: len(list(snaps.glob("state-seq*.sqlite"))) >= 1, 20), "no snapshot"
    files = sorted(snaps.glob("state-seq*.sqlite"))
    assert len(files) <= 2
    with sqlite3.connect(f"file:{files[-1]}?mode=ro", uri=True) as c:
        assert c.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert c.execute("SELECT count(*) FROM objects").fetchone()[0] >= 2


def test_a_corrupt_database_is_refused_and_left_untouched(start, rclpy_node, tmp_path):
    node, executor = rclpy_node
    db = tmp_path / "state.sqlite"
    garbage = b"SQLite format 3\x00" + bytes(range(256)) * 64
    db.write_bytes(garbage)
    proc, life = start(db)
    assert not life.change_state("configure")
    assert db.read_bytes() == garbage
    said = lambda: str(db) in "".join(proc.stderr) and "left untouched" in "".join(proc.stderr)
    assert spin_until(executor, said, 10), "".join(proc.stderr)
