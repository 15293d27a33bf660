//! The simulated cell: determinism, rendering against the ground truth,
//! parameter checks, vacuum physics, faults, the video recording, and the
//! emulator's PTY link and line noise.

mod common;
use cncpick::kit::params::{load, RosArgs};
use cncpick::sim::cell::{FaultAction, SimCore};
use cncpick::sim::params::SimParams;
use cncpick::sim::render::{Drawn, Renderer};
use cncpick::sim::rng::fnv1a;
use cncpick::sim::truth::{read_log, EventKind, FrameTruth};
use cncpick::sim::vacuum::NozzleSample;
use common::renderer;
use opencv::core::Mat;
use opencv::prelude::*;
use std::path::PathBuf;

fn temp_dir(tag: &str) -> common::Scratch {
    common::temp_dir("sim", tag)
}

/// Truth lines and frame hashes of frames `range` of a run.
fn run(p: &SimParams, frames: std::ops::Range<u64>) -> (String, Vec<u64>, Mat) {
    let mut core = SimCore::new(p.config().unwrap());
    let mut r = renderer(&core);
    let mut truth = String::new();
    let mut hashes = Vec::new();
    let mut image = Mat::default();
    for k in frames {
        let (f, drawn) = core.frame(k);
        truth.push_str(&serde_json::to_string(&f).unwrap());
        truth.push('\n');
        r.render(k, f.t_s, &drawn, &mut image).unwrap();
        hashes.push(fnv1a(image.data_bytes().unwrap()));
    }
    (truth, hashes, image)
}

#[test]
fn the_same_seed_gives_byte_identical_truth_and_frames_and_another_seed_differs() {
    let mut p = SimParams {
        seed: 42,
        arrival_rate_per_min: 300.0,
        ..SimParams::default()
    };
    let (t1, h1, last1) = run(&p, 0..150);
    let (t2, h2, last2) = run(&p, 0..150);
    assert_eq!(t1, t2);
    assert_eq!(h1, h2);
    assert_eq!(last1.data_bytes().unwrap(), last2.data_bytes().unwrap());
    // Objects are in view by the end, so the frames show them.
    assert!(t1.lines().last().unwrap().contains("\"on_belt\""));
    p.seed = 43;
    let (t3, h3, _) = run(&p, 0..150);
    assert_ne!(t1, t3);
    assert!(
        h1.iter().zip(&h3).all(|(a, b)| a != b),
        "noise differs on every frame"
    );
}

/// Frame `k` of `core`, rendered by `fast` as the sim node does and by
/// `whole` the plain way: the bytes must be the same. Returns what was drawn.
fn same_as_whole(
    core: &mut SimCore,
    k: u64,
    fast: &mut Renderer,
    whole: &mut Renderer,
    what: &str,
) -> Vec<Drawn> {
    let (f, drawn) = core.frame(k);
    let (mut a, mut b) = (Mat::default(), Mat::default());
    fast.render(k, f.t_s, &drawn, &mut a).unwrap();
    whole.render_whole(k, f.t_s, &drawn, &mut b).unwrap();
    assert_eq!(
        a.data_bytes().unwrap(),
        b.data_bytes().unwrap(),
        "frame {k} ({what}): {} objects",
        drawn.len()
    );
    drawn
}

