"""The `cnc` motion controller from outside Rust: rclpy drives its lifecycle
against the `sim` node's GRBL emulator on a PTY (reached through the link the
sim makes, as through /dev/serial/by-id on a cell computer) and the state
manager; it reads CncStatus, sends a hostile PickObject goal through a real
action client, and calls the e-stop and unlock services."""

import time

from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger
from cncpick_msgs.action import PickObject
from cncpick_msgs.msg import CncStatus

from conftest import bin_path, call_service, spin_until
from test_lifecycle import Client

ACTIVE, INACTIVE, UNCONFIGURED = 3, 2, 1


def test_status_action_estop_and_unlock_from_rclpy(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node
    link = tmp_path / "cnc_1"
    sim_params = tmp_path / "sim.yaml"
    # The sim is only configured: its boards are powered, its belt is still.
    sim_params.write_text(f"sim:\n  ros__parameters:\n    cnc_pty_links: ['{link}', '{tmp_path / 'cnc_2'}']\n")
    sim = spawn([bin_path("sim"), "--ros-args", "--params-file", sim_params])
    state = spawn([bin_path("state_manager"), "--ros-args", "-p", f"database_path:={tmp_path / 'state.sqlite'}"])
    cnc = spawn([bin_path("cnc"), "--ros-args", "-p", f"port:={link}", "-p", "status_period_s:=0.1"])
    sim_life = Client(node, executor, "/cell/sim")
    state_life = Client(node, executor, "/cell/state_manager")
    cnc_life = Client(node, executor, "/cell/cnc_1")
    assert sim_life.change_state("configure"), "".join(sim.stderr)
    assert state_life.change_state("configure") and state_life.change_state("activate"), "".join(state.stderr)

    statuses = []
    node.create_subscription(
        CncStatus, "/cell/cnc_1/status", statuses.append, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    assert cnc_life.change_state("configure", timeout_s=30), "".join(cnc.stderr)
    # Configured: its status is published, Inactive, the board Idle and at rest.
    assert spin_until(executor, lambda: statuses and statuses[-1].lifecycle_state == INACTIVE, 10), statuses[-1:]
    assert cnc_life.change_state("activate"), "".join(cnc.stderr)
    assert spin_until(executor, lambda: statuses[-1].lifecycle_state == ACTIVE, 10)
    s = statuses[-1]
    assert (s.cnc_id, s.grbl_state, s.vacuum_on, s.busy) == ("1", "Idle", False, False), s
    assert s.epoch >= 1
    assert s.header.frame_id == "belt"
    # At rest at the safe height above the belt (params: 0.08 m) or higher,
    # inside its machine's negative work space.
    assert s.position_belt.z > 0.08 - 1e-3, s.position_belt
    assert all(v <= 0 for v in s.position_machine_mm), s.position_machine_mm
    parked = list(s.position_machine_mm)

    # A hostile goal (beyond the machine's Y travel) is refused at once.
    action = ActionClient(node, PickObject, "/cell/cnc_1/pick")
    assert action.wait_for_server(timeout_sec=10)
    goal = PickObject.Goal(epoch=s.epoch, class_id="red_box")
    goal.object_id.uuid = list(range(16))
    now = time.time_ns()
    goal.position.header.stamp.sec, goal.position.header.stamp.nanosec = now // 10**9, now % 10**9
    goal.position.point.x, goal.position.point.y, goal.position.point.z = 1.9, -0.5, 0.04
    goal.velocity.x = 0.2
    sent = action.send_goal_async(goal)
    assert spin_until(executor, sent.done, 10)
    assert not sent.result().accepted, "a goal outside the workspace was accepted"
    n = len(statuses)
    assert spin_until(executor, lambda: len(statuses) >= n + 3, 5)
    assert list(statuses[-1].position_machine_mm) == parked, "the machine moved"

    # E-stop: feed hold at once, then the reset; the node leaves Active and
    # stays out (latched) until configured again.
    estop = node.create_client(Trigger, "/cell/cnc_1/estop")
    r = call_service(executor, estop, Trigger.Request())
    assert r.success and "feed hold written" in r.message, r.message
    deadline = time.monotonic() + 5
    while cnc_life.state()[0] != UNCONFIGURED:
        assert time.monotonic() < deadline, f"still {cnc_life.state()} after the e-stop"
        spin_until(executor, lambda: False, 0.05)
    # Unlock ($X) is served while unconfigured, opening the port itself.
    unlock = node.create_client(Trigger, "/cell/cnc_1/unlock")
    r = call_service(executor, unlock, Trigger.Request())
    assert r.success and "unlocked" in r.message, r.message
    assert cnc_life.state()[0] == UNCONFIGURED, "recovered by itself after an e-stop"
    assert cnc_life.change_state("configure", timeout_s=30), "".join(cnc.stderr)
    assert cnc_life.change_state("activate"), "".join(cnc.stderr)
    assert spin_until(executor, lambda: statuses[-1].lifecycle_state == ACTIVE and statuses[-1].epoch > s.epoch, 10)

    for p in (cnc, state, sim):
        assert p.terminate() == 0, "".join(p.stderr)
