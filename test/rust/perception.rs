//! Perception against the simulator's ground truth: detection quality on
//! noisy rendered frames, calibration from a rendered chessboard, the
//! camera's sources (a rendered video replayed through OpenCV gives the
//! same detections as the renderer's own frames) and their errors.

mod common;
use cncpick::detector::calibrate::{calibrate, params_yaml, render_chessboard, Chessboard};
use cncpick::detector::core::Detector;
use cncpick::detector::homography::Homography;
use cncpick::detector::params::DetectorParams;
use cncpick::detector::score::{score_frame, Score};
use cncpick::kit::params::{load, RosArgs};
use cncpick::sim::cell::SimCore;
use cncpick::sim::params::SimParams;
use cncpick::sim::render::Renderer;
use common::renderer;
use nalgebra::Matrix3;
use opencv::core::Mat;

fn temp_dir(tag: &str) -> common::Scratch {
    common::temp_dir("perception", tag)
}

/// Scores the detector on every `every`-th of `frames` frames of seed `seed`.
fn score_seed(seed: i64, frames: u64, every: u64) -> Score {
    let p = SimParams {
        seed,
        arrival_rate_per_min: 150.0,
        burst_probability: 0.2,
        ..SimParams::default()
    };
    assert!(
        p.noise_stddev > 0.0 && p.blur_sigma_px > 0.0,
        "noise must be on"
    );
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
    assert!(
        all.true_positives >= 2000,
        "too few objects to judge: {}",
        all.true_positives
    );
    assert!(all.recall() >= 0.995, "recall {}", all.recall());
    assert!(all.precision() >= 0.995, "precision {}", all.precision());
    assert!(p50 <= 0.001, "median error {p50} m");
    assert!(p95 <= 0.003, "95th percentile error {p95} m");
    assert!(
        all.lane_accuracy() >= 0.999,
        "lane accuracy {}",
        all.lane_accuracy()
    );
    assert_eq!(all.class_right, all.true_positives);
}

/// The detector works on each class only around the labelled pixels; its
/// detections and counts must be those of working on the whole frame:
/// objects crossing the frame's edges, touching one another, under the
/// beams, with openings of several sizes (odd and even) or none.
#[test]
fn working_only_around_the_labelled_pixels_finds_what_the_whole_frame_finds() {
    let variants = [
        (
            SimParams {
                seed: 11,
                arrival_rate_per_min: 120.0,
                min_gap_m: 0.0,
                ..SimParams::default()
            },
            None,
        ),
        (
            SimParams {
                seed: 12,
                arrival_rate_per_min: 150.0,
                occluder_x_m: vec![0.2, 0.75, 1.3],
                occluder_width_m: 0.08,
                noise_stddev: 12.0,
                ..SimParams::default()
            },
            Some(4),
        ),
        (
            SimParams {
                seed: 13,
                arrival_rate_per_min: 150.0,
                burst_probability: 0.3,
                ..SimParams::default()
            },
            Some(1),
        ),
        (
            SimParams {
                seed: 14,
                arrival_rate_per_min: 150.0,
                min_gap_m: 0.0,
                ..SimParams::default()
            },
            Some(7),
        ),
    ];
    for (p, open_px) in &variants {
        let cfg = p.config().unwrap();
        let mut dp = DetectorParams::for_sim(&cfg);
        if let Some(k) = open_px {
            dp.open_px = *k;
        }
        let (mut fast, mut whole) = (
            Detector::new(dp.config().unwrap()).unwrap(),
            Detector::new(dp.config().unwrap()).unwrap(),
        );
        let mut core = SimCore::new(cfg);
        let mut r = renderer(&core);
        let mut image = Mat::default();
        let (mut found, mut partial, mut by_regions) = (0, 0, 0);
        for k in (0..1200).step_by(6) {
            let (truth, drawn) = core.frame(k);
            r.render(k, truth.t_s, &drawn, &mut image).unwrap();
            let a = fast.detect(&image).unwrap();
            let b = whole.detect_whole(&image).unwrap();
            assert_eq!(a, b, "seed {} frame {k}", p.seed);
            assert_eq!(fast.last, whole.last, "seed {} frame {k}", p.seed);
            found += a.len();
            partial += fast.last.partial;
            if fast.last_regions.1 < 0.5 && fast.last_regions.0 > 0 {
                by_regions += 1;
            }
        }
        assert!(found > 200, "seed {}: {found} detections", p.seed);
        assert!(partial > 15, "seed {}: {partial} cut by the edge", p.seed);
        assert!(
            by_regions > 80,
            "seed {}: {by_regions} of 200 frames by regions",
            p.seed
        );
    }
}

