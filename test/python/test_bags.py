"""rosbag2 bags across implementations: what our recorder writes opens in
`rosbags` (PyPI) and decodes equal to what rclpy published; a bag `rosbags`
wrote plays through our player into rclpy, with pause, step and resume from
rclpy; a damaged bag is reported by file and offset and what precedes the
damage is still read and played."""

import dataclasses
import json
import signal
import time

import numpy as np
import pytest
import yaml
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

import cncpick_msgs.msg as MSG
from conftest import FIXTURES, bin_path, call_once, call_service, resume_player, spin_until
from rosmsg_dict import from_dict, to_dict

FIXTURE = json.loads((FIXTURES / "interop.json").read_text())
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def plain(v):
    """A rosbags message (dataclass, numpy arrays) as plain Python values.
    Its constants (upper-case names in ROS 2) are left out, as rclpy does."""
    if dataclasses.is_dataclass(v):
        return {
            f.name: plain(getattr(v, f.name))
            for f in dataclasses.fields(v)
            if f.name != "__msgtype__" and not f.name.isupper()
        }
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_with_rosbags(path):
    out = {}
    with AnyReader([path], default_typestore=TYPESTORE) as r:
        conns = {c.topic: c for c in r.connections}
        for c, _t, raw in r.messages():
            out.setdefault(c.topic, []).append(plain(r.deserialize(raw, c.msgtype)))
    return conns, out


@pytest.mark.parametrize("variant", [[], ["--compression", "zstd", "--max-bag-size", "20000"]], ids=["plain", "zstd-split"])
def test_our_bags_open_in_rosbags_and_every_message_decodes_equal(tmp_path, spawn, rclpy_node, variant):
    node, executor = rclpy_node
    bag = tmp_path / "bag"
    rec = spawn([bin_path("cncpick"), "record", "-o", bag, "--all", *variant])
    pubs = {}
    for name in FIXTURE["messages"]:
        qos = LATCHED if name == "ObjectEvent" else RELIABLE
        pubs[f"/cell/bagtest/{name}"] = (node.create_publisher(getattr(MSG, name), f"/cell/bagtest/{name}", qos), name)
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    text_pub = node.create_publisher(String, "/cell/bagtest/text", RELIABLE)
    image_pub = node.create_publisher(Image, "/sim/bagtest/image", RELIABLE)
    outside = node.create_publisher(String, "/elsewhere/text", RELIABLE)  # not a cncpick topic
    topics = set(pubs) | {"/cell/bagtest/text", "/sim/bagtest/image"}
    seen = set()
    while not topics <= seen:
        line = rec.next_line(
            lambda x: x.startswith("recorder: recording"), 30, spin=lambda: executor.spin_once(timeout_sec=0.01)
        )
        seen.add(line.split()[2])
    everyone = [p for p, _ in pubs.values()] + [text_pub, image_pub]
    assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in everyone), 30)
    published = {}
    for k in range(3):
        for topic, (p, name) in pubs.items():
            p.publish(from_dict(getattr(MSG, name), FIXTURE["messages"][name]))
            published.setdefault(topic, []).append(FIXTURE["messages"][name])
    for i in range(40):
        text_pub.publish(String(data=f"message {i}"))
        outside.publish(String(data="not recorded"))
    img = Image(height=48, width=64, encoding="bgr8", step=64 * 3, data=bytes(range(256)) * 36)
    img.header.frame_id = "camera"
    for _ in range(3):
        image_pub.publish(img)
    for p in everyone:
        assert p.wait_for_all_acked(Duration(seconds=10)), "the recorder never acknowledged"
    rec.proc.send_signal(signal.SIGINT)
    assert rec.wait(30) == 0, "".join(rec.stderr)

    conns, got = read_with_rosbags(bag)
    assert "/elsewhere/text" not in conns
    for topic, expected in published.items():
        assert got.get(topic) == expected, topic
        assert conns[topic].msgtype == f"cncpick_msgs/msg/{topic.rsplit('/', 1)[1]}"
    assert [m["data"] for m in got["/cell/bagtest/text"]] == [f"message {i}" for i in range(40)]
    assert got["/sim/bagtest/image"] == [to_dict(img)] * 3

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8 and meta["storage_identifier"] == "mcap"
    assert meta["message_count"] == sum(len(v) for v in got.values())
    assert meta["duration"]["nanoseconds"] > 0 and meta["starting_time"]["nanoseconds_since_epoch"] > 0
    assert meta["relative_file_paths"] == [f["path"] for f in meta["files"]]
    assert all((bag / f).is_file() for f in meta["relative_file_paths"])
    if variant:
        assert len(meta["files"]) > 1, "split by size"
    by_topic = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    # Ours, and nothing outside /cell and /sim (a stray node of another
    # test in this process may add a /cell topic of its own).
    assert set(by_topic) >= topics
    assert all(name.startswith(("/cell/", "/sim/")) for name in by_topic)
    for name in topics:
        t = by_topic[name]
        tm = t["topic_metadata"]
        assert t["message_count"] == len(got[name])
        assert tm["serialization_format"] == "cdr"
        assert tm["type_description_hash"].startswith("RIHS01_")
        offered = yaml.safe_load(tm["offered_qos_profiles"])
        assert len(offered) == 1, name
        assert offered[0]["reliability"] == 1, "reliable"
        assert offered[0]["durability"] == (1 if name.endswith("ObjectEvent") else 2), name