/// The renderer finishes the empty belt ahead (prepare) and draws, blurs,
/// lights and noises only around the objects; its frames must be the bytes
/// of doing the whole picture: objects crossing the frame's edges, under
/// the beams, touching one another, with and without blur or noise, the
/// effects changed mid-run after a frame was prepared, and frames prepared
/// for another frame or not at all.
#[test]
fn blurring_only_around_the_objects_gives_the_bytes_of_blurring_the_whole_frame() {
    let variants = [
        SimParams {
            seed: 5,
            arrival_rate_per_min: 400.0,
            min_gap_m: 0.0,
            ..SimParams::default()
        },
        SimParams {
            seed: 6,
            arrival_rate_per_min: 300.0,
            blur_sigma_px: 1.7,
            occluder_x_m: vec![0.2, 0.75, 1.3],
            occluder_width_m: 0.08,
            ..SimParams::default()
        },
        SimParams {
            seed: 8,
            arrival_rate_per_min: 300.0,
            noise_stddev: 0.0,
            occluder_x_m: vec![0.9],
            ..SimParams::default()
        },
        SimParams {
            seed: 9,
            arrival_rate_per_min: 300.0,
            blur_sigma_px: 0.0,
            ..SimParams::default()
        },
    ];
    for p in &variants {
        let mut core = SimCore::new(p.config().unwrap());
        let (mut fast, mut whole) = (renderer(&core), renderer(&core));
        let (mut compared, mut at_edge) = (0, 0);
        for k in (0..900).step_by(5) {
            let t_s = core.frame_time_s(k);
            // Prepared ahead as the sim node does, on most frames; on some
            // for another frame (a frame skipped), or before the effects
            // change: render must not use what no longer fits.
            match k % 4 {
                0 | 1 => fast.prepare(k, t_s).unwrap(),
                2 => fast.prepare(k + 1, core.frame_time_s(k + 1)).unwrap(),
                _ => {}
            }
            if k == 450 {
                fast.prepare(k, t_s).unwrap();
                // Effects change while running, as a parameter update does.
                for r in [&mut fast, &mut whole] {
                    r.set_effects(3.0, 1.1, 0.2, 10.0);
                }
            }
            let drawn = same_as_whole(
                &mut core,
                k,
                &mut fast,
                &mut whole,
                &format!("seed {}", p.seed),
            );
            if !drawn.is_empty() {
                compared += 1;
            }
            let half = 0.05;
            if drawn.iter().any(|d| {
                (d.x_m - p.camera_x_min_m).abs() < half
                    || (d.x_m - p.camera_x_min_m - 1.28).abs() < half
            }) {
                at_edge += 1;
            }
        }
        assert!(
            compared > 100,
            "seed {}: {compared} frames had objects",
            p.seed
        );
        assert!(
            at_edge > 10,
            "seed {}: {at_edge} frames had an object at an edge",
            p.seed
        );
    }
}

/// A frame drawn before its exposure (`render_ahead`, with the objects on
/// the belt then, moved with the belt: `drawn_ahead`) is handed out only
/// while the objects on the frame are still those and the effects the
/// same; its bytes are then those of drawing the whole picture at the
/// exposure. An object on the frame taken away (a pick), moved by a
/// millimetre (a push), or the effects changed in between: the frame is
/// drawn again. An object added off the frame changes nothing.
#[test]
fn a_frame_drawn_before_its_exposure_is_handed_out_only_while_it_still_shows_the_belt() {
    let p = SimParams {
        seed: 11,
        arrival_rate_per_min: 300.0,
        ..SimParams::default()
    };
    let mut core = SimCore::new(p.config().unwrap());
    let (mut fast, mut whole) = (renderer(&core), renderer(&core));
    let view = |d: &Drawn| d.x_m > p.camera_x_min_m + 0.1 && d.x_m < p.camera_x_min_m + 1.1;
    let (mut unchanged, mut used_unchanged, mut changed) = (0, 0, 0);
    core.frame(0);
    for k in 1..600u64 {
        let t_s = core.frame_time_s(k);
        let mut expected = core.drawn_ahead(k);
        let on = expected.iter().position(view);
        // What changes between the drawing ahead and the exposure.
        let case = match (k % 5, on) {
            (1, Some(i)) => {
                expected.remove(i);
                "taken"
            }
            (2, Some(i)) => {
                expected[i].x_m += 0.001;
                "moved"
            }
            (3, _) => {
                let mut off = expected.first().copied().unwrap_or(Drawn {
                    class: 0,
                    x_m: 0.0,
                    y_m: 0.1,
                    yaw_rad: 0.0,
                });
                off.x_m = p.camera_x_min_m + 3.0;
                expected.push(off);
                "added off the frame"
            }
            (4, _) => "effects",
            _ => "nothing",
        };
        fast.prepare(k, t_s).unwrap();
        fast.render_ahead(k, t_s, &expected).unwrap();
        if case == "effects" {
            // The lighting's swing, as a parameter update changes it.
            let swing = if k % 2 == 0 { 0.12 } else { 0.1 };
            for r in [&mut fast, &mut whole] {
                r.set_effects(p.noise_stddev, p.blur_sigma_px, swing, 20.0);
            }
        }
        let before = fast.used_ahead();
        same_as_whole(&mut core, k, &mut fast, &mut whole, case);
        let used = fast.used_ahead() - before;
        match case {
            "nothing" | "added off the frame" => {
                unchanged += 1;
                used_unchanged += used;
            }
            "taken" | "moved" => {
                changed += 1;
                assert_eq!(
                    used, 0,
                    "frame {k}: an object {case}, yet the frame drawn ahead was used"
                );
            }
            _ => assert_eq!(
                used, 0,
                "frame {k}: the effects changed, yet the frame drawn ahead was used"
            ),
        }
    }
    assert!(
        changed > 100,
        "{changed} frames had an object taken or moved"
    );
    // Objects put on the belt between one frame and the next show up
    // unforeseen; on most frames nothing is.
    assert!(
        used_unchanged * 10 >= unchanged * 9,
        "{used_unchanged} of {unchanged} frames with nothing changed on them were drawn ahead"
    );
}