/// Labelling looks first at a sample of the rows and, on them, of the
/// pixels: squares of labelled pixels of every size up to twice the
/// kernel and more, crowding the ROI's sides and corners, with labelled
/// specks about, in a ROI of odd size inside the frame. For kernels of 1
/// to 7 px, the detections and counts are those of every pixel labelled.
#[test]
fn the_sampled_labelling_misses_nothing_at_the_rois_edges() {
    use opencv::core::{Rect, Scalar, CV_8UC3};
    use opencv::imgproc;
    use rand::{Rng, SeedableRng};
    let sim = SimParams::default().config().unwrap();
    let red = Scalar::new(20.0, 20.0, 200.0, 0.0); // class 0: hue 0°
    let roi = Rect::new(17, 11, 251, 173);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let mut partial = 0;
    for k in 1..=7 {
        let mut dp = DetectorParams::for_sim(&sim);
        dp.open_px = k;
        let mut cfg = dp.config().unwrap();
        cfg.roi_px = Some(roi);
        let k = k as i32;
        let (mut fast, mut whole) = (
            Detector::new(cfg.clone()).unwrap(),
            Detector::new(cfg).unwrap(),
        );
        for frame in 0..40 {
            let mut image =
                Mat::new_rows_cols_with_default(200, 300, CV_8UC3, Scalar::all(90.0)).unwrap();
            // Near a side (either end) or anywhere along it.
            let at = |lo: i32, len: i32, size: i32, rng: &mut rand::rngs::SmallRng| {
                let reach = 3 * k;
                match rng.random_range(0..3) {
                    0 => lo - size + rng.random_range(0..=reach),
                    1 => lo + len - rng.random_range(0..=reach),
                    _ => lo + rng.random_range(0..len),
                }
            };
            for _ in 0..25 {
                let (w, h) = (
                    rng.random_range(1..=2 * k + 3),
                    rng.random_range(1..=2 * k + 3),
                );
                let (x, y) = (
                    at(roi.x, roi.width, w, &mut rng),
                    at(roi.y, roi.height, h, &mut rng),
                );
                imgproc::rectangle(
                    &mut image,
                    Rect::new(x, y, w, h),
                    red,
                    -1,
                    imgproc::LINE_8,
                    0,
                )
                .unwrap();
            }
            for _ in 0..60 {
                let (x, y) = (rng.random_range(0..300), rng.random_range(0..200));
                let w = rng.random_range(1..=k + 1);
                imgproc::rectangle(
                    &mut image,
                    Rect::new(x, y, w, 1),
                    red,
                    -1,
                    imgproc::LINE_8,
                    0,
                )
                .unwrap();
            }
            let a = fast.detect(&image).unwrap();
            let b = whole.detect_whole(&image).unwrap();
            assert_eq!(a, b, "kernel {k} frame {frame}");
            assert_eq!(fast.last, whole.last, "kernel {k} frame {frame}");
            partial += whole.last.partial;
        }
    }
    assert!(
        partial > 500,
        "only {partial} contours cut by the ROI's edge"
    );
}

