"""The `sim` node from outside Rust: rclpy drives its lifecycle and reads
sim/truth and sim/image_raw; pyserial talks GRBL to its emulators through the
PTY links it makes; a scheduled fault shows up on the wire and in the truth."""

import json
import queue
import time

import serial
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from cncpick_msgs.msg import Truth, TruthEvent

from conftest import bin_path, spin_until
from test_lifecycle import Client


def read_until(port, needle, timeout_s):
    """Bytes from `port` until `needle` arrives (bounded)."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while needle not in got and time.monotonic() < deadline:
        got += port.read(256)
    return got


def test_the_sim_node_publishes_truth_and_frames_and_its_boards_answer_on_their_links(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node
    links = [tmp_path / "cnc_1", tmp_path / "cnc_2"]
    truth_log = tmp_path / "truth.jsonl"
    params = tmp_path / "sim.yaml"
    params.write_text(
        "sim:\n  ros__parameters:\n"
        "    seed: 5\n"
        "    arrival_rate_per_min: 300.0\n"
        f"    cnc_pty_links: ['{links[0]}', '{links[1]}']\n"
        f"    truth_log_path: '{truth_log}'\n"
        "    faults: ['1.5 grbl_alarm cnc=2 code=1', '0.5 disconnect cnc=1 for_s=1.0']\n"
    )
    sim = spawn([bin_path("sim"), "--ros-args", "--params-file", params])
    life = Client(node, executor, "/cell/sim")
    truths, images = [], []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Truth, "/cell/sim/truth", truths.append, reliable)
    node.create_subscription(Image, "/cell/sim/image_raw", images.append, qos_profile_sensor_data)

    assert life.change_state("configure")
    reported = []
    deadline = time.monotonic() + 10
    while len(reported) < 2 and time.monotonic() < deadline:
        try:
            line = sim.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("sim: cnc_"):
            reported.append(line)
    assert len(reported) == 2, reported
    assert f"(link {links[0]})" in reported[0] and "/dev/pts/" in reported[0]

    # A GRBL host (pyserial here) reaches board 1 through its link.
    with serial.Serial(str(links[0]), 115200, timeout=0.1) as port:
        port.write(b"$I\n")
        got = read_until(port, b"ok\r\n", 5)
        assert b"[VER:1.1h" in got, got
    board2 = serial.Serial(str(links[1]), 115200, timeout=0.1)

    assert life.change_state("activate")
    assert spin_until(executor, lambda: len(truths) >= 75 and len(images) >= 10, 30), (len(truths), len(images))

    # Frames are consecutive, stamped at their exposure, 1/30 s apart.
    seqs = [t.frame_seq for t in truths]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    stamp = lambda h: h.stamp.sec + h.stamp.nanosec * 1e-9
    gaps = [stamp(b.header) - stamp(a.header) for a, b in zip(truths, truths[1:])]
    assert all(abs(g - 1 / 30) < 1e-6 for g in gaps), gaps[:5]
    img = images[-1]
    assert (img.width, img.height, img.encoding, img.step, len(img.data)) == (1280, 720, "bgr8", 3840, 1280 * 720 * 3)
    # Each frame's truth and image travel on their own topics, so the last
    # images seen may be ahead of their truths: every one seen so far must
    # have its truth, once those have come.
    seen = {(i.header.stamp.sec, i.header.stamp.nanosec) for i in images}
    truth_stamps = lambda: {(t.header.stamp.sec, t.header.stamp.nanosec) for t in truths}
    assert spin_until(executor, lambda: seen <= truth_stamps(), 5), sorted(seen - truth_stamps())[:5]
    # Objects are on the belt, in the belt frame, in lanes.
    objs = [o for t in truths for o in t.objects]
    assert objs and all(0 <= o.lane < 4 and 0.0 <= o.position.y <= 0.6 for o in objs)

    # The scheduled alarm: in the truth, and ALARM:1 on board 2's line.
    events = [e for t in truths for e in t.events]
    faults = [e for e in events if e.kind == TruthEvent.FAULT]
    assert [(f.cnc_id, f.detail) for f in faults] == [("1", "disconnect"), ("2", "grbl_alarm")], faults
    got = read_until(board2, b"ALARM:1", 5)
    assert b"ALARM:1\r\n[MSG:Reset to continue]" in got, got
    board2.close()

    # Board 1 was unplugged at 0.5 s and came back at 1.5 s as a fresh
    # board on a new PTY, reported again, its link moved there.
    again = None
    deadline = time.monotonic() + 10
    while again is None and time.monotonic() < deadline:
        try:
            line = sim.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("sim: cnc_1 "):
            again = line
    assert again is not None and f"(link {links[0]})" in again, again
    new_pts = again.split(" on ")[1].split()[0]
    assert str(links[0].resolve()) == new_pts
    with serial.Serial(str(links[0]), 115200, timeout=0.1) as port:
        port.write(b"?")
        assert b"<Idle|MPos:0.000,0.000,0.000" in read_until(port, b">", 5)

    assert life.change_state("deactivate")
    # Let what was published before the transition arrive, then nothing more.
    spin_until(executor, lambda: False, 1.0)
    n = len(truths)
    spin_until(executor, lambda: False, 1.0)
    assert len(truths) == n, "nothing is published while inactive"
    assert life.change_state("cleanup")
    assert not links[0].exists() and not links[1].exists(), "the links go when the boards power off"

    log = [json.loads(l) for l in truth_log.read_text().splitlines()]
    assert len(log) >= len(truths)
    assert [f["frame"] for f in log] == list(range(len(log)))
    assert sim.terminate() == 0
