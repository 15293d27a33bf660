//! The tracker's core on the simulator's ground truth turned into noisy
//! detections: identity, registration, belt speed through stops and
//! reversals, dead reckoning, and determinism.

use cncpick::sim::cell::SimCore;
use cncpick::sim::params::SimParams;
use cncpick::sim::rng::stream;
use cncpick::sim::truth::FrameTruth;
use cncpick::tracker::core::{Changes, Observation, Tracker, TrackerConfig};
use cncpick::tracker::markers::Scene;
use cncpick::tracker::truth::{crowded, observe, truth_id};
use std::collections::HashMap;

/// One frame's truth, the tracker's changes, and (truth id, track id) pairs.
type Frame = (FrameTruth, Changes, Vec<(u64, [u8; 16])>);

struct Run {
    objects: usize,
    /// Pairs of objects seen together in one lane, overlapping along the belt.
    side_by_side: usize,
    switches: usize,
    registered: HashMap<u64, usize>,
    seen: HashMap<u64, usize>,
    frames: Vec<Frame>,
}

fn view_of(p: &SimParams) -> (f64, f64) {
    let cfg = p.config().unwrap();
    let c = &cfg.camera;
    (c.x_min_m, c.x_min_m + c.width_px as f64 * c.m_per_px)
}

/// Runs the tracker over `seconds` of `p` at 30 fps, calling `each` after
/// every frame.
fn run_with(
    p: &SimParams,
    seconds: f64,
    noise_m: f64,
    mut each: impl FnMut(&FrameTruth, &Tracker, &Changes, &[Observation]),
) -> Tracker {
    let cfg = p.config().unwrap();
    let mut tracker = Tracker::new(TrackerConfig {
        view_x_m: view_of(p),
        belt_length_m: cfg.belt_length_m,
        ..TrackerConfig::default()
    });
    let mut rng = stream(p.seed as u64, "test-detections");
    let view = view_of(p);
    let mut core = SimCore::new(cfg);
    for k in 0..(seconds * 30.0) as u64 {
        let (truth, _) = core.frame(k);
        let obs = observe(&truth, view, noise_m, &mut rng);
        let changes = tracker.step(truth.t_s, &obs);
        each(&truth, &tracker, &changes, &obs);
    }
    tracker
}

/// Runs the tracker and counts identity switches and registrations.
fn run(p: &SimParams, seconds: f64, noise_m: f64, keep_frames: bool) -> (Run, Tracker) {
    let mut last_track: HashMap<u64, [u8; 16]> = HashMap::new();
    let mut out = Run {
        objects: 0,
        side_by_side: 0,
        switches: 0,
        registered: HashMap::new(),
        seen: HashMap::new(),
        frames: Vec::new(),
    };
    let mut pairs_seen = std::collections::HashSet::new();
    let tracker = run_with(p, seconds, noise_m, |truth, _, changes, obs| {
        for (a, oa) in obs.iter().enumerate() {
            for ob in &obs[a + 1..] {
                let lane = |o: &Observation| (o.y_m / 0.15).floor() as i64;
                let overlap = (oa.x_m - ob.x_m).abs() < (oa.size_m[0] + ob.size_m[0]) / 2.0;
                if lane(oa) == lane(ob) && overlap {
                    let (i, j) = (truth_id(&oa.object_id), truth_id(&ob.object_id));
                    pairs_seen.insert((i.min(j), i.max(j)));
                }
            }
        }
        for id in &changes.confirmed {
            *out.registered.entry(truth_id(id)).or_insert(0) += 1;
        }
        let mut pairs = Vec::new();
        for (j, track) in &changes.assigned {
            let o = truth_id(&obs[*j].object_id);
            *out.seen.entry(o).or_insert(0) += 1;
            if let Some(prev) = last_track.insert(o, *track) {
                if prev != *track {
                    out.switches += 1;
                }
            }
            pairs.push((o, *track));
        }
        if keep_frames {
            out.frames.push((truth.clone(), changes.clone(), pairs));
        }
    });
    out.objects = out.seen.len();
    out.side_by_side = pairs_seen.len();
    (out, tracker)
}