/// Centroid of what differs from `bg` in a window around (u, v), each
/// pixel weighted by how much of the object's colour covers it.
fn centroid(img: &Mat, bg: &Mat, color: [u8; 3], u: f64, v: f64, r: i32) -> (f64, f64) {
    let (mut sw, mut su, mut sv) = (0.0, 0.0, 0.0);
    for y in (v.round() as i32 - r)..=(v.round() as i32 + r) {
        for x in (u.round() as i32 - r)..=(u.round() as i32 + r) {
            let a = img.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
            let b = bg.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
            let (mut num, mut den) = (0.0, 0.0);
            for c in 0..3 {
                num += (a[c] as f64 - b[c] as f64).abs();
                den += (color[c] as f64 - b[c] as f64).abs();
            }
            let w = num / den;
            sw += w;
            su += w * x as f64;
            sv += w * y as f64;
        }
    }
    (su / sw, sv / sw)
}

#[test]
fn without_noise_the_ground_truth_projects_onto_the_drawn_centroids() {
    let p = SimParams {
        noise_stddev: 0.0,
        blur_sigma_px: 0.0,
        lighting_drift_fraction: 0.0,
        arrival_rate_per_min: 200.0,
        ..SimParams::default()
    };
    let mut core = SimCore::new(p.config().unwrap());
    let mut r = renderer(&core);
    let mut bg = Mat::default();
    r.render(0, 0.0, &[], &mut bg).unwrap();
    let (w, h) = (p.camera_width_px as f64, p.camera_height_px as f64);
    let mut image = Mat::default();
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for k in (30..600).step_by(7) {
        let (f, drawn) = core.frame(k);
        r.render(k, f.t_s, &drawn, &mut image).unwrap();
        for o in &f.objects {
            let (u, v) = r.geometry.pixel_of(o.position_m[0], o.position_m[1]);
            let reach = o.length_m.hypot(o.width_m) / p.camera_m_per_px / 2.0;
            let win = reach.ceil() as i32 + 2;
            // Only whole objects with nothing else in the window.
            let inside = u - win as f64 > 0.0
                && v - win as f64 > 0.0
                && u + (win as f64) < w - 1.0
                && v + (win as f64) < h - 1.0;
            let alone = f.objects.iter().all(|q| {
                q.id == o.id
                    || (q.position_m[0] - o.position_m[0]).abs() / p.camera_m_per_px
                        > 2.0 * win as f64 + 2.0
                    || (q.position_m[1] - o.position_m[1]).abs() / p.camera_m_per_px
                        > 2.0 * win as f64 + 2.0
            });
            if !inside || !alone {
                continue;
            }
            let class = core.cfg.classes.iter().find(|c| c.name == o.class).unwrap();
            let (cu, cv) = centroid(&image, &bg, class.color_bgr, u, v, win);
            let err = (cu - u).hypot(cv - v);
            worst = worst.max(err);
            assert!(
                err < 0.5,
                "object {} ({}) at ({u:.2}, {v:.2}) drawn at ({cu:.2}, {cv:.2})",
                o.id,
                o.class,
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} objects were checked");
    eprintln!("{checked} objects, worst centroid error {worst:.3} px");
}

#[test]
fn a_drawn_object_lands_where_the_camera_geometry_says() {
    let p = SimParams {
        noise_stddev: 0.0,
        blur_sigma_px: 0.0,
        lighting_drift_fraction: 0.0,
        ..SimParams::default()
    };
    let core = SimCore::new(p.config().unwrap());
    let mut r = renderer(&core);
    // A red box at belt (0.5, 0.3): 1 mm pixels from x 0.2, y -0.06, so its
    // centre is pixel (299.5, 359.5) and it covers 60 × 60 pixels.
    let mut img = Mat::default();
    let d = Drawn {
        class: 0,
        x_m: 0.5,
        y_m: 0.3,
        yaw_rad: 0.0,
    };
    r.render(0, 0.0, &[d], &mut img).unwrap();
    let px = |x: i32, y: i32| *img.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
    assert_eq!(px(300, 360), opencv::core::Vec3b::from([0x28, 0x28, 0xdc]));
    assert_eq!(px(271, 331), opencv::core::Vec3b::from([0x28, 0x28, 0xdc]));
    assert_ne!(px(268, 328), opencv::core::Vec3b::from([0x28, 0x28, 0xdc]));
}

fn load_yaml(tag: &str, body: &str) -> Result<SimParams, String> {
    let dir = temp_dir(tag);
    let file = dir.join("sim.yaml");
    std::fs::write(&file, format!("sim:\n  ros__parameters:\n{body}")).unwrap();
    let args = RosArgs {
        params_files: vec![file],
        ..RosArgs::default()
    };
    load::<SimParams>("/cell/sim", &args, |_| None).map_err(|e| e.to_string())
}

#[test]
fn bad_params_are_refused_with_the_file_the_key_and_the_reason() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "speed",
            "    belt_speed_nominal_mps: -0.2\n",
            &["parameter belt_speed_nominal_mps: -0.2 is outside its range [0.001, 5]"],
        ),
        ("lanes", "    lanes: 0\n", &["parameter lanes: 0 is outside its range [1, 32]"]),
        (
            "overlap",
            "    cnc_x_min_m: [1.0, 2.8]\n    cnc_x_max_m: [1.6, 3.4]\n    cnc_origin_x_m: [1.6, 3.4]\n",
            &[
                "parameter cnc_x_min_m: CNC 1: its reach window [1, 1.6] m (cnc_x_min_m, cnc_x_max_m) overlaps the camera's view [0.200, 1.480] m",
            ],
        ),
        (
            "upstream",
            "    camera_x_min_m: 3.0\n    belt_length_m: 6.0\n",
            &["CNC 1: its reach window [2, 2.6] m (cnc_x_min_m, cnc_x_max_m) is upstream of the camera's view"],
        ),
        (
            "bias",
            "    lanes: 3\n",
            &["parameter lanes: lane_bias has 4 entries but lanes is 3"],
        ),
        (
            "color",
            "    class_colors: ['#dc2828', 'green', '#2850dc']\n",
            &["parameter class_colors: class_colors[1] (green_disc) is \"green\": use #rrggbb"],
        ),
        (
            "lists",
            "    cnc_ids: ['1', '2', '3']\n",
            &["cnc_x_min_m has 2 entries but cnc_ids has 3"],
        ),
        (
            "fault",
            "    faults: ['5 grbl_alarm cnc=7']\n",
            &["parameter faults: faults[0] \"5 grbl_alarm cnc=7\": cnc=7 is not in cnc_ids (1, 2)"],
        ),
        (
            "bin",
            "    bin_y_m: [0.3, 0.68]\n",
            &["bin 0 at y = 0.3 m", "is over the belt"],
        ),
        (
            "wide",
            "    class_length_m: [0.06, 0.05, 0.2]\n    class_width_m: [0.06, 0.05, 0.2]\n",
            &["parameter class_width_m: class blue_bar (0.2 × 0.2 m, class_length_m, class_width_m) does not fit a lane"],
        ),
        (
            "negative_bias",
            "    lane_bias: [1.0, -1.0, 1.0, 1.0]\n",
            &["parameter lane_bias: entry 1 (-1) is outside its range"],
        ),
    ];
    for (tag, body, wanted) in cases {
        let e = load_yaml(tag, body).expect_err(tag);
        assert!(
            e.contains("sim.yaml"),
            "{tag}: the error names the file: {e}"
        );
        for w in *wanted {
            assert!(e.contains(w), "{tag}: expected {w:?} in {e:?}");
        }
    }
    // Parameters that must change together may: the rules apply once all
    // are read.
    let p = load_yaml("together", "    lanes: 3\n    lane_bias: [1.0, 2.0, 1.0]\n").unwrap();
    assert_eq!(p.lanes, 3);
}

