"""The scheduler node from outside Rust. rclpy plays everything around it:
a CNC node `cnc_1` (its parameters, which the scheduler reads for the
CNC's model; its CncStatus; a PickObject action server), the state
manager (TransitionObject with compare-and-set, and objects/events), and
the tracker (a TrackArray with one confirmed object riding the belt).
The scheduler assigns the object (compare-and-set carrying the CNC's
epoch), publishes the Assignment, sends the goal with the epoch and the
object's trajectory; when cnc_1 falls silent it revokes the object."""

import time
import uuid

import pytest
from rclpy.action import ActionServer, GoalResponse
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from cncpick_msgs.action import PickObject
from cncpick_msgs.msg import Assignment, CncStatus, ObjectEvent, ObjectState, Track, TrackArray
from cncpick_msgs.srv import TransitionObject

from conftest import bin_path, spin_until
from test_lifecycle import Client
from test_tracker import seconds, stamp_of

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
EVENTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
DETECTED, ASSIGNED = 1, 2
EPOCH = 4

# cnc_1's parameters (the motion controller's defaults: src/motion/params.rs).
CNC_1 = {
    "heartbeat_period_s": 1.0,
    "cnc_id": "1",
    "port": "/tmp/cncpick/cnc_1",
    "baud": 115200,
    "grbl_command_response_s": 2.0,
    "motion_wait_for_trigger_s": 5.0,
    "banner_timeout_s": 3.0,
    "homing_timeout_s": 30.0,
    "origin_x_m": 2.6,
    "origin_y_m": 0.75,
    "origin_z_m": 0.15,
    "reach_x_min_m": 2.0,
    "reach_x_max_m": 2.6,
    "max_rate_mm_per_min": [30000.0] * 3,
    "accel_mm_per_s2": [3000.0] * 3,
    "travel_mm": [650.0, 800.0, 150.0],
    "homing": False,
    "workspace_margin_mm": 1.0,
    "approach_height_m": 0.02,
    "safe_z_m": 0.08,
    "descend_s": 0.2,
    "track_s": 0.25,
    "lag_s": 0.05,
    "bin_classes": ["red_box"],
    "bin_x_m": [2.3],
    "bin_y_m": [0.68],
    "release_dwell_s": 0.05,
    "status_period_s": 0.1,
    "poll_idle_s": 0.2,
    "poll_busy_s": 0.02,
    "state_call_timeout_s": 2.0,
    "reconnect_attempts": 10,
}


class Around:
    """cnc_1, the state manager and the tracker, played by rclpy."""

    def __init__(self, node, executor):
        import rclpy

        self.node, self.executor = node, executor
        self.cnc = rclpy.create_node("cnc_1", namespace="/cell", context=node.context)
        for k, v in CNC_1.items():
            self.cnc.declare_parameter(k, v)
        executor.add_node(self.cnc)
        self.status = self.cnc.create_publisher(CncStatus, "/cell/cnc_1/status", 10)
        self.goals = []
        self.action = ActionServer(
            self.cnc, PickObject, "/cell/cnc_1/pick", self.execute, goal_callback=self.goal
        )
        self.alive = True
        self.finish = rclpy.task.Future()
        self.timer = self.cnc.create_timer(0.1, self.report)
        self.states = {}
        self.requests = []
        self.events = node.create_publisher(ObjectEvent, "/cell/objects/events", EVENTS)
        self.transition = node.create_service(
            TransitionObject, "/cell/state_manager/transition_object", self.cas
        )
        self.tracks = node.create_publisher(TrackArray, "/cell/tracks", RELIABLE)
        self.assignments = []
        self.assignment_sub = node.create_subscription(
            Assignment, "/cell/assignments", self.assignments.append, RELIABLE
        )
        self.seq = 0

    def report(self):
        if not self.alive:
            return
        s = CncStatus()
        s.header.stamp = stamp_of(time.time())
        s.cnc_id = "1"
        s.lifecycle_state = 3
        s.grbl_state = "Idle"
        s.position_machine_mm = [-300.0, -375.0, -70.0]
        s.epoch = EPOCH
        self.status.publish(s)

    def goal(self, request):
        self.goals.append(request)
        return GoalResponse.ACCEPT

    async def execute(self, handle):
        # The pick never starts: the goal stays accepted until the end.
        await self.finish
        handle.abort()
        return PickObject.Result()

    def publish_event(self, oid, frm, to, cnc="", epoch=0):
        self.seq += 1
        e = ObjectEvent()
        e.seq = self.seq
        e.header.stamp = stamp_of(time.time())
        e.object_id.uuid = list(oid)
        e.from_state.id, e.to_state.id = frm, to
        e.cnc_id, e.epoch = cnc, epoch
        self.events.publish(e)

    def cas(self, req, resp):
        self.requests.append(req)
        oid = bytes(req.object_id.uuid)
        current = self.states.get(oid)
        resp.accepted = current == req.expected_state.id and (req.cnc_id == "" or req.epoch == EPOCH)
        resp.current_state.id = current or 0
        if resp.accepted:
            self.states[oid] = req.new_state.id
            self.publish_event(oid, current, req.new_state.id, req.cnc_id, req.epoch)
        return resp

    def register(self, oid):
        self.states[oid] = DETECTED
        self.publish_event(oid, 0, DETECTED)

    def track(self, oid, x_m, t_s):
        a = TrackArray()
        a.header.stamp = stamp_of(t_s)
        a.header.frame_id = "belt"
        a.belt_speed_mps = 0.2
        t = Track()
        t.object_id.uuid = list(oid)
        t.position.x, t.position.y = x_m, 0.3
        t.velocity.x = 0.2
        t.class_id = "red_box"
        t.confidence = 0.9
        t.status = Track.STATUS_CONFIRMED
        t.visible = True
        a.tracks.append(t)
        self.tracks.publish(a)


