"""The camera and detector nodes from outside Rust: rclpy drives their
lifecycles, reads their topics, and feeds them frames good and bad."""

import json
import re
import subprocess
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from diagnostic_msgs.msg import DiagnosticArray
from cncpick_msgs.msg import DetectionArray

from conftest import bin_path, spin_until
from test_lifecycle import Client

ERROR_PROCESSING, UNCONFIGURED, ACTIVE = 15, 1, 3


def image(width, height, stamp_ns, encoding="bgr8", value=70):
    msg = Image()
    msg.header.stamp.sec = stamp_ns // 1_000_000_000
    msg.header.stamp.nanosec = stamp_ns % 1_000_000_000
    msg.header.frame_id = "camera"
    msg.width, msg.height, msg.encoding = width, height, encoding
    channels = 3 if encoding == "bgr8" else 1
    msg.step = width * channels
    msg.data = np.full(width * height * channels, value, dtype=np.uint8).tobytes()
    return msg


def stderr_of(proc):
    return "".join(proc.stderr)


def test_camera_and_detector_turn_a_video_file_into_detections_that_match_the_truth(spawn, rclpy_node, tmp_path):
    node, executor = rclpy_node
    rec = tmp_path / "rec"
    subprocess.run(
        [bin_path("cncpick"), "sim-record", "--out", rec, "--seconds", "2", "--codec", "ffv1",
         "-p", "seed:=3", "-p", "belt_speed_nominal_mps:=0.6", "-p", "arrival_rate_per_min:=500.0"],
        check=True, capture_output=True, timeout=120,
    )
    truth = [json.loads(line) for line in (rec / "truth.jsonl").read_text().splitlines()]
    camera = spawn([bin_path("camera"), "--ros-args", "-p", f"source:=file:{rec / 'video.avi'}", "-p", "fps:=6.0", "-p", "loop_file:=true"])
    detector = spawn([bin_path("detector")])
    arrays, images = [], []
    node.create_subscription(
        DetectionArray, "/cell/detections", arrays.append, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    node.create_subscription(Image, "/cell/camera/image_raw", images.append, qos_profile_sensor_data)
    det_life = Client(node, executor, "/cell/detector")
    cam_life = Client(node, executor, "/cell/camera")
    for life in (det_life, cam_life):
        assert life.change_state("configure")
        assert life.change_state("activate")
    # Large images between processes lose frames (best effort); the file
    # loops until enough arrive: 20 arrays and over 100 detections (a busy
    # machine drops more frames, so the count is waited for, not assumed).
    enough = lambda: len(arrays) >= 20 and sum(len(a.detections) for a in arrays) > 100 and images
    assert spin_until(executor, enough, 90), (
        f"{len(arrays)} arrays\ncamera:\n{stderr_of(camera)}\ndetector:\n{stderr_of(detector)}"
    )
    assert images[0].encoding == "bgr8" and (images[0].width, images[0].height) == (1280, 720)

    stamps = [a.header.stamp.sec + a.header.stamp.nanosec * 1e-9 for a in arrays]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "exposure stamps must rise"

    def error(d, o):
        return ((o["position_m"][0] - d.position.x) ** 2 + (o["position_m"][1] - d.position.y) ** 2) ** 0.5

    def nearest(dets, objects):
        return [min(objects, key=lambda o: error(d, o)) for d in dets]

    def best_frame(a):
        # The video frame whose truth fits the array's detections best.
        return min((i for i in range(len(truth)) if truth[i]["objects"]), key=lambda i: max(error(d, o) for d, o in zip(a.detections, nearest(a.detections, truth[i]["objects"]))))

    # Frames may be lost between processes (sensor-data QoS), so each array
    # is matched to the video frame whose truth fits it best.
    uuids = set()
    checked = 0
    matched = []
    for a in arrays:
        assert a.header.frame_id == "belt"
        if not a.detections:
            continue
        best = best_frame(a)
        objects = truth[best]["objects"]
        matched.append((best, a))
        for d, near in zip(a.detections, nearest(a.detections, objects)):
            assert re.fullmatch(r"vision_\d+_[0-3]_\d+", d.vision_id), d.vision_id
            assert d.vision_id.split("_")[2] == str(d.lane)
            uuids.add(bytes(d.object_id.uuid))
            assert error(d, near) < 0.003, (d, near)
            assert (near["class"], near["lane"]) == (d.class_id, d.lane)
            assert 0.0 < d.confidence <= 1.0
            checked += 1
    assert checked > 100
    assert len(uuids) == checked, "every detection of every frame has its own UUID"
    # The file plays at fps (6 frames a second, 60 frames a loop): the
    # stamps step by 1/6 s a frame.
    for (i0, a0), (i1, a1) in zip(matched, matched[1:]):
        dt = (a1.header.stamp.sec - a0.header.stamp.sec) + (a1.header.stamp.nanosec - a0.header.stamp.nanosec) * 1e-9
        frames = dt * 6
        assert abs(frames - round(frames)) < 1e-3 and (round(frames) - (i1 - i0)) % 60 == 0, (dt, i0, i1)
    # Deactivated and activated again, the detector goes on with the
    # detector its thread hands back. The file's frames are stamped with
    # their wall-clock due time and read no sooner: a frame stamped after
    # the deactivation was answered is the reactivated detector's.
    assert det_life.change_state("deactivate")
    deactivated_s = time.time()
    assert det_life.change_state("activate")
    stamp_s = lambda a: a.header.stamp.sec + a.header.stamp.nanosec * 1e-9
    fresh = lambda: [a for a in arrays if stamp_s(a) > deactivated_s and a.detections]
    assert spin_until(executor, lambda: len(fresh()) >= 5, 60), (
        f"{len(fresh())} arrays with detections since reactivating\ndetector:\n{stderr_of(detector)}"
    )
    for a in fresh():
        best = best_frame(a)
        for d, near in zip(a.detections, nearest(a.detections, truth[best]["objects"])):
            assert error(d, near) < 0.003 and near["class"] == d.class_id, (d, near)
    assert camera.terminate() == 0 and detector.terminate() == 0


def test_a_camera_that_loses_its_frames_goes_to_error_and_reconnects_and_a_wrong_format_is_named(spawn, rclpy_node):
    node, executor = rclpy_node
    camera = spawn([
        bin_path("camera"), "--ros-args",
        "-p", "width_px:=64", "-p", "height_px:=48", "-p", "frame_timeout_s:=0.5",
        "-p", "reconnect_initial_s:=0.2", "-p", "reconnect_max_s:=0.4", "-p", "reconnect_attempts:=100",
    ])
    sim = node.create_publisher(Image, "/cell/sim/image_raw", qos_profile_sensor_data)
    relayed = []
    node.create_subscription(Image, "/cell/camera/image_raw", relayed.append, qos_profile_sensor_data)
    life = Client(node, executor, "/cell/camera", latched=True)
    assert life.change_state("configure")
    assert life.change_state("activate")
    t0 = time.time_ns()
    k = 0

    def feed(seconds, encoding="bgr8", until=None):
        """Frames at 30 a second (spinning in between), stamped k / 30 s
        after t0, for `seconds` or until `until()` holds; returns whether it did."""
        nonlocal k
        start = time.monotonic()
        for i in range(round(seconds * 30)):
            sim.publish(image(64, 48, t0 + k * 33_333_333, encoding))
            k += 1
            while time.monotonic() < start + (i + 1) / 30:
                executor.spin_once(timeout_sec=0.005)
            if until is not None and until():
                return True
        return until is None or until()

    feed(1.0)
    assert relayed, "frames from sim/image_raw reach camera/image_raw"
    assert relayed[-1].header.stamp.sec * 10**9 + relayed[-1].header.stamp.nanosec >= t0, "the exposure stamp is kept"

    # The frames stop: after frame_timeout_s the camera is gone; the node
    # goes through ErrorProcessing and keeps trying to come back.
    assert spin_until(executor, lambda: any(e[3] == ERROR_PROCESSING for e in life.events), 5), life.events
    assert spin_until(
        executor, lambda: sum(1 for e in life.events if e[2] == ERROR_PROCESSING and e[3] == UNCONFIGURED) >= 2, 10
    ), life.events
    assert spin_until(executor, lambda: "no frame for 0.5 s" in stderr_of(camera), 5)

    # Frames again: it reconnects and stays active.
    before = len(relayed)
    feed(2.0)
    assert life.state() == (ACTIVE, "active"), life.events
    assert len(relayed) > before

    # Four frames missing from the stamps count as dropped, in /diagnostics.
    # (Each reconnect starts counting afresh, so the gap is made mid-stream.)
    counts = {}

    def on_diag(msg):
        for st in msg.status:
            if st.name == "/cell/camera":
                counts.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    # (Frames keep coming while waiting, or the camera would time out.)
    assert feed(5, until=lambda: "frames_dropped" in counts), counts
    dropped_before = int(counts["frames_dropped"])
    k += 4
    # /diagnostics comes once a second.
    assert feed(5, until=lambda: int(counts["frames_dropped"]) >= dropped_before + 4), counts
    assert life.state() == (ACTIVE, "active")

    # A grey frame is not a frame the cell can take: a clear error. (Sent
    # straight on, before a gap could time the stream out.)
    errors = sum(1 for e in life.events if e[3] == ERROR_PROCESSING)
    said = 'image encoding "mono8": only bgr8 is taken'
    assert feed(5, "mono8", until=lambda: said in stderr_of(camera)), stderr_of(camera)[-2000:]
    assert spin_until(executor, lambda: sum(1 for e in life.events if e[3] == ERROR_PROCESSING) > errors, 5)
    assert camera.terminate() == 0


@pytest.mark.parametrize("kind", ["missing", "corrupt", "device"])
def test_a_missing_or_corrupt_video_or_an_unreadable_device_is_a_clear_error_and_the_error_state(
    spawn, rclpy_node, tmp_path, kind
):
    node, executor = rclpy_node
    if kind == "missing":
        source, said = f"file:{tmp_path / 'nowhere.avi'}", "cannot open: No such file"
    elif kind == "corrupt":
        bad = tmp_path / "corrupt.avi"
        bad.write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(range(256)) * 40)
        source, said = f"file:{bad}", "cannot open: OpenCV cannot decode it"
    else:
        source, said = "v4l2:/dev/video-none", "cannot open"
    camera = spawn([bin_path("camera"), "--ros-args", "-p", f"source:={source}", "-p", "reconnect_attempts:=0"])
    life = Client(node, executor, "/cell/camera", latched=True)
    assert not life.change_state("configure")
    assert spin_until(executor, lambda: any(e[3] == ERROR_PROCESSING for e in life.events), 5), life.events
    assert spin_until(executor, lambda: life.state() == (UNCONFIGURED, "unconfigured"), 5)
    assert spin_until(executor, lambda: f"{source}: {said}" in stderr_of(camera), 5), stderr_of(camera)
    assert camera.proc.poll() is None, "no panic, no exit"
    assert camera.terminate() == 0


def test_the_detector_refuses_a_grey_frame_by_name_and_goes_to_its_error_state(spawn, rclpy_node):
    node, executor = rclpy_node
    detector = spawn([bin_path("detector")])
    cam = node.create_publisher(Image, "/cell/camera/image_raw", qos_profile_sensor_data)
    life = Client(node, executor, "/cell/detector", latched=True)
    assert life.change_state("configure")
    assert life.change_state("activate")
    assert spin_until(executor, lambda: cam.get_subscription_count() > 0, 10)
    deadline = time.monotonic() + 5
    while not any(e[3] == ERROR_PROCESSING for e in life.events) and time.monotonic() < deadline:
        cam.publish(image(64, 48, time.time_ns(), "mono8"))
        executor.spin_once(timeout_sec=0.1)
    assert any(e[3] == ERROR_PROCESSING for e in life.events), life.events
    assert spin_until(executor, lambda: life.state() == (UNCONFIGURED, "unconfigured"), 5)
    assert spin_until(executor, lambda: 'image encoding "mono8": only bgr8 is taken' in stderr_of(detector), 5)
    assert detector.proc.poll() is None
    assert detector.terminate() == 0
