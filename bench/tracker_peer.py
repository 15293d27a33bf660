"""The peers of `bench/run tracker`: motpy and norfair (PyPI), fed the same
detections as cncpick's tracker, and the one scorer for all three.

Usage: python bench/tracker_peer.py <spec.json>   (written by bench/tracker.rs)

Both peers get millimetres (their defaults suit pixel-sized numbers better
than metres) and settings matched to the scene: a constant-velocity Kalman
model, a track shown from its third detection, kept 15 frames unmatched,
and a gate of 20 mm (norfair) or IoU 0.1 between 50 mm boxes (motpy).

Scoring, the same for every tracker: per frame, the tracks a tracker shows
in the camera's view are matched one-to-one to the true objects within
20 mm (scipy's linear_sum_assignment). An ID switch is a true object matched
to a different track than at its previous match. IDF1 = 2 IDTP / (truth
detections + shown tracks), IDTP from the best one-to-one map of true
objects to tracks over the whole run (Ristani et al., 2016).

Prints one JSON object on its last line.
"""

import json
import statistics
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

MATCH_M = 0.02
# Trackers report tracks this far beyond the view too (see score).
MARGIN_M = 0.05


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def motpy_tracker(fps):
    from motpy import MultiObjectTracker

    return MultiObjectTracker(
        dt=1.0 / fps,
        model_spec={"order_pos": 1, "dim_pos": 2, "order_size": 0, "dim_size": 2, "q_var_pos": 100.0, "r_var_pos": 0.1},
        matching_fn_kwargs={"min_iou": 0.1},
        tracker_kwargs={"max_staleness": 15},
        active_tracks_kwargs={"min_steps_alive": 3, "max_staleness": 15},
    )


def run_motpy(frames, fps, view):
    from motpy import Detection

    tr = motpy_tracker(fps)
    times, shown = [], []
    for fr in frames:
        dets = [
            Detection(box=np.array([(x - w / 2) * 1e3, (y - h / 2) * 1e3, (x + w / 2) * 1e3, (y + h / 2) * 1e3]), score=0.9)
            for x, y, w, h, _ in fr["d"]
        ]
        start = time.perf_counter()
        tr.step(detections=dets)
        active = tr.active_tracks(min_steps_alive=3, max_staleness=15)
        times.append(time.perf_counter() - start)
        # Shown from the third detection, as cncpick and norfair do
        # (min_steps_alive alone counts frames, detected or not).
        positive = {t.id: t.steps_positive for t in tr.trackers}
        now = []
        for t in active:
            if positive.get(t.id, 0) < 3:
                continue
            b = t.box
            x, y = (b[0] + b[2]) / 2e3, (b[1] + b[3]) / 2e3
            if view[0] - MARGIN_M <= x <= view[1] + MARGIN_M:
                now.append((t.id, x, y))
        shown.append(now)
    return times, shown


def run_norfair(frames, fps, view):
    from norfair import Detection, Tracker

    tr = Tracker(distance_function="mean_euclidean", distance_threshold=20.0, hit_counter_max=15, initialization_delay=2)
    times, shown = [], []
    for fr in frames:
        dets = [Detection(points=np.array([[x * 1e3, y * 1e3]])) for x, y, _, _, _ in fr["d"]]
        start = time.perf_counter()
        active = tr.update(detections=dets)
        times.append(time.perf_counter() - start)
        now = []
        for t in active:
            x, y = t.estimate[0] / 1e3
            if view[0] - MARGIN_M <= x <= view[1] + MARGIN_M:
                now.append((t.id, x, y))
        shown.append(now)
    return times, shown