#[test]
fn no_identity_switches_and_every_object_registered_once_over_several_seeds() {
    let mut objects = 0;
    for seed in [1, 2, 3] {
        // Bursts, and two objects side by side in one lane.
        let p = crowded(seed);
        let (r, _) = run(&p, 120.0, 0.0003, false);
        println!(
            "seed {seed}: {} objects, {} ID switches, {} side-by-side pairs in view",
            r.objects, r.switches, r.side_by_side
        );
        assert!(
            r.side_by_side >= 5,
            "seed {seed}: the run must include objects side by side"
        );
        assert_eq!(r.switches, 0, "seed {seed}");
        for (o, n) in &r.seen {
            if *n >= 3 {
                assert_eq!(
                    r.registered.get(o),
                    Some(&1),
                    "seed {seed}: object {o} registered {:?} times",
                    r.registered.get(o)
                );
            }
        }
        assert!(r.registered.values().all(|&n| n == 1));
        objects += r.objects;
    }
    assert!(objects >= 600, "{objects} objects");
}

#[test]
fn the_same_detections_give_the_same_tracks() {
    let p = SimParams {
        seed: 4,
        arrival_rate_per_min: 120.0,
        ..SimParams::default()
    };
    let (a, ta) = run(&p, 20.0, 0.0003, true);
    let (b, tb) = run(&p, 20.0, 0.0003, true);
    let summary = |r: &Run| -> Vec<String> {
        r.frames
            .iter()
            .map(|f| format!("{:?} {:?}", f.1, f.2))
            .collect()
    };
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(ta.tracks(), tb.tracks());
}

#[test]
fn at_constant_speed_the_prediction_three_seconds_out_of_view_is_within_3_mm() {
    let p = SimParams {
        seed: 5,
        arrival_rate_per_min: 120.0,
        ..SimParams::default()
    };
    let mut errors = Vec::new();
    run_with(&p, 40.0, 0.0003, |truth, tracker, _, _| {
        for t in tracker.tracks() {
            let unseen_s = truth.t_s - t.last_seen_s;
            if !(2.99..3.01).contains(&unseen_s) {
                continue;
            }
            let id = truth_id(&t.object_id);
            if let Some(o) = truth
                .objects
                .iter()
                .find(|o| o.id == id && o.state == "on_belt")
            {
                let pos = t.position();
                let e = (pos.x - o.position_m[0]).hypot(pos.y - o.position_m[1]);
                errors.push(e);
            }
        }
    });
    let worst = errors.iter().cloned().fold(0.0, f64::max);
    println!(
        "{} tracks 3 s out of view: worst error {:.3} mm",
        errors.len(),
        worst * 1e3
    );
    assert!(errors.len() >= 50, "{} samples", errors.len());
    assert!(worst <= 0.003, "{worst} m");
}

#[test]
fn belt_speed_follows_changes_and_stops_and_reversals_are_seen() {
    for profile in ["stop", "reverse"] {
        let p = SimParams {
            seed: 6,
            arrival_rate_per_min: 150.0,
            speed_profile: profile.into(),
            speed_event_at_s: 15.0,
            speed_event_every_s: 20.0,
            speed_event_for_s: 4.0,
            ..SimParams::default()
        };
        let cfg = p.config().unwrap();
        let mut belt = cncpick::sim::belt::Belt::new(
            cfg.seed,
            cfg.speed_nominal_mps,
            cfg.profile,
            cfg.ramp_s,
            Vec::new(),
        );
        belt.ensure(61.0);
        let mut worst_settled = 0.0f64;
        let mut stop_seen = Vec::new();
        let mut reverse_seen = false;
        let mut settled_samples = 0;
        run_with(&p, 60.0, 0.0003, |truth, _, changes, _| {
            let Some(s) = changes.speed else { return };
            let t = truth.t_s;
            let v = truth.belt_speed_mps;
            // Settled: the true speed has been within 0.1 % of now for 2 s.
            let steady = (0..=20).all(|i| {
                let u = t - i as f64 * 0.1;
                u >= 0.0 && (belt.speed_mps(u) - v).abs() <= 0.001 * v.abs().max(1e-9)
            });
            if steady && v.abs() > 0.01 {
                worst_settled = worst_settled.max((s.speed_mps - v).abs() / v.abs());
                settled_samples += 1;
            }
            if s.stopped {
                stop_seen.push(t);
            }
            reverse_seen |= s.reversed;
        });
        println!(
            "{profile}: worst settled speed error {:.3} % over {settled_samples} frames",
            worst_settled * 100.0
        );
        assert!(settled_samples > 300, "{profile}");
        assert!(worst_settled <= 0.005, "{profile}: {worst_settled}");
        match profile {
            "stop" => {
                assert!(
                    !stop_seen.iter().any(|t| *t < 15.0),
                    "a stop seen before the belt stopped"
                );
                // The belt is at rest from the end of the ramp (0.5 s after 15 s).
                let first = stop_seen
                    .iter()
                    .cloned()
                    .find(|t| *t >= 15.0)
                    .expect("no stop seen");
                println!(
                    "stop: detected {:.2} s after the belt came to rest",
                    first - 15.5
                );
                assert!(first - 15.5 <= 0.5, "{first}");
            }
            _ => assert!(reverse_seen, "no reversal seen"),
        }
    }
}