@pytest.fixture
def scheduler(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node
    f = tmp_path / "scheduler.yaml"
    f.write_text("/cell/scheduler:\n  ros__parameters:\n    cnc_ids: ['1']\n    policy: greedy\n")
    around = Around(node, executor)
    proc = spawn([bin_path("scheduler"), "--ros-args", "--params-file", f])
    life = Client(node, executor, "/cell/scheduler")
    assert life.change_state("configure"), "".join(proc.stderr)
    assert life.change_state("activate"), "".join(proc.stderr)
    assert spin_until(
        executor,
        lambda: around.tracks.get_subscription_count() > 0
        and around.status.get_subscription_count() > 0
        and around.assignment_sub.get_publisher_count() > 0,
        30,
    ), "".join(proc.stderr)
    yield around, proc
    # Let the goal finish and the action server go before the node, so the
    # context shuts down whole (a participant left alive at exit leaves its
    # shared memory behind).
    around.finish.set_result(True)
    spin_until(executor, lambda: False, 0.5)
    around.action.destroy()
    executor.remove_node(around.cnc)
    around.cnc.destroy_node()


def test_an_object_is_assigned_with_the_epoch_sent_as_a_goal_and_revoked_when_the_cnc_falls_silent(scheduler):
    around, proc = scheduler
    ex = around.executor
    oid = uuid.uuid4().bytes
    around.register(oid)
    # The object rides towards cnc_1's window (2.0 m), 2 s away.
    x0, t0 = 1.6, time.time()

    def ride_until(done, timeout_s):
        """Publishes the object's track at 30 Hz until done()."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            t = time.time()
            around.track(oid, x0 + 0.2 * (t - t0), t)
            if spin_until(ex, done, 1 / 30):
                return True
        return False

    assert ride_until(lambda: around.goals, 20), "".join(proc.stderr)

    # Compare-and-set DETECTED → ASSIGNED for cnc_1 in its epoch, by the scheduler.
    assign = [r for r in around.requests if r.new_state.id == ASSIGNED]
    assert len(assign) == 1
    a = assign[0]
    assert (a.expected_state.id, a.cnc_id, a.epoch, a.actor) == (DETECTED, "1", EPOCH, "scheduler")
    assert a.request_id
    # The Assignment, with a pick point in cnc_1's window.
    assert spin_until(ex, lambda: around.assignments, 5)
    m = around.assignments[0]
    assert bytes(m.object_id.uuid) == oid and m.cnc_id == "1" and m.epoch == EPOCH and m.policy == "greedy"
    assert 2.0 <= m.predicted_pick_position.x <= 2.6 and abs(m.predicted_pick_position.y - 0.3) < 1e-9
    assert seconds(m.predicted_pick_time) > t0
    # The goal: the epoch, the object where it was at the stamp, its speed,
    # its class's height and a deadline.
    g = around.goals[0]
    assert bytes(g.object_id.uuid) == oid and g.epoch == EPOCH and g.class_id == "red_box"
    stamp = seconds(g.position.header.stamp)
    assert abs(g.position.point.x - (x0 + 0.2 * (stamp - t0))) < 1e-3
    assert abs(g.velocity.x - 0.2) < 1e-9 and abs(g.position.point.z - 0.04) < 1e-9
    assert seconds(g.deadline) > stamp

    # cnc_1 falls silent: the accepted, unstarted object is revoked (how
    # soon is test/rust/sched_core.rs's, on a fake clock).
    around.alive = False
    revoked = lambda: [r for r in around.requests if r.new_state.id == DETECTED]
    assert ride_until(revoked, 10), [(r.expected_state.id, r.new_state.id) for r in around.requests]
    r = revoked()[0]
    assert (r.expected_state.id, r.cnc_id, r.epoch) == (ASSIGNED, "1", EPOCH)
    assert "not active" in r.reason
    assert around.states[oid] == DETECTED