def write_rosbags_bag(path, n=10, gap_ns=100_000_000, t0_ns=1_000_000_000_000):
    String = TYPESTORE.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/chatter", String.__msgtype__, typestore=TYPESTORE)
        for i in range(n):
            w.write(c, t0_ns + i * gap_ns, TYPESTORE.serialize_cdr(String(data=f"m{i}"), String.__msgtype__))


def test_a_bag_written_by_rosbags_plays_into_rclpy_with_pause_step_and_resume(tmp_path, spawn, rclpy_node):
    node, executor = rclpy_node
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    write_rosbags_bag(tmp_path / "theirs")
    got, clock = [], []
    node.create_subscription(String, "/renamed", lambda m: got.append(m.data), RELIABLE)
    node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * 10**9 + m.clock.nanosec), 10)
    player = spawn(
        [
            bin_path("cncpick"), "play", tmp_path / "theirs", "--start-paused", "--rate", "2",
            "--remap", "/chatter:=/renamed", "--clock", "50",
        ]
    )
    client = {s: node.create_client(Trigger, f"/cncpick_player/{s}") for s in ["play_next", "is_paused"]}
    assert spin_until(executor, lambda: node.count_publishers("/renamed") > 0, 30), "".join(player.stderr)
    assert spin_until(executor, lambda: len(clock) > 0, 10), "no /clock"
    # Paused: two steps give exactly two messages, and it stays paused.
    for step in range(2):
        # play_next plays one more message each time: its message arriving
        # says a lost answer's call was carried out.
        def played(step=step):
            return spin_until(executor, lambda: len(got) > step, 2.0)

        answer = call_once(executor, client["play_next"], Trigger.Request(), played)
        assert answer is None or answer.success
    assert spin_until(executor, lambda: len(got) == 2, 10)
    assert call_service(executor, client["is_paused"], Trigger.Request()).success
    assert not spin_until(executor, lambda: len(got) > 2, 0.5), "played on while paused"
    paused_clock = clock[-1]
    assert paused_clock == 1_000_000_000_000 + 100_000_000, "/clock stands at the last stepped message"
    assert resume_player(executor, node)
    assert spin_until(executor, lambda: len(got) == 10, 10), got
    assert got == [f"m{i}" for i in range(10)]
    assert player.wait(20) == 0, "".join(player.stderr)
    assert all(1_000_000_000_000 <= c <= 1_000_000_000_000 + 900_000_000 for c in clock), "/clock is the bag's time"


class _LossyClient:
    """A service client whose first `lose` answers are lost; each call is
    carried out (counted) unless `fail` says the request itself was lost."""

    srv_name = "/lossy"

    def __init__(self, lose, fail=()):
        self.lose, self.fail, self.sent, self.carried = lose, set(fail), 0, 0

    def service_is_ready(self):
        return True

    def call_async(self, request):
        import concurrent.futures

        self.sent += 1
        if self.sent not in self.fail:
            self.carried += 1
        future = concurrent.futures.Future()
        if self.sent > self.lose:
            future.set_result(dataclasses.make_dataclass("R", ["success"])(True))
        return future

    def remove_pending_request(self, future):
        future.cancel()


class _Idle:
    def spin_once(self, timeout_sec):
        time.sleep(min(timeout_sec, 0.01))


def test_a_lost_answer_is_resent_only_if_the_call_was_not_carried_out():
    # The answer lost, the call carried out: not sent again.
    client = _LossyClient(lose=1)
    assert call_once(_Idle(), client, None, lambda: client.carried == 1) is None
    assert (client.sent, client.carried) == (1, 1)
    # The request itself lost: sent again, and answered.
    client = _LossyClient(lose=1, fail={1})
    assert call_once(_Idle(), client, None, lambda: client.carried == 1).success
    assert (client.sent, client.carried) == (2, 1)
    # Never answered, never carried out: a failure naming the service.
    client = _LossyClient(lose=99, fail=range(1, 99))
    with pytest.raises(AssertionError, match="/lossy did not answer within 4.5 s"):
        call_once(_Idle(), client, None, lambda: False, timeout_s=4.5)
    assert client.sent == 3