/// A still belt with objects at fixed places: `n` frames at 30 fps from `t0_s`.
fn still_frames(
    tracker: &mut Tracker,
    t0_s: f64,
    n: usize,
    objects: &[(f64, f64)],
) -> Vec<Changes> {
    (0..n)
        .map(|k| {
            let t = t0_s + k as f64 / 30.0;
            let obs: Vec<Observation> = objects
                .iter()
                .enumerate()
                .map(|(i, &(x, y))| Observation {
                    x_m: x,
                    y_m: y,
                    class_id: "red_box".into(),
                    confidence: 0.9,
                    size_m: [0.06, 0.06],
                    yaw_rad: 0.0,
                    object_id: [i as u8 + 1; 16],
                    vision_id: format!("vision_{i}"),
                })
                .collect();
            tracker.step(t, &obs)
        })
        .collect()
}

#[test]
fn an_object_expected_in_view_but_unseen_is_lost_after_the_watch_and_not_before() {
    let mut tracker = Tracker::new(TrackerConfig {
        lost_after_s: 2.0,
        initial_speed_mps: 0.0,
        ..TrackerConfig::default()
    });
    // Two objects on a still belt; the second is taken away after 1 s.
    let both = [(0.5, 0.075), (0.9, 0.225)];
    let seen = still_frames(&mut tracker, 100.0, 30, &both);
    assert_eq!(seen.iter().map(|c| c.confirmed.len()).sum::<usize>(), 2);
    let after = still_frames(&mut tracker, 101.0, 90, &both[..1]);
    let lost: Vec<(usize, [u8; 16])> = after
        .iter()
        .enumerate()
        .flat_map(|(k, c)| c.lost.iter().map(move |id| (k, *id)))
        .collect();
    // Last seen at 100 + 29/30 s; lost at the first frame 2 s after that.
    assert_eq!(lost, vec![(59, [2u8; 16])]);
    assert_eq!(
        tracker.tracks().len(),
        2,
        "a lost track is kept (and reported)"
    );
    assert!(after.iter().all(|c| c.removed.is_empty()));
}

#[test]
fn an_encoder_reading_takes_precedence_while_fresh_then_vision_again() {
    use cncpick::tracker::core::SpeedSource;
    let p = SimParams {
        seed: 7,
        arrival_rate_per_min: 150.0,
        speed_drift_fraction: 0.0,
        ..SimParams::default()
    };
    let cfg = p.config().unwrap();
    let view = view_of(&p);
    let mut tracker = Tracker::new(TrackerConfig {
        view_x_m: view,
        belt_length_m: cfg.belt_length_m,
        ..TrackerConfig::default()
    });
    let mut rng = stream(7, "test-detections");
    let mut core = SimCore::new(cfg);
    let mut seen = Vec::new();
    for k in 0..(12.0 * 30.0) as u64 {
        let (truth, _) = core.frame(k);
        let obs = observe(&truth, view, 0.0003, &mut rng);
        if k == 300 {
            // At 10 s an encoder says 0.25 m/s: it is used at once.
            tracker.encoder(truth.t_s, 0.25, 0.0001);
            // A reading older than the one in hand is ignored.
            tracker.encoder(truth.t_s - 1.0, 0.1, 0.0001);
        }
        tracker.step(truth.t_s, &obs);
        seen.push((truth.t_s, tracker.belt_speed()));
    }
    let at = |t: f64| seen.iter().find(|(u, _)| *u >= t).unwrap().1;
    let before = at(9.9);
    assert_eq!(before.source, SpeedSource::Vision);
    assert!((before.speed_mps - 0.2).abs() < 0.002, "{before:?}");
    for t in [10.0, 10.2, 10.45] {
        let s = at(t);
        assert_eq!(s.source, SpeedSource::Encoder, "at {t} s");
        assert_eq!(s.speed_mps, 0.25, "at {t} s");
    }
    // Stale 0.5 s after its stamp: vision's estimate again.
    let after = at(10.6);
    assert_eq!(after.source, SpeedSource::Vision);
    assert!((after.speed_mps - 0.2).abs() < 0.002, "{after:?}");
}