/// The first object to reach `x_m`, and when.
fn object_reaching(core: &mut SimCore, x_m: f64) -> (u64, f64) {
    for k in 0..3000 {
        let (f, _) = core.frame(k);
        if let Some(o) = f.objects.iter().find(|o| o.position_m[0] >= x_m) {
            return (o.id, f.t_s);
        }
    }
    panic!("no object reached {x_m} m");
}

/// Follows object `id` with the nozzle from `t0` for `secs`, every 5 ms.
fn follow(
    core: &mut SimCore,
    id: u64,
    t0: f64,
    secs: f64,
    vacuum: bool,
) -> Vec<cncpick::sim::truth::TruthEvent> {
    let mut events = Vec::new();
    let n = (secs / 0.005).round() as u64;
    for i in 0..=n {
        let t = t0 + i as f64 * 0.005;
        core.advance_to(t);
        let pos = match core.world.get(id) {
            Some(o) => core.world.position_m(o, t),
            None => break,
        };
        core.nozzle(
            0,
            NozzleSample {
                t_s: t,
                tip_m: pos,
                vacuum_on: vacuum,
            },
        );
    }
    let k = (core.now_s() * 30.0).ceil() as u64 + 1;
    let (f, _) = core.frame(k);
    events.extend(f.events);
    events
}

