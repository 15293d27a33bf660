"""The tracker node from outside Rust: rclpy drives its lifecycle, feeds it
detections stamped as a camera would, plays the state manager's
RegisterObject server and a belt encoder, and reads its tracks, belt speed,
markers and alerts. Time comes from the stamps, so the frames go out as fast
as the node takes them."""

import uuid

import pytest
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import Marker, MarkerArray
from cncpick_msgs.msg import Alert, Assignment, BeltSpeed, Detection, DetectionArray, ObjectEvent, ObjectState, TrackArray
from cncpick_msgs.srv import RegisterObject

from conftest import REPO, bin_path, spin_until
from test_lifecycle import Client

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
SPEED_MPS = 0.2
FPS = 30.0
T0_S = 1000.0


def stamp_of(t_s):
    from builtin_interfaces.msg import Time

    ns = round(t_s * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds(t):
    return t.sec + t.nanosec * 1e-9


class Cell:
    """A fake camera side (detections, encoder) and a fake state manager."""

    def __init__(self, node, executor, serve_register=True):
        self.node, self.executor = node, executor
        self.detections = node.create_publisher(DetectionArray, "/cell/detections", RELIABLE)
        self.encoder = node.create_publisher(BeltSpeed, "/cell/belt/encoder", RELIABLE)
        self.tracks, self.speeds, self.markers, self.alerts = [], [], [], []
        self.subscriptions = [
            node.create_subscription(TrackArray, "/cell/tracks", self.tracks.append, RELIABLE),
            node.create_subscription(BeltSpeed, "/cell/belt/speed", self.speeds.append, RELIABLE),
            node.create_subscription(MarkerArray, "/cell/markers", self.markers.append, 10),
            node.create_subscription(Alert, "/cell/alerts", self.alerts.append, RELIABLE),
        ]
        self.registrations = []
        self.server = None
        if serve_register:
            self.serve()
        self.seq = 0

    def serve(self):
        self.server = self.node.create_service(
            RegisterObject, "/cell/state_manager/register_object", self.register
        )

    def register(self, req, resp):
        self.registrations.append(req)
        resp.accepted = True
        resp.created = True
        resp.object.object_id = req.object_id
        return resp

    def frame(self, t_s, objects):
        """objects: (x, y, class_id) of what the camera sees at t_s."""
        msg = DetectionArray()
        msg.header.stamp = stamp_of(t_s)
        msg.header.frame_id = "belt"
        msg.frame_seq = self.seq
        for i, (x, y, cls) in enumerate(objects):
            d = Detection()
            d.object_id.uuid = list(uuid.uuid5(uuid.NAMESPACE_OID, f"{self.seq}/{i}").bytes)
            d.vision_id = f"vision_{round(t_s * 1000)}_{int(y / 0.15)}_{i}"
            d.position.x, d.position.y = x, y
            d.size_x_m = d.size_y_m = 0.05
            d.lane = int(y / 0.15)
            d.class_id = cls
            d.confidence = 0.9
            msg.detections.append(d)
        self.seq += 1
        self.detections.publish(msg)

    def run(self, frames, objects_at, ahead=20):
        """Sends a frame per stamp, at most `ahead` frames beyond the
        TrackArrays heard back (the node's queue holds 100), and waits for
        the last one's TrackArray."""
        for k, t in enumerate(frames):
            assert spin_until(self.executor, lambda: len(self.tracks) >= k - ahead, 10), f"no tracks for frame {k - ahead}"
            self.frame(t, objects_at(t))
        return self.wait_tracks_at(frames[-1])

    def sync(self, t_s=T0_S - 10.0):
        """Sends an empty frame stamped t_s until its TrackArray comes back:
        then the node's subscription is matched (a repeat is harmless: with
        no tracks yet, an empty frame at the same stamp changes nothing)."""

        def answered():
            self.frame(t_s, [])
            self.seq -= 1
            return self.wait_tracks_at(t_s, 0.5)

        assert spin_until(self.executor, answered, 20), "the tracker never answered a frame"
        self.tracks.clear()

    def wait_tracks_at(self, t_s, timeout_s=10):
        return spin_until(
            self.executor, lambda: any(abs(seconds(a.header.stamp) - t_s) < 1e-6 for a in self.tracks), timeout_s
        )


def belt(t_s, arrivals, view=(0.2, 1.48)):
    """Objects arriving at x = view start at their times, riding at SPEED_MPS."""
    out = []
    for t_in, y, cls in arrivals:
        x = view[0] + 0.04 + SPEED_MPS * (t_s - t_in)
        if t_s >= t_in and x <= view[1] - 0.04:
            out.append((x, y, cls))
    return out


@pytest.fixture
def tracker(spawn, rclpy_node, tmp_path):
    def start(*params, serve_register=True):
        node, executor = rclpy_node
        f = tmp_path / "tracker.yaml"
        lines = "".join(f"    {p}\n" for p in params)
        f.write_text(f"/cell/tracker:\n  ros__parameters:\n{lines}" if params else "{}\n")
        proc = spawn([bin_path("tracker"), "--ros-args", "--params-file", f])
        cell = Cell(node, executor, serve_register)
        life = Client(node, executor, "/cell/tracker")
        assert life.change_state("configure"), "".join(proc.stderr)
        assert life.change_state("activate"), "".join(proc.stderr)
        # Nothing is latched: every route must be matched before the first frame goes out.
        assert spin_until(
            executor,
            lambda: cell.detections.get_subscription_count() > 0
            and cell.encoder.get_subscription_count() > 0
            and all(s.get_publisher_count() > 0 for s in cell.subscriptions),
            30,
        ), "".join(proc.stderr)
        return cell, life, proc

    return start


def test_objects_are_tracked_registered_once_and_shown_with_the_belt_speed(tracker):
    cell, life, proc = tracker()
    # Two lanes; in lane 1 two objects side by side (same time, y 0.17 and 0.26).
    arrivals = [(T0_S + 0.5 * k, 0.075, "red_box") for k in range(6)]
    arrivals += [(T0_S + 0.2, 0.17, "green_disc"), (T0_S + 0.2, 0.26, "green_disc")]
    frames = [T0_S + k / FPS for k in range(int(5 * FPS))]
    assert cell.run(frames, lambda t: belt(t, arrivals)), "".join(proc.stderr)
    assert spin_until(cell.executor, lambda: len(cell.registrations) >= len(arrivals), 10)

    # Every object registered exactly once, by the tracker, with its ids.
    ids = [bytes(r.object_id.uuid) for r in cell.registrations]
    assert len(ids) == len(set(ids)) == len(arrivals)
    assert {r.actor for r in cell.registrations} == {"tracker"}
    assert all(r.vision_id.startswith("vision_") and r.request_id for r in cell.registrations)

    # The last TrackArray: every object, confirmed, at the frame's stamp, where it truly is.
    last = next(a for a in cell.tracks if abs(seconds(a.header.stamp) - frames[-1]) < 1e-6)
    assert last.header.frame_id == "belt"
    truth = belt(frames[-1], arrivals)
    assert len(last.tracks) == len(truth)
    for tr in last.tracks:
        assert tr.status == tr.STATUS_CONFIRMED and tr.visible
        nearest = min(truth, key=lambda o: (o[0] - tr.position.x) ** 2 + (o[1] - tr.position.y) ** 2)
        assert abs(nearest[0] - tr.position.x) < 0.002 and abs(nearest[1] - tr.position.y) < 0.002
        assert abs(tr.velocity.x - SPEED_MPS) < 0.01
        assert tr.class_id == nearest[2]
        assert bytes(tr.object_id.uuid) in ids
    assert abs(last.belt_speed_mps - SPEED_MPS) < 0.002

    # belt/speed: measured by vision, stamped with the frames.
    assert spin_until(cell.executor, lambda: any(seconds(s.header.stamp) >= frames[-1] - 1e-6 for s in cell.speeds), 10)
    s = [s for s in cell.speeds if seconds(s.header.stamp) >= frames[-1] - 1e-6][-1]
    assert s.source == BeltSpeed.SOURCE_VISION and abs(s.speed_mps - SPEED_MPS) < 0.002 and not s.stopped
    assert 0 < s.stddev_mps < 0.01

    # Markers: cleared, then the CNC windows, and a box, an id and an arrow per track.
    # The markers of the last frame (earlier arrays show fewer tracks).
    at_last = lambda m: len(m.markers) > 1 and all(seconds(k.header.stamp) >= frames[-1] - 1e-6 for k in m.markers[1:])
    assert spin_until(cell.executor, lambda: any(at_last(m) for m in cell.markers), 10), [
        seconds(m.markers[-1].header.stamp) for m in cell.markers if m.markers
    ][-3:]
    m = [m for m in cell.markers if at_last(m)][-1]
    assert m.markers[0].action == Marker.DELETEALL
    by_ns = {}
    for k in m.markers[1:]:
        assert k.header.frame_id == "belt"
        by_ns.setdefault(k.ns, []).append(k)
    assert {k.type for k in by_ns["objects"]} == {Marker.CUBE}
    assert len(by_ns["objects"]) == len(by_ns["ids"]) == len(by_ns["velocity"]) == len(truth)
    assert {k.text for k in by_ns["ids"]} == {tr.vision_id for tr in last.tracks}
    assert [k.text for k in by_ns["cnc_windows"] if k.type == Marker.TEXT_VIEW_FACING] == ["cnc_1", "cnc_2"]

    # The shipped rviz config shows exactly these markers, in their frame.
    rviz = yaml.safe_load((REPO / "rviz" / "cell.rviz").read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == "belt"
    [display] = [d for d in rviz["Displays"] if d["Class"] == "rviz_default_plugins/MarkerArray"]
    assert display["Topic"]["Value"] == "/cell/markers" and display["Enabled"]
    assert set(display["Namespaces"]) >= set(by_ns) and all(display["Namespaces"].values())


def test_an_encoder_takes_precedence_while_fresh(tracker):
    cell, life, proc = tracker("encoder_timeout_s: 0.5")
    arrivals = [(T0_S + 0.3 * k, 0.075, "red_box") for k in range(5)]
    frames = [T0_S + k / FPS for k in range(int(3 * FPS))]
    assert cell.run(frames, lambda t: belt(t, arrivals))
    enc = BeltSpeed(speed_mps=0.25, stddev_mps=0.0001, source=BeltSpeed.SOURCE_ENCODER)
    enc.header.stamp = stamp_of(frames[-1])
    cell.encoder.publish(enc)
    t = frames[-1] + 1 / FPS
    # Keep sending frames (within the reading's 0.5 s) until the node has taken it.
    def encoder_heard():
        nonlocal t
        cell.frame(t, belt(t, arrivals))
        t += 0.001
        return spin_until(cell.executor, lambda: any(s.source == BeltSpeed.SOURCE_ENCODER for s in cell.speeds), 0.5)

    assert spin_until(cell.executor, encoder_heard, 20), "the encoder never took over"
    s = [s for s in cell.speeds if s.source == BeltSpeed.SOURCE_ENCODER][-1]
    assert s.speed_mps == 0.25 and s.stddev_mps == pytest.approx(0.0001)
    # A reading is stale 0.5 s after its stamp: vision takes over again.
    t_late = frames[-1] + 1.0
    cell.frame(t_late, belt(t_late, arrivals))
    assert cell.wait_tracks_at(t_late)
    assert spin_until(
        cell.executor,
        lambda: any(abs(seconds(s.header.stamp) - t_late) < 1e-6 and s.source == BeltSpeed.SOURCE_VISION for s in cell.speeds),
        10,
    )


def test_an_object_that_vanishes_on_a_stopped_belt_is_reported_lost_with_its_trace_id(tracker):
    cell, life, proc = tracker("trigger_watch_for_object_s: 2.0", "initial_speed_mps: 0.0")
    # A stopped belt: two objects lie still in view; one is taken away by hand at 1 s.
    still = [(0.5, 0.075, "red_box"), (0.9, 0.225, "red_box")]
    frames = [T0_S + k / FPS for k in range(int(4 * FPS))]
    assert cell.run(frames, lambda t: still if t < T0_S + 1.0 else still[:1]), "".join(proc.stderr)
    assert spin_until(cell.executor, lambda: len(cell.registrations) == 2, 10)
    assert spin_until(cell.executor, lambda: cell.alerts, 10), "no alert"
    gone = next(r for r in cell.registrations if abs(r.position.x - 0.9) < 0.01)
    [a] = cell.alerts
    assert a.name == "object_lost" and a.severity == Alert.WARNING and a.node == "tracker"
    assert bytes(a.object_id.uuid) == bytes(gone.object_id.uuid)
    assert str(uuid.UUID(bytes=bytes(gone.object_id.uuid))) in a.message
    # Lost no earlier than 2 s after it was last seen (by the stamps).
    statuses = [
        (seconds(arr.header.stamp), tr.status)
        for arr in cell.tracks
        for tr in arr.tracks
        if bytes(tr.object_id.uuid) == bytes(gone.object_id.uuid)
    ]
    first_lost = min(t for t, st in statuses if st == 2)
    assert T0_S + 1.0 + 2.0 - 1 / FPS <= first_lost <= T0_S + 1.0 + 2.0 + 1 / FPS


def test_a_late_state_manager_still_gets_every_registration(tracker):
    cell, life, proc = tracker(
        "register_timeout_s: 0.2", "register_attempts: 1", "register_requeue_s: 0.3", serve_register=False
    )
    arrivals = [(T0_S + 0.4 * k, 0.075, "red_box") for k in range(3)]
    frames = [T0_S + k / FPS for k in range(int(3 * FPS))]
    assert cell.run(frames, lambda t: belt(t, arrivals))
    # No server: each registration fails, bounded, and is raised with the object's trace id.
    assert spin_until(cell.executor, lambda: len({bytes(a.object_id.uuid) for a in cell.alerts}) == 3, 20)
    assert {a.name for a in cell.alerts} == {"registration_failed"}
    assert all(str(uuid.UUID(bytes=bytes(a.object_id.uuid))) in a.message for a in cell.alerts)
    cell.serve()
    assert spin_until(cell.executor, lambda: len({bytes(r.object_id.uuid) for r in cell.registrations}) == 3, 30)
    assert {bytes(r.object_id.uuid) for r in cell.registrations} == {bytes(a.object_id.uuid) for a in cell.alerts}


@pytest.mark.parametrize(
    "yaml_value, key, problem",
    [
        ("view_x_min_m: 2.0", "view_x_min_m", "is not below view_x_max_m"),
        ("cnc_x_max_m: [2.6]", "cnc_ids", "cnc_x_max_m"),
        ("gate_chi2: -1.0", "gate_chi2", "outside its range"),
    ],
)
def test_bad_params_are_refused_naming_the_file_and_key(tmp_path, spawn, yaml_value, key, problem):
    f = tmp_path / "tracker.yaml"
    f.write_text(f"/cell/tracker:\n  ros__parameters:\n    {yaml_value}\n")
    p = spawn([bin_path("tracker"), "--ros-args", "--params-file", f])
    assert p.wait(30) == 1
    err = "".join(p.stderr)
    assert str(f) in err and key in err and problem in err, err


def test_markers_colour_objects_by_their_state_and_show_pick_points(tracker, rclpy_node):
    node, executor = rclpy_node
    cell, life, proc = tracker()
    events = node.create_publisher(
        ObjectEvent, "/cell/objects/events",
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    assignments = node.create_publisher(Assignment, "/cell/assignments", RELIABLE)
    arrivals = [(T0_S, 0.075, "red_box"), (T0_S, 0.375, "red_box")]
    frames = [T0_S + k / FPS for k in range(30)]
    assert cell.run(frames, lambda t: belt(t, arrivals))
    assert spin_until(executor, lambda: len(cell.registrations) == 2, 10)
    picked = next(r for r in cell.registrations if r.position.y < 0.2)
    e = ObjectEvent(seq=1, object_id=picked.object_id, actor="scheduler")
    e.to_state.id = ObjectState.ASSIGNED
    events.publish(e)
    a = Assignment(object_id=picked.object_id, cnc_id="1")
    a.predicted_pick_position.x, a.predicted_pick_position.y = 2.3, 0.075
    assert spin_until(executor, lambda: assignments.get_subscription_count() > 0, 30)
    assignments.publish(a)

    def shown():
        for m in reversed(cell.markers):
            boxes = {(k.ns, k.id): k for k in m.markers}
            pick = [k for k in m.markers if k.ns == "pick_points"]
            mine = [k for k in m.markers if k.ns == "objects" and abs(k.pose.position.y - 0.075) < 0.01]
            if pick and mine and mine[0].color.b > 0.9:
                return m
        return None

    assert spin_until(executor, shown, 10), "the assignment never showed"
    m = shown()
    mine = next(k for k in m.markers if k.ns == "objects" and abs(k.pose.position.y - 0.075) < 0.01)
    other = next(k for k in m.markers if k.ns == "objects" and abs(k.pose.position.y - 0.375) < 0.01)
    # ASSIGNED is blue; an object the state manager has not moved on stays yellow.
    assert (round(mine.color.r, 1), round(mine.color.g, 1), round(mine.color.b, 1)) == (0.2, 0.4, 1.0)
    assert (round(other.color.r, 1), round(other.color.g, 1), round(other.color.b, 1)) == (1.0, 1.0, 0.2)
    [pick] = [k for k in m.markers if k.ns == "pick_points"]
    assert (pick.type, pick.id, pick.pose.position.x) == (Marker.SPHERE, mine.id, 2.3)


def test_the_same_detections_give_the_same_tracks_after_a_cleanup(tracker):
    cell, life, proc = tracker()
    arrivals = [(T0_S + 0.25 * k, 0.075 + 0.15 * (k % 4), "red_box") for k in range(8)]
    frames = [T0_S + k / FPS for k in range(90)]
    runs = []
    for _ in range(2):
        cell.sync()
        cell.seq = 0
        assert cell.run(frames, lambda t: belt(t, arrivals))
        runs.append([(a.header.stamp.sec, a.header.stamp.nanosec, a.belt_speed_mps, [
            (bytes(t.object_id.uuid), t.vision_id, t.position.x, t.position.y, t.velocity.x, tuple(t.covariance_xy), t.status, t.hits)
            for t in a.tracks
        ]) for a in cell.tracks if seconds(a.header.stamp) >= T0_S - 1e-6])
        # Back to Unconfigured and up again: the tracker starts afresh.
        for label in ("deactivate", "cleanup", "configure", "activate"):
            assert life.change_state(label), label
    assert len(runs[0]) == len(frames)
    assert runs[0] == runs[1]
