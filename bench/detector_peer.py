"""The detector's algorithm written with OpenCV's Python binding (cv2), the
peer `bench/run perception` measures the Rust detector against: the same
thresholds, morphology, contours, moments, area gate and duplicate
suppression, on the same frames, on one thread.

Usage: python bench/detector_peer.py <dir>   (dir holds config.json and frames.u8)
Prints one JSON object: frames per second of each round, and the first
round's detections (x, y, class) per frame, for the agreement check.
"""

import json
import math
import pathlib
import sys
import time

import cv2
import numpy as np


def main():
    d = pathlib.Path(sys.argv[1])
    cfg = json.loads((d / "config.json").read_text())
    w, h, n = cfg["width_px"], cfg["height_px"], cfg["frames"]
    frames = np.fromfile(d / "frames.u8", dtype=np.uint8).reshape(n, h, w, 3)
    cv2.setNumThreads(1)
    H = np.array(cfg["px_to_belt"], dtype=np.float64)
    classes = cfg["classes"]
    k = max(cfg["open_px"], 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    tol, margin = cfg["area_tolerance"], cfg["border_margin_px"]
    lane_w = cfg["belt_width_m"] / cfg["lanes"]

    def to_belt(u, v):
        p = H @ np.array([u, v, 1.0])
        return p[0] / p[2], p[1] / p[2]

    def area_scale(u, v):
        x0, y0 = to_belt(u - 0.5, v)
        x1, y1 = to_belt(u + 0.5, v)
        x2, y2 = to_belt(u, v - 0.5)
        x3, y3 = to_belt(u, v + 0.5)
        return abs((x1 - x0) * (y3 - y2) - (y1 - y0) * (x3 - x2))

    def detect(frame):
        hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
        found = []
        for ci, c in enumerate(classes):
            mask = None
            for lo, hi in c["hue_ranges"]:
                m = cv2.inRange(hsv, (lo, c["saturation_min"], c["value_min"]), (hi, 255, 255))
                mask = m if mask is None else cv2.bitwise_or(mask, m)
            if cfg["open_px"] > 1:
                mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for cont in contours:
                x, y, bw, bh = cv2.boundingRect(cont)
                if x <= margin or y <= margin or x + bw >= w - margin or y + bh >= h - margin:
                    continue
                mo = cv2.moments(cont)
                if mo["m00"] <= 0:
                    continue
                u, v = mo["m10"] / mo["m00"], mo["m01"] / mo["m00"]
                area_px = mo["m00"] + cv2.arcLength(cont, True) / 2 + 1
                ratio = area_px * area_scale(u, v) / c["area_m2"]
                if abs(ratio - 1) > tol:
                    continue
                conf = 1 - abs(ratio - 1) / tol
                if conf < cfg["min_confidence"]:
                    continue
                xb, yb = to_belt(u, v)
                pts = cv2.boxPoints(cv2.minAreaRect(cont))
                belt = [to_belt(float(p[0]), float(p[1])) for p in pts]
                a = math.dist(belt[0], belt[1])
                b = math.dist(belt[1], belt[2])
                lane = min(max(int(math.floor(yb / lane_w)), 0), cfg["lanes"] - 1)
                found.append((conf, xb, yb, ci, lane, max(a, b), min(a, b)))
        found.sort(key=lambda f: (-f[0], f[1], f[2]))
        kept = []
        for f in found:
            if all(math.hypot(f[1] - g[1], f[2] - g[2]) >= cfg["duplicate_distance_m"] for g in kept):
                kept.append(f)
        return kept

    rounds = []
    first = None
    for r in range(cfg["rounds"]):
        t0 = time.perf_counter()
        out = [detect(frames[i]) for i in range(n)]
        rounds.append(n / (time.perf_counter() - t0))
        if first is None:
            first = [[[f[1], f[2], f[3]] for f in fr] for fr in out]
    print(json.dumps({"fps_rounds": rounds, "detections": first, "cv2": cv2.__version__}))


if __name__ == "__main__":
    main()