fn kinds(events: &[cncpick::sim::truth::TruthEvent], id: u64) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.object_id == id && e.kind != EventKind::Arrived)
        .map(|e| e.kind)
        .collect()
}

fn picking_params() -> SimParams {
    SimParams {
        arrival_rate_per_min: 30.0,
        burst_probability: 0.0,
        ..SimParams::default()
    }
}

#[test]
fn a_nozzle_that_follows_an_object_with_vacuum_for_the_dwell_picks_it_and_bins_it() {
    let mut core = SimCore::new(picking_params().config().unwrap());
    let (id, t0) = object_reaching(&mut core, 2.1);
    let ev = follow(&mut core, id, t0, 0.15, true);
    assert_eq!(kinds(&ev, id), vec![EventKind::PickedUp]);
    let o = core.world.get(id).unwrap();
    assert!(matches!(
        o.place,
        cncpick::sim::world::Place::Held { cnc: 0, .. }
    ));
    // Over CNC 1's bin (red_box) and off.
    let t = core.now_s() + 0.5;
    core.advance_to(t);
    core.nozzle(
        0,
        NozzleSample {
            t_s: t,
            tip_m: [2.3, 0.68, 0.1],
            vacuum_on: true,
        },
    );
    core.nozzle(
        0,
        NozzleSample {
            t_s: t + 0.01,
            tip_m: [2.3, 0.68, 0.1],
            vacuum_on: false,
        },
    );
    let (f, _) = core.frame((t * 30.0).ceil() as u64 + 1);
    let binned: Vec<_> = f
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Binned)
        .collect();
    assert_eq!(binned.len(), 1);
    assert_eq!(binned[0].object_id, id);
    assert_eq!(binned[0].cnc.as_deref(), Some("1"));
    assert!(
        core.world.get(id).is_none(),
        "a binned object leaves the world"
    );
}