#[test]
fn the_shipped_defaults_match_the_simulated_cell() {
    let sim = SimParams::default().config().unwrap();
    let d = DetectorParams::default();
    let f = DetectorParams::for_sim(&sim);
    assert_eq!(d, f);
    // And the default calibration is the renderer's geometry.
    let h = d.homography().unwrap();
    let r = Renderer::for_config(&sim).unwrap();
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

#[test]
fn the_file_source_replays_a_rendered_video_into_the_same_detections_as_the_sim_frames() {
    use cncpick::camera::core::SourceSpec;
    use cncpick::camera::source::{Capture, SourceError, Wanted};
    use cncpick::sim::record::{record_with, Codec};
    // A fast, busy belt, so that two seconds of lossless video (70 MB) hold
    // hundreds of detections.
    let p = SimParams {
        seed: 5,
        belt_speed_nominal_mps: 0.6,
        arrival_rate_per_min: 500.0,
        ..SimParams::default()
    };
    let cfg = p.config().unwrap();
    let dir = temp_dir("replay");
    let rec = record_with(cfg.clone(), 2.0, &dir, Codec::Ffv1).unwrap();
    assert_eq!(rec.frames_written, 60);

    let dp = DetectorParams::for_sim(&cfg);
    let mut detector = Detector::new(dp.config().unwrap()).unwrap();
    // The sim source's frames: the renderer, as the sim node draws them.
    let mut core = SimCore::new(cfg.clone());
    let mut r = renderer(&core);
    let mut image = Mat::default();
    let mut from_sim = Vec::new();
    for k in 0..60 {
        let (truth, drawn) = core.frame(k);
        r.render(k, truth.t_s, &drawn, &mut image).unwrap();
        from_sim.push(detector.detect(&image).unwrap());
    }
    // The file source's frames: the video, through VideoCapture.
    let want = Wanted {
        width_px: 1280,
        height_px: 720,
        ..Wanted::default()
    };
    let mut cap = Capture::open(&SourceSpec::File(rec.video.clone()), want, false).unwrap();
    assert!(
        (cap.fps - 30.0).abs() < 1e-6,
        "the file's own rate: {}",
        cap.fps
    );
    let mut from_file = Vec::new();
    loop {
        match cap.read() {
            Ok(m) => from_file.push(detector.detect(&m).unwrap()),
            Err(SourceError::Ended { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(from_file.len(), 60);
    let n: usize = from_sim.iter().map(|d| d.len()).sum();
    assert!(n > 300, "only {n} detections to compare");
    assert_eq!(from_file, from_sim);

    // Looping starts again at the first frame.
    let mut cap = Capture::open(&SourceSpec::File(rec.video.clone()), want, true).unwrap();
    let first = detector.detect(&cap.read().unwrap()).unwrap();
    for _ in 1..60 {
        cap.read().unwrap();
    }
    assert_eq!(detector.detect(&cap.read().unwrap()).unwrap(), first);
    assert_eq!(cap.loops, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_corrupt_video_an_unreadable_device_or_a_wrong_format_is_a_clear_error() {
    use cncpick::camera::core::SourceSpec;
    use cncpick::camera::source::{check_frame, Capture, SourceError, Wanted};
    let dir = temp_dir("bad-sources");
    let open = |spec: SourceSpec| {
        Capture::open(&spec, Wanted::default(), false)
            .err()
            .unwrap()
    };

    let missing = dir.join("missing.avi");
    let e = open(SourceSpec::File(missing.clone()));
    assert!(matches!(e, SourceError::Open { .. }));
    let text = e.to_string();
    assert!(
        text.contains(missing.to_str().unwrap()) && text.contains("No such file"),
        "{text}"
    );

    let corrupt = dir.join("corrupt.avi");
    let mut junk = b"RIFF\x10\x00\x00\x00AVI LIST".to_vec();
    junk.extend((0..20000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&corrupt, &junk).unwrap();
    let text = open(SourceSpec::File(corrupt.clone())).to_string();
    assert!(
        text.starts_with(&format!("file:{}: cannot open", corrupt.display())),
        "{text}"
    );

    let text = open(SourceSpec::File(dir.to_path_buf())).to_string();
    assert!(text.contains("not a regular file"), "{text}");

    let text = open(SourceSpec::V4l2("/dev/video-none".into())).to_string();
    assert!(
        text.starts_with("v4l2:/dev/video-none: cannot open"),
        "{text}"
    );
    // A file that is not a capture device.
    let text = open(SourceSpec::V4l2(corrupt.clone())).to_string();
    assert!(text.contains("cannot open"), "{text}");

    // Grey frames, and frames of the wrong size, are refused by name.
    let grey = Mat::new_rows_cols_with_default(
        720,
        1280,
        opencv::core::CV_8UC1,
        opencv::core::Scalar::all(0.0),
    )
    .unwrap();
    let e = check_frame("v4l2:/dev/video0", &grey, &Wanted::default()).unwrap_err();
    assert!(e.to_string().contains("8-bit BGR"), "{e}");
    let small = Mat::new_rows_cols_with_default(
        480,
        640,
        opencv::core::CV_8UC3,
        opencv::core::Scalar::all(0.0),
    )
    .unwrap();
    let want = Wanted {
        width_px: 1280,
        height_px: 720,
        ..Wanted::default()
    };
    let e = check_frame("file:x.avi", &small, &want)
        .unwrap_err()
        .to_string();
    assert!(e.contains("640×480") && e.contains("1280×720"), "{e}");

    // The detector refuses a grey frame with a reason, not a panic.
    let sim = SimParams::default().config().unwrap();
    let mut d = Detector::new(DetectorParams::for_sim(&sim).config().unwrap()).unwrap();
    let e = d.detect(&grey).unwrap_err().to_string();
    assert!(e.contains("8-bit BGR"), "{e}");
}

#[test]
fn the_shipped_params_file_gives_the_camera_and_a_detector_that_fits_its_sim() {
    use cncpick::camera::params::CameraParams;
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("params/sim.yaml");
    let args: Vec<String> = ["x", "--ros-args", "--params-file", file.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ros = RosArgs::parse(&args).unwrap();
    let sim: SimParams = load("/cell/sim", &ros, |_| None).unwrap();
    let detector: DetectorParams = load("/cell/detector", &ros, |_| None).unwrap();
    let camera: CameraParams = load("/cell/camera", &ros, |_| None).unwrap();
    assert_eq!(detector, DetectorParams::for_sim(&sim.config().unwrap()));
    assert_eq!(camera.source, "sim");
    assert_eq!(
        (camera.width_px, camera.height_px),
        (sim.camera_width_px, sim.camera_height_px)
    );
}

#[test]
fn bad_detector_params_are_refused_by_name() {
    let check = |p: DetectorParams| p.config().unwrap_err();
    let e = check(DetectorParams {
        calib_points_px: vec![0.0, 0.0, 1.0],
        ..DetectorParams::default()
    });
    assert!(e.contains("calib_points_px") && e.contains("pairs"), "{e}");
    let e = check(DetectorParams {
        calib_points_px: vec![0.0, 0.0, 1.0, 0.0, 2.0, 0.0],
        calib_points_belt_m: vec![0.0, 0.0, 1.0, 0.0, 2.0, 0.0],
        ..DetectorParams::default()
    });
    assert!(e.contains("at least 4"), "{e}");
    // Five pairs (four fit any homography exactly), one of them 5 cm off.
    let mut p = DetectorParams::default();
    p.calib_points_px.extend([639.5, 359.5]);
    p.calib_points_belt_m.extend([0.84, 0.30]);
    assert!(p.config().is_ok());
    p.calib_points_belt_m[8] += 0.05;
    let e = check(p);
    assert!(e.contains("disagree"), "{e}");
    let e = check(DetectorParams {
        class_hue_deg: vec![0.0, 10.0, 226.7],
        ..DetectorParams::default()
    });
    assert!(
        e.contains("overlap") && e.contains("red_box") && e.contains("green_disc"),
        "{e}"
    );
    let e = check(DetectorParams {
        class_shapes: vec!["box".into(), "cone".into(), "box".into()],
        ..DetectorParams::default()
    });
    assert!(e.contains("class_shapes[1]") && e.contains("cone"), "{e}");
    let e = check(DetectorParams {
        class_width_m: vec![0.06],
        ..DetectorParams::default()
    });
    assert!(e.contains("class_width_m has 1 entries"), "{e}");
    let e = check(DetectorParams {
        roi_px: vec![0, 0, 10],
        ..DetectorParams::default()
    });
    assert!(e.contains("roi_px has 3 numbers"), "{e}");
}

#[test]
fn new_settings_take_effect_on_the_next_frame() {
    let p = SimParams {
        seed: 2,
        arrival_rate_per_min: 150.0,
        ..SimParams::default()
    };
    let cfg = p.config().unwrap();
    let dp = DetectorParams::for_sim(&cfg);
    let mut detector = Detector::new(dp.config().unwrap()).unwrap();
    let mut core = SimCore::new(cfg);
    let mut r = renderer(&core);
    let (truth, drawn) = core.frame(600);
    let mut image = Mat::default();
    r.render(600, truth.t_s, &drawn, &mut image).unwrap();
    let before = detector.detect(&image).unwrap();
    let reds = |d: &[cncpick::detector::core::Detected]| d.iter().filter(|x| x.class == 0).count();
    assert!(reds(&before) > 0);
    // Red's window moved to yellow: no red boxes; the rest unchanged.
    let mut yellow = dp.clone();
    yellow.class_hue_deg[0] = 60.0;
    detector.reconfigure(yellow.config().unwrap()).unwrap();
    let after = detector.detect(&image).unwrap();
    assert_eq!(reds(&after), 0);
    assert_eq!(after.len(), before.len() - reds(&before));
    // Back to the shipped settings: the same detections as at first.
    detector.reconfigure(dp.config().unwrap()).unwrap();
    assert_eq!(detector.detect(&image).unwrap(), before);
}