def score(frames, shown, view):
    """ID switches and IDF1 of `shown` (per frame: (track, x, y)) against the truth.

    Truth and tracks are both listed a little beyond the view (MARGIN_M),
    so that an estimate a hair off an object crossing the view's edge is
    neither right nor wrong: only objects whose centre is in the view count
    as truth; a track matched to one of those counts, wherever it is; a
    track matched to an object outside the view, or unmatched outside the
    view, is ignored (a don't-care zone).
    """
    last = {}
    switches = 0
    pairs = {}
    n_truth = n_shown = 0
    for fr, s in zip(frames, shown):
        g = fr["g"]
        inside = [view[0] <= x <= view[1] for _, x, y in g]
        n_truth += sum(inside)
        if not s:
            continue
        if not g:
            n_shown += sum(view[0] <= x <= view[1] for _, x, _ in s)
            continue
        gx = np.array([[x, y] for _, x, y in g])
        sx = np.array([[x, y] for _, x, y in s])
        d = np.linalg.norm(gx[:, None, :] - sx[None, :, :], axis=2)
        cost = np.where(d <= MATCH_M, d, 1e6)
        rows, cols = linear_sum_assignment(cost)
        matched = {c for r, c in zip(rows, cols) if cost[r, c] < 1e6}
        dont_care = {c for c, (_, x, _) in enumerate(s) if c not in matched and not view[0] <= x <= view[1]}
        for r, c in zip(rows, cols):
            if cost[r, c] >= 1e6:
                continue
            if not inside[r]:
                dont_care.add(c)
                continue
            gid, tid = g[r][0], s[c][0]
            if gid in last and last[gid] != tid:
                switches += 1
            last[gid] = tid
        n_shown += len(s) - len(dont_care)
        # IDF1 counts every pair within the threshold, not only the frame's matching.
        for r, c in zip(*np.nonzero(d <= MATCH_M)):
            if inside[r] and c not in dont_care:
                key = (g[r][0], s[c][0])
                pairs[key] = pairs.get(key, 0) + 1
    gids = {k[0] for k in pairs}
    tids = {k[1] for k in pairs}
    gi = {v: i for i, v in enumerate(sorted(gids))}
    ti = {v: i for i, v in enumerate(sorted(tids, key=str))}
    if pairs:
        m = coo_matrix(
            ([v for v in pairs.values()], ([gi[k[0]] for k in pairs], [ti[k[1]] for k in pairs])),
            shape=(len(gi), len(ti)),
        ).toarray()
        rows, cols = linear_sum_assignment(-m)
        idtp = int(m[rows, cols].sum())
    else:
        idtp = 0
    objects = len({g[0] for fr in frames for g in fr["g"] if view[0] <= g[1] <= view[1]})
    return {
        "objects": objects,
        "id_switches": switches,
        "id_switches_per_1000_objects": 1000.0 * switches / max(objects, 1),
        "idf1": 2.0 * idtp / max(n_truth + n_shown, 1),
        "truth": n_truth,
        "shown": n_shown,
        "idtp": idtp,
    }


def main():
    spec = json.load(open(sys.argv[1]))
    fps, view = spec["fps"], spec["view"]
    runners = {"motpy": run_motpy, "norfair": run_norfair}
    identity = {name: {"objects": 0, "id_switches": 0, "idf1": []} for name in ["ours", *runners]}
    for files in spec["identity"]:
        frames = load(files["detections"])
        results = {"ours": load(files["ours"])}
        for name, run in runners.items():
            results[name] = run(frames, fps, view)[1]
        for name, shown in results.items():
            s = score(frames, shown, view)
            acc = identity[name]
            acc["objects"] += s["objects"]
            acc["id_switches"] += s["id_switches"]
            acc["idf1"].append(s["idf1"])
            print(f"identity {files['detections']}: {name}: {s}", file=sys.stderr)
    for acc in identity.values():
        acc["id_switches_per_1000_objects"] = 1000.0 * acc["id_switches"] / max(acc["objects"], 1)
        acc["idf1"] = statistics.mean(acc["idf1"])
    update_ms = {name: {} for name in runners}
    for case in spec["scaling"]:
        frames = load(case["detections"])
        # The peers slow down steeply with the track count (norfair takes
        # seconds per frame at 1,000): fewer frames there. Every track is
        # confirmed by the third frame, so timing starts at the tenth.
        frames = frames[: {10: 300, 100: 120}.get(case["tracks"], 25)]
        for name, run in runners.items():
            times = run(frames, fps, view)[0][10:]
            update_ms[name][str(case["tracks"])] = statistics.median(times) * 1e3
            print(f"{case['tracks']} tracks: {name} {update_ms[name][str(case['tracks'])]:.3f} ms", file=sys.stderr)
    print(json.dumps({"identity": identity, "update_ms": update_ms}))


if __name__ == "__main__":
    main()
