"""rclpy, an independent ROS client, against our r2r probe: every
cncpick_msgs message type arrives with the field values of the hand-written
fixture; DetectionArray and the PickObject goal go the other way too, and
every cncpick_msgs service served by r2r answers rclpy."""

import importlib
import json

import pytest
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from conftest import FIXTURES, bin_path, call_service, spin_until
from rosmsg_dict import from_dict, to_dict

FIXTURE = json.loads((FIXTURES / "interop.json").read_text())
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
MSG = importlib.import_module("cncpick_msgs.msg")
SRV = importlib.import_module("cncpick_msgs.srv")
ACTION = importlib.import_module("cncpick_msgs.action")


@pytest.fixture
def probe(spawn):
    p = spawn([bin_path("cncpick"), "interop", "--fixture", FIXTURES / "interop.json", "--prefix", "/interop"])
    p.next_event(lambda e: e.get("event") == "ready", timeout_s=30)
    yield p
    assert p.close() == 0, "".join(p.stderr)


def test_the_fixture_covers_every_message_type_in_the_package():
    defined = sorted(p.stem for p in (FIXTURES.parents[1] / "msg" / "msg").glob("*.msg"))
    assert sorted(FIXTURE["messages"]) == defined


def test_every_message_type_published_by_r2r_arrives_in_rclpy_field_for_field(probe, rclpy_node):
    node, executor = rclpy_node
    got = {}
    subs = []
    for name in FIXTURE["messages"]:
        cls = getattr(MSG, name)
        subs.append(
            node.create_subscription(
                cls, f"/interop/out/{name}", lambda m, name=name: got.setdefault(name, m), LATCHED
            )
        )
    assert spin_until(executor, lambda: len(got) == len(FIXTURE["messages"]), 30), (
        f"never received: {sorted(set(FIXTURE['messages']) - set(got))}"
    )
    for name, expected in FIXTURE["messages"].items():
        assert to_dict(got[name]) == expected, name


def test_a_detection_array_from_rclpy_arrives_in_r2r_unchanged(probe, rclpy_node):
    node, executor = rclpy_node
    pub = node.create_publisher(MSG.DetectionArray, "/interop/in/DetectionArray", LATCHED)
    expected = FIXTURE["messages"]["DetectionArray"]
    pub.publish(from_dict(MSG.DetectionArray, expected))
    event = probe.next_event(
        lambda e: e.get("event") == "received" and e.get("type") == "DetectionArray",
        timeout_s=30,
        spin=lambda: executor.spin_once(timeout_sec=0.01),
    )
    assert event["msg"] == expected


def test_a_pick_goal_from_rclpy_reaches_the_r2r_action_server_and_its_result_comes_back(probe, rclpy_node):
    node, executor = rclpy_node
    spec = FIXTURE["actions"]["PickObject"]
    client = ActionClient(node, ACTION.PickObject, "/interop/pick")
    assert spin_until(executor, lambda: client.server_is_ready(), 30), "PickObject server never appeared"
    feedback = []
    send = client.send_goal_async(
        from_dict(ACTION.PickObject.Goal, spec["goal"]), feedback_callback=lambda f: feedback.append(f.feedback)
    )
    assert spin_until(executor, send.done, 10)
    handle = send.result()
    assert handle.accepted
    result = handle.get_result_async()
    assert spin_until(executor, result.done, 10)
    assert to_dict(result.result().result) == spec["result"]
    goal_seen = probe.next_event(lambda e: e.get("event") == "goal", timeout_s=10)
    assert goal_seen["goal"] == spec["goal"]
    # Feedback is best effort in ROS 2 actions; when it arrives it must be exact.
    for f in feedback:
        assert to_dict(f) == spec["feedback"]


def test_the_fixture_covers_every_service_type_in_the_package():
    defined = sorted(p.stem for p in (FIXTURES.parents[1] / "msg" / "srv").glob("*.srv"))
    assert sorted(FIXTURE["services"]) == defined


@pytest.mark.parametrize("service", sorted(FIXTURE["services"]))
def test_a_service_served_by_r2r_answers_rclpy(service, probe, rclpy_node):
    node, executor = rclpy_node
    spec = FIXTURE["services"][service]
    cls = getattr(SRV, service)
    client = node.create_client(cls, f"/interop/srv/{service}")
    # The probe answers every request the same way, so a lost answer may be asked again.
    response = call_service(executor, client, from_dict(cls.Request, spec["request"]), resend_after_s=2.0)
    assert to_dict(response) == spec["response"]
    seen = probe.next_event(lambda e: e.get("event") == "request" and e.get("service") == service, timeout_s=10)
    assert seen["request"] == spec["request"]


def test_a_malformed_fixture_is_refused_naming_the_type(tmp_path, spawn):
    bad = json.loads(json.dumps(FIXTURE))
    del bad["messages"]["BeltSpeed"]["stddev_mps"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    p = spawn([bin_path("cncpick"), "interop", "--fixture", path])
    assert p.wait(30) == 1
    stderr = "".join(p.stderr)
    assert "fixture messages.BeltSpeed (cncpick_msgs/msg/BeltSpeed): field stddev_mps is missing" in stderr, stderr