#[test]
fn too_short_a_dwell_or_too_far_off_is_a_missed_pick() {
    let mut core = SimCore::new(picking_params().config().unwrap());
    let (id, t0) = object_reaching(&mut core, 2.1);
    // 50 ms of a 100 ms dwell, then vacuum off.
    let mut ev = follow(&mut core, id, t0, 0.05, true);
    let t = core.now_s() + 0.005;
    core.nozzle(
        0,
        NozzleSample {
            t_s: t,
            tip_m: [0.0, -1.0, 0.2],
            vacuum_on: false,
        },
    );
    ev.extend(core.frame((t * 30.0).ceil() as u64 + 1).0.events);
    assert_eq!(kinds(&ev, id), vec![EventKind::MissedPick]);
    assert!(core.world.get(id).is_some(), "it rides on");

    // 2 cm off to the side for a long time: never picked.
    let t1 = core.now_s();
    for i in 0..60 {
        let t = t1 + i as f64 * 0.005;
        core.advance_to(t);
        let o = core.world.get(id).unwrap();
        let [x, y, z] = core.world.position_m(o, t);
        core.nozzle(
            0,
            NozzleSample {
                t_s: t,
                tip_m: [x, y + 0.02, z],
                vacuum_on: true,
            },
        );
    }
    assert!(matches!(
        core.world.get(id).unwrap().place,
        cncpick::sim::world::Place::OnBelt { .. }
    ));
}

#[test]
fn a_vacuum_failure_fault_stops_picks_and_drop_probability_one_drops_every_pick() {
    let mut p = picking_params();
    p.faults = vec!["0 vacuum_failure cnc=1 for_s=1000".into()];
    let mut core = SimCore::new(p.config().unwrap());
    let (id, t0) = object_reaching(&mut core, 2.1);
    let ev = follow(&mut core, id, t0, 0.3, true);
    assert!(!kinds(&ev, id).contains(&EventKind::PickedUp));

    let mut p = picking_params();
    p.drop_probability = 1.0;
    let mut core = SimCore::new(p.config().unwrap());
    let (id, t0) = object_reaching(&mut core, 2.1);
    let mut ev = follow(&mut core, id, t0, 0.15, true);
    // Carry it towards the bin for a second.
    let t1 = core.now_s();
    for i in 1..=200 {
        let t = t1 + i as f64 * 0.005;
        core.advance_to(t);
        core.nozzle(
            0,
            NozzleSample {
                t_s: t,
                tip_m: [2.3, 0.5, 0.1],
                vacuum_on: true,
            },
        );
    }
    ev.extend(core.frame((core.now_s() * 30.0).ceil() as u64 + 1).0.events);
    assert_eq!(
        kinds(&ev, id),
        vec![EventKind::PickedUp, EventKind::Dropped]
    );
}

#[test]
fn scheduled_faults_reach_the_shell_the_belt_and_the_frames() {
    let mut p = SimParams {
        arrival_rate_per_min: 300.0,
        ..SimParams::default()
    };
    p.faults = vec![
        "1 grbl_alarm cnc=2 code=1".into(),
        "2 garbage cnc=1 bytes=8".into(),
        "3 disconnect cnc=1 for_s=2".into(),
        "4 belt_stop for_s=2".into(),
        "8 frame_drop for_s=0.5".into(),
        "9 frame_late delay_ms=250 for_s=1".into(),
    ];
    let mut core = SimCore::new(p.config().unwrap());
    let mut actions = Vec::new();
    let mut frames: Vec<FrameTruth> = Vec::new();
    for k in 0..330 {
        actions.extend(core.advance_to(k as f64 / 30.0));
        frames.push(core.frame(k).0);
    }
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[0], FaultAction::Alarm { cnc: 1, code: 1 });
    assert!(matches!(&actions[1], FaultAction::Garbage { cnc: 0, bytes } if bytes.len() == 8));
    assert_eq!(
        actions[2],
        FaultAction::Disconnect {
            cnc: 0,
            until_s: 5.0
        }
    );
    // Stopped from 4.5 s (after a 0.5 s ramp) to 6.5 s: nothing moves.
    let at = |t: f64| &frames[(t * 30.0_f64).round() as usize];
    assert_eq!(at(4.6).belt_speed_mps, 0.0);
    assert_eq!(at(4.6).belt_travel_m, at(5.9).belt_travel_m);
    assert!(at(7.0).belt_speed_mps > 0.19);
    let dropped: Vec<u64> = frames
        .iter()
        .filter(|f| !f.delivered)
        .map(|f| f.frame)
        .collect();
    assert_eq!(dropped, (240..255).collect::<Vec<u64>>());
    assert_eq!(core.frame_delay_s(285), 0.25);
    assert_eq!(core.frame_delay_s(305), 0.0);
    let faults: Vec<String> = frames
        .iter()
        .flat_map(|f| f.events.iter())
        .filter(|e| e.kind == EventKind::Fault)
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(
        faults,
        [
            "grbl_alarm",
            "garbage",
            "disconnect",
            "belt_stop",
            "frame_drop",
            "frame_late"
        ]
    );
}

