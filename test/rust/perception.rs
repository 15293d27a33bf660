//! Perception against the simulator's ground truth: detection quality on
//! noisy rendered frames, calibration from a rendered chessboard, the
//! camera's sources (a rendered video replayed through OpenCV gives the
//! same detections as the renderer's own frames) and their errors.

use cncpick::detector::calibrate::{calibrate, params_yaml, render_chessboard, Chessboard};
use cncpick::detector::core::Detector;
use cncpick::detector::homography::Homography;
use cncpick::detector::params::DetectorParams;
use cncpick::detector::score::{score_frame, Score};
use cncpick::kit::params::{load, RosArgs};
use cncpick::sim::cell::SimCore;
use cncpick::sim::params::SimParams;
use cncpick::sim::render::Renderer;
use nalgebra::Matrix3;
use opencv::core::Mat;
use std::path::PathBuf;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cncpick-perception-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn renderer(core: &SimCore) -> Renderer {
    let c = &core.cfg;
    Renderer::new(
        c.camera.clone(),
        c.classes.clone(),
        (c.belt_length_m, c.belt_width_m),
        c.seed,
    )
    .unwrap()
}

/// Scores the detector on every `every`-th of `frames` frames of seed `seed`.
fn score_seed(seed: i64, frames: u64, every: u64) -> Score {
    let p = SimParams {
        seed,
        arrival_rate_per_min: 150.0,
        burst_probability: 0.2,
        ..SimParams::default()
    };
    assert!(p.noise_stddev > 0.0 && p.blur_sigma_px > 0.0, "noise must be on");
    let cfg = p.config().unwrap();
    let dp = DetectorParams::for_sim(&cfg);
    let mut detector = Detector::new(dp.config().unwrap()).unwrap();
    let camera = dp.homography().unwrap();
    let size = (cfg.camera.width_px, cfg.camera.height_px);
    let mut core = SimCore::new(cfg);
    let mut r = renderer(&core);
    let mut image = Mat::default();
    let mut total = Score::default();
    for k in (0..frames).step_by(every as usize) {
        let (truth, drawn) = core.frame(k);
        r.render(k, truth.t_s, &drawn, &mut image).unwrap();
        let found = detector.detect(&image).unwrap();
        let s = score_frame(&truth, &found, &dp.class_names, &camera, size, 3.0, 0.02);
        total.add(&s);
    }
    total
}

#[test]
fn on_noisy_sim_frames_of_several_seeds_detection_meets_its_figures() {
    let mut all = Score::default();
    for seed in [1, 2, 3] {
        let s = score_seed(seed, 30 * 120, 15);
        println!(
            "seed {seed}: {} found, {} missed, {} false, {} partly in view; recall {:.4} precision {:.4}",
            s.true_positives,
            s.false_negatives,
            s.false_positives,
            s.ignored,
            s.recall(),
            s.precision()
        );
        all.add(&s);
    }
    let (p50, p95) = (all.error_quantile_m(0.5), all.error_quantile_m(0.95));
    println!(
        "all: {} objects seen whole; recall {:.4}, precision {:.4}, lane {:.4}, class {}/{}; \
         error median {:.3} mm, p95 {:.3} mm, max {:.3} mm",
        all.true_positives + all.false_negatives,
        all.recall(),
        all.precision(),
        all.lane_accuracy(),
        all.class_right,
        all.true_positives,
        p50 * 1e3,
        p95 * 1e3,
        all.error_quantile_m(1.0) * 1e3
    );
    assert!(all.true_positives >= 2000, "too few objects to judge: {}", all.true_positives);
    assert!(all.recall() >= 0.995, "recall {}", all.recall());
    assert!(all.precision() >= 0.995, "precision {}", all.precision());
    assert!(p50 <= 0.001, "median error {p50} m");
    assert!(p95 <= 0.003, "95th percentile error {p95} m");
    assert!(all.lane_accuracy() >= 0.999, "lane accuracy {}", all.lane_accuracy());
    assert_eq!(all.class_right, all.true_positives);
}

