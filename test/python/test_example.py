"""The example node uses the bounded-call kit: while active it calls a peer
GetObject service (served here by rclpy), and its log lines about each call
carry the object's UUID as trace_id."""

import uuid

from cncpick_msgs.srv import GetObject

from conftest import bin_path, spin_until
from test_lifecycle import Client


def test_an_active_example_calls_its_peer_with_a_trace_id_per_object(spawn, rclpy_node):
    node, executor = rclpy_node
    asked = []

    def answer(req, resp):
        asked.append(str(uuid.UUID(bytes=bytes(req.object_id.uuid))))
        resp.found = False
        return resp

    node.create_service(GetObject, "/cell/peer/get_object", answer)
    p = spawn(
        [bin_path("kit_example"), "--ros-args", "-p", "peer_service:=/cell/peer/get_object", "-p", "tick_period_s:=0.1"]
    )
    lifecycle = Client(node, executor, "/cell/kit_example")
    assert lifecycle.change_state("configure")
    spin_until(executor, lambda: False, 0.5)
    assert asked == [], "an inactive node called its peer"
    assert lifecycle.change_state("activate")
    assert spin_until(executor, lambda: len(asked) >= 3, 15), asked
    assert lifecycle.change_state("deactivate")
    assert p.terminate() == 0
    log = "".join(p.stderr)
    for trace_id in asked[:3]:
        assert f"trace_id={trace_id}" in log and "peer answered" in log, log[-2000:]