/// Object `[9; 16]` on a belt at 0.2 m/s from x = 0.3 m: its detection
/// at `t` s, seen for its first second only.
fn seen_for_a_second(t: f64) -> Vec<Observation> {
    if t >= 1.0 {
        return Vec::new();
    }
    vec![Observation {
        x_m: 0.3 + 0.2 * t,
        y_m: 0.075,
        class_id: "red_box".into(),
        confidence: 0.9,
        size_m: [0.06, 0.06],
        yaw_rad: 0.0,
        object_id: [9; 16],
        vision_id: "vision_9".into(),
    }]
}

#[test]
fn a_track_rides_out_of_view_and_is_deleted_at_the_belt_end_once() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let belt_end = tracker.config().belt_length_m;
    let mut removed = Vec::new();
    let mut lost = 0;
    // Seen for 1 s from x = 0.3 at 0.2 m/s, then never again.
    for k in 0..(25.0 * 30.0) as usize {
        let t = k as f64 / 30.0;
        let obs = seen_for_a_second(t);
        let c = tracker.step(t, &obs);
        lost += c.lost.len();
        if !c.removed.is_empty() {
            removed.push((t, c.removed.clone()));
        }
    }
    // It reaches the belt's end at t = (4.0 - 0.3) / 0.2 = 18.5 s.
    let t_end = (belt_end - 0.3) / 0.2;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].1, vec![[9u8; 16]]);
    assert!(
        (removed[0].0 - t_end).abs() <= 1.0 / 30.0 + 1e-9,
        "deleted at {} s, not {t_end} s",
        removed[0].0
    );
    // Out of the camera's view it was never expected to be seen: not lost.
    assert_eq!(lost, 0);
    assert!(tracker.tracks().is_empty());
}

#[test]
fn the_markers_keep_an_objects_state_and_pick_point_only_while_it_has_a_track() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut scene = Scene::default();
    let (picked, unknown) = (4u8, [7u8; 16]);
    // One object on a belt at 0.2 m/s, seen for its first second.
    let mut removed_at = None;
    for k in 0..(25.0 * 30.0) as usize {
        let t = k as f64 / 30.0;
        let obs = seen_for_a_second(t);
        let c = tracker.step(t, &obs);
        scene.forget(&c.removed);
        if k == 40 {
            // While it is tracked: its state and pick point are kept; an
            // object with no track is not.
            scene.heard_state(tracker.tracks(), [9; 16], picked);
            scene.heard_pick_point(tracker.tracks(), [9; 16], [2.0, 0.075, 0.02]);
            scene.heard_state(tracker.tracks(), unknown, picked);
            scene.heard_pick_point(tracker.tracks(), unknown, [2.0, 0.075, 0.02]);
            assert_eq!(scene.states.get(&[9; 16]), Some(&picked));
            assert_eq!(scene.pick_points.get(&[9; 16]), Some(&[2.0, 0.075, 0.02]));
            assert!(!scene.states.contains_key(&unknown));
            assert!(!scene.pick_points.contains_key(&unknown));
        }
        if !c.removed.is_empty() {
            removed_at = Some(t);
            // Its track gone at the belt's end: so is what was kept for it.
            assert!(scene.states.is_empty() && scene.pick_points.is_empty());
            // Events about it keep coming (its bin, its expiry): not kept.
            scene.heard_state(tracker.tracks(), [9; 16], picked + 1);
            scene.heard_pick_point(tracker.tracks(), [9; 16], [2.0, 0.075, 0.02]);
        }
    }
    assert!(
        removed_at.is_some(),
        "the track never reached the belt's end"
    );
    assert!(scene.states.is_empty(), "{:?}", scene.states);
    assert!(scene.pick_points.is_empty(), "{:?}", scene.pick_points);
}