#[test]
fn a_recording_holds_every_delivered_frame_and_its_truth() {
    let dir = temp_dir("record");
    let p = SimParams {
        faults: vec!["0.5 frame_drop for_s=0.2".into()],
        ..SimParams::default()
    };
    let r = cncpick::sim::record::record(p.config().unwrap(), 2.0, &dir).unwrap();
    assert_eq!(r.frames, 60);
    assert_eq!(r.frames_written, 54);
    let truth = read_log(&r.truth).unwrap();
    assert_eq!(truth.len(), 60);
    assert_eq!(truth.iter().filter(|f| f.delivered).count(), 54);
    let mut cap = opencv::videoio::VideoCapture::from_file(
        r.video.to_str().unwrap(),
        opencv::videoio::CAP_ANY,
    )
    .unwrap();
    assert!(cap.is_opened().unwrap());
    let mut n = 0;
    let mut img = Mat::default();
    while cap.read(&mut img).unwrap() {
        assert_eq!((img.cols(), img.rows()), (1280, 720));
        n += 1;
    }
    assert_eq!(n, 54);
    let cam: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r.camera).unwrap()).unwrap();
    assert_eq!(cam["correspondences"].as_array().unwrap().len(), 4);
    // A broken truth line is reported with its file and line number.
    std::fs::write(&r.truth, "{\"frame\": 0}\n").unwrap();
    let e = read_log(&r.truth).unwrap_err();
    assert!(e.contains("truth.jsonl:1: missing field"), "{e}");
}

#[test]
fn an_emulator_reports_its_pty_through_a_symlink_and_can_send_line_noise() {
    use cncpick::sim::grbl::machine::Config;
    use cncpick::sim::grbl::pty::{PtyEmulator, SimClock};
    use cncpick::sim::grbl::settings::Settings;
    use std::io::Read;
    let dir = temp_dir("link");
    let link = dir.join("cnc_1");
    let mut emu = PtyEmulator::start_on(
        Config::default(),
        Settings::default(),
        SimClock::new(1.0),
        Some(&link),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_str().unwrap(),
        emu.path()
    );
    let mut port = serialport::new(link.to_str().unwrap(), 115_200)
        .timeout(std::time::Duration::from_millis(200))
        .open_native()
        .unwrap();
    emu.write_garbage(vec![0xff, 0x00, b'x']);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    // Bounded: at most 20 reads of 200 ms.
    for _ in 0..20 {
        if let Ok(n) = port.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got.windows(3).any(|w| w == [0xff, 0x00, b'x']) {
            break;
        }
    }
    // The power-on banner and the noise as sent.
    assert!(got.windows(10).any(|w| w == b"Grbl 1.1h "), "{got:?}");
    assert!(got.windows(3).any(|w| w == [0xff, 0x00, b'x']), "{got:?}");
    assert_eq!(emu.snapshot().position_mm, [0.0; 3]);
    emu.stop();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link goes with the board"
    );
}

#[test]
fn the_shipped_params_file_loads_and_makes_a_valid_cell() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("params/sim.yaml");
    let args = RosArgs {
        params_files: vec![file],
        ..RosArgs::default()
    };
    let p: SimParams = load("/cell/sim", &args, |_| None).unwrap();
    assert_eq!(
        p.cnc_pty_links,
        ["/tmp/cncpick/cnc_1", "/tmp/cncpick/cnc_2"]
    );
    assert_eq!(p.config().unwrap().cncs.len(), 2);
}