def test_a_damaged_bag_is_named_by_file_and_offset_and_its_readable_part_plays(tmp_path, spawn, rclpy_node):
    node, executor = rclpy_node
    from std_msgs.msg import String

    write_rosbags_bag(tmp_path / "whole", n=200, gap_ns=1_000_000)
    mcap = next((tmp_path / "whole").glob("*.mcap"))
    data = mcap.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    info = spawn([bin_path("cncpick"), "bag", "info", cut, "--json"])
    assert info.wait(30) == 1
    err = "".join(info.stderr)
    assert f"{cut}: offset " in err and "truncated" in err, err
    report = json.loads("".join(info.lines.queue))
    assert report["damage"][0]["file"] == str(cut)
    readable = report["messages"]
    assert 0 < readable < 200, report

    got = []
    node.create_subscription(String, "/chatter", lambda m: got.append(m.data), RELIABLE)
    player = spawn([bin_path("cncpick"), "play", cut, "--start-paused"])
    assert spin_until(executor, lambda: node.count_publishers("/chatter") > 0, 30)
    assert resume_player(executor, node)
    assert spin_until(executor, lambda: len(got) == readable, 20), (len(got), readable)
    assert got == [f"m{i}" for i in range(readable)]
    assert player.wait(20) == 0
    assert f"{cut}: offset" in "".join(player.stderr)


def test_bad_player_options_are_refused_naming_the_option(tmp_path, spawn):
    write_rosbags_bag(tmp_path / "b")
    p = spawn([bin_path("cncpick"), "play", tmp_path / "b", "--rate", "0"])
    assert p.wait(30) != 0
    assert "--rate" in "".join(p.stderr)
    p = spawn([bin_path("cncpick"), "play", tmp_path / "missing"])
    assert p.wait(30) != 0
    assert "missing: no such bag" in "".join(p.stderr)


def test_a_recorded_run_scores_offline_as_it_did_live(tmp_path, spawn):
    """`cncpick run --record`: the bag holds sim/truth and the object
    events, and `cncpick bag score` gives the run's own report from it."""
    run = spawn(
        [
            bin_path("cncpick"), "run", "--duration-s", "12", "--no-progress", "--metrics-bind", "",
            "--out", tmp_path / "out", "--record", tmp_path / "bag",
        ]
    )
    assert run.wait(180) == 0, "".join(run.stderr)
    live = json.loads((tmp_path / "out" / "report.json").read_text())
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics["/cell/sim/truth"]["message_count"] > 0
    assert "sensor_msgs/msg/Image" not in {t["topic_metadata"]["type"] for t in topics.values()}, "no images by default"
    assert dict(meta["custom_data"])["sim_seed"] == "1"
    score = spawn([bin_path("cncpick"), "bag", "score", tmp_path / "bag", "--json"])
    assert score.wait(60) == 0, "".join(score.stderr)
    offline = json.loads("".join(score.lines.queue))
    assert live["objects"] > 0 and live["picked"] > 0
    for key in ["objects", "picked", "dropped", "missed", "bypassed", "picked_twice", "event_gaps", "truth"]:
        assert offline[key] == live[key], key


def test_the_player_loops_filters_topics_and_starts_at_an_offset(tmp_path, spawn, rclpy_node):
    node, executor = rclpy_node
    from std_msgs.msg import String

    String_ = TYPESTORE.types["std_msgs/msg/String"]
    with Writer(tmp_path / "two", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        a = w.add_connection("/a", String_.__msgtype__, typestore=TYPESTORE)
        b = w.add_connection("/b", String_.__msgtype__, typestore=TYPESTORE)
        for i in range(10):
            c = a if i % 2 == 0 else b
            w.write(c, 5_000_000_000 + i * 100_000_000, TYPESTORE.serialize_cdr(String_(data=f"m{i}"), String_.__msgtype__))
    got_a, got_b = [], []
    node.create_subscription(String, "/a", lambda m: got_a.append(m.data), RELIABLE)
    node.create_subscription(String, "/b", lambda m: got_b.append(m.data), RELIABLE)
    # Only /a, from 0.3 s in (m4, m6, m8), over and over at 10x.
    player = spawn(
        [bin_path("cncpick"), "play", tmp_path / "two", "--topics", "/a", "--start-offset-s", "0.3",
         "--loop", "--rate", "10", "--start-paused"]
    )
    assert spin_until(executor, lambda: node.count_publishers("/a") > 0, 30), "".join(player.stderr)
    assert resume_player(executor, node)
    assert spin_until(executor, lambda: len(got_a) >= 9, 20), got_a
    assert got_a[:9] == ["m4", "m6", "m8"] * 3
    assert node.count_publishers("/b") == 0 and got_b == []
    assert player.terminate(20) == 0
