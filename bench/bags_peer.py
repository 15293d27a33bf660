"""The peer for bench/run bags: the `rosbags` writer (PyPI), MCAP storage,
writing the same messages as ours (read raw from our bag), timed per round.
Prints one JSON object."""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore


def main():
    src, n, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Reader(src) as r:
        conn = next(c for c in r.connections if c.msgtype == "sensor_msgs/msg/Image")
        msgs = [(t, bytes(raw)) for _, t, raw in r.messages(connections=[conn])][:n]
    total = sum(len(d) for _, d in msgs)
    out = {"messages": len(msgs), "bytes": total}
    for name, mode in [("none", CompressionMode.NONE), ("zstd", CompressionMode.STORAGE)]:
        secs = []
        for _ in range(rounds):
            d = Path(tempfile.mkdtemp(prefix="rosbags-bench-")) / "bag"
            t0 = time.perf_counter()
            w = Writer(d, version=9, storage_plugin=StoragePlugin.MCAP)
            if mode != CompressionMode.NONE:
                w.set_compression(mode, CompressionFormat.ZSTD)
            with w:
                c = w.add_connection(conn.topic, conn.msgtype, typestore=ts)
                for t, data in msgs:
                    w.write(c, t, data)
            secs.append(time.perf_counter() - t0)
            shutil.rmtree(d.parent)
        out[f"seconds_{name}"] = secs
    print(json.dumps(out))


main()