#[test]
fn the_shipped_defaults_match_the_simulated_cell() {
    let sim = SimParams::default().config().unwrap();
    let d = DetectorParams::default();
    let f = DetectorParams::for_sim(&sim);
    assert_eq!(d, f);
    // And the default calibration is the renderer's geometry.
    let h = d.homography().unwrap();
    let r = Renderer::new(sim.camera.clone(), sim.classes.clone(), (4.0, 0.6), 1).unwrap();
    for (u, v) in [(0.0, 0.0), (640.0, 360.0), (1279.0, 719.0)] {
        let (a, b) = h.apply(u, v);
        let (c, e) = r.geometry.belt_of(u, v);
        assert!((a - c).abs() < 1e-6 && (b - e).abs() < 1e-6, "({u}, {v})");
    }
}

/// A camera looking down at an angle: a perspective, not just a scale.
fn tilted_camera() -> Matrix3<f64> {
    // Belt (x, y, 1) → pixel, with a slight tilt and roll.
    Matrix3::new(
        950.0, 40.0, -150.0, //
        -25.0, 1010.0, 70.0, //
        0.08, 0.05, 1.0,
    )
}

#[test]
fn calibrate_recovers_a_known_homography_from_a_rendered_chessboard() {
    let board = Chessboard {
        inner_cols: 12,
        inner_rows: 7,
        square_m: 0.06,
        origin_x_m: 0.3,
        origin_y_m: 0.0,
    };
    let belt_to_px = tilted_camera();
    let image = render_chessboard(&belt_to_px, 1280, 720, &board).unwrap();
    let dir = temp_dir("calibrate");
    let png = dir.join("pattern.png");
    opencv::imgcodecs::imwrite_def(png.to_str().unwrap(), &image).unwrap();
    let read = opencv::imgcodecs::imread_def(png.to_str().unwrap()).unwrap();
    let c = calibrate(&read, &board).unwrap();
    println!(
        "reprojection error {:.4} px RMS, {:.4} px max over {} corners",
        c.fit.rms_error_px,
        c.fit.max_error_px,
        c.px.len()
    );
    assert_eq!(c.px.len(), 84);
    assert!(c.fit.rms_error_px <= 0.5 && c.fit.max_error_px <= 0.5);
    // Against the true map, over the board's whole area (a grid of belt
    // points, most of them not corners).
    let truth = Homography::new(belt_to_px.try_inverse().unwrap()).unwrap();
    let mut worst_px: f64 = 0.0;
    for i in 0..=60 {
        for j in 0..=60 {
            let x = board.origin_x_m + 11.0 * board.square_m * i as f64 / 60.0;
            let y = board.origin_y_m + 6.0 * board.square_m * j as f64 / 60.0;
            let (u, v) = truth.pixel_of(x, y);
            let (pu, pv) = c.fit.homography.pixel_of(x, y);
            worst_px = worst_px.max((pu - u).hypot(pv - v));
        }
    }
    println!("largest disagreement with the true homography over the board: {worst_px:.4} px");
    assert!(worst_px <= 0.5, "{worst_px} px");

    // The written parameters load into the detector and give the same map.
    let yaml = dir.join("calibration.yaml");
    std::fs::write(&yaml, params_yaml(&c, "detector", "pattern.png")).unwrap();
    let args: Vec<String> = ["x", "--ros-args", "--params-file", yaml.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ros = RosArgs::parse(&args).unwrap();
    let p: DetectorParams = load("/cell/detector", &ros, |_| None).unwrap();
    let h = p.homography().unwrap();
    let (x, y) = h.apply(640.0, 360.0);
    let (tx, ty) = truth.apply(640.0, 360.0);
    assert!((x - tx).hypot(y - ty) < 0.0005, "{x},{y} vs {tx},{ty}");
}

#[test]
fn calibrate_says_so_when_there_is_no_board() {
    let blank = Mat::new_rows_cols_with_default(
        480,
        640,
        opencv::core::CV_8UC3,
        opencv::core::Scalar::all(70.0),
    )
    .unwrap();
    let board = Chessboard {
        inner_cols: 9,
        inner_rows: 6,
        square_m: 0.05,
        origin_x_m: 0.0,
        origin_y_m: 0.0,
    };
    let e = calibrate(&blank, &board).unwrap_err();
    assert!(e.contains("no 9×6 chessboard"), "{e}");
}
