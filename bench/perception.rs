//! Benchmark: perception. (1) Detector throughput at 1280×720 on one core
//! (OpenCV limited to one thread) against the same algorithm written with
//! Python's cv2 (bench/detector_peer.py), on the same rendered frames, in
//! the same run; the two must agree on what they find. In the same rounds,
//! our detector's whole-frame path (each class over the whole frame, the
//! reference its regions are tested against). (2) Latency from a
//! frame's exposure stamp to its DetectionArray arriving at a subscriber,
//! with the sim, camera and detector nodes sharing one process (frames pass
//! as shared pointers) on real DDS. Prints one JSON object on its last line.
//! Run with `bench/run perception`.

use cncpick::camera::node::CameraNode;
use cncpick::camera::params::CameraParams;
use cncpick::detector::core::Detector;
use cncpick::detector::node::DetectorNode;
use cncpick::detector::params::DetectorParams;
use cncpick::detector::score::quantile;
use cncpick::kit::node::ServedNode;
use cncpick::kit::time::{to_duration, wall_now};
use cncpick::msgs::msg::DetectionArray;
use cncpick::sim::cell::SimCore;
use cncpick::sim::node::SimNode;
use cncpick::sim::params::SimParams;
use cncpick::sim::render::Renderer;
use futures::StreamExt;
use opencv::core::Mat;
use opencv::prelude::*;
use std::time::{Duration, Instant};

const FRAMES: usize = 60;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    opencv::core::set_num_threads(1)?;
    let p = SimParams {
        seed: 11,
        arrival_rate_per_min: 150.0,
        ..SimParams::default()
    };
    let cfg = p.config().map_err(anyhow::Error::msg)?;
    let dp = DetectorParams::for_sim(&cfg);
    let dc = dp.config().map_err(anyhow::Error::msg)?;
    let mut core = SimCore::new(cfg.clone());
    let mut r = Renderer::for_config(&cfg)?;
    // Frames a third of a second apart, from 10 s on (a belt in full flow).
    let mut frames = Vec::with_capacity(FRAMES);
    let mut raw = Vec::new();
    for i in 0..FRAMES as u64 {
        let k = 300 + 10 * i;
        let (truth, drawn) = core.frame(k);
        let mut m = Mat::default();
        r.render(k, truth.t_s, &drawn, &mut m)?;
        raw.extend_from_slice(m.data_bytes()?);
        frames.push(m);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("frames.u8"), &raw)?;
    let h = &dc.px_to_belt.px_to_belt;
    let peer_cfg = serde_json::json!({
        "width_px": cfg.camera.width_px, "height_px": cfg.camera.height_px,
        "frames": FRAMES, "rounds": ROUNDS,
        "px_to_belt": (0..3).map(|i| (0..3).map(|j| h[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "classes": dc.classes.iter().map(|c| serde_json::json!({
            "hue_ranges": c.hue_ranges(), "saturation_min": c.saturation_min,
            "value_min": c.value_min, "area_m2": c.area_m2(),
        })).collect::<Vec<_>>(),
        "open_px": dc.open_px, "area_tolerance": dc.area_tolerance,
        "min_confidence": dc.min_confidence, "duplicate_distance_m": dc.duplicate_distance_m,
        "border_margin_px": dc.border_margin_px, "belt_width_m": dc.belt_width_m, "lanes": dc.lanes,
    });
    std::fs::write(dir.join("config.json"), peer_cfg.to_string())?;

    let mut detector = Detector::new(dc)?;
    let mut rust_fps = Vec::new();
    let mut whole_fps = Vec::new();
    let mut covered = Vec::new();
    let mut ours = Vec::new();
    for round in 0..ROUNDS {
        let t0 = Instant::now();
        let out: Vec<_> = frames
            .iter()
            .map(|f| {
                let d = detector.detect(f);
                covered.push(detector.last_regions.1);
                d
            })
            .collect::<Result<_, _>>()?;
        rust_fps.push(FRAMES as f64 / t0.elapsed().as_secs_f64());
        // The same frames, each class over the whole frame (the reference
        // path), in the same round.
        let t0 = Instant::now();
        for f in &frames {
            detector.detect_whole(f)?;
        }
        whole_fps.push(FRAMES as f64 / t0.elapsed().as_secs_f64());
        if round == 0 {
            ours = out;
        }
    }

    let peer = std::process::Command::new("python3")
        .arg("bench/detector_peer.py")
        .arg(dir)
        .output()?;
    if !peer.status.success() {
        anyhow::bail!(
            "the Python peer failed: {}",
            String::from_utf8_lossy(&peer.stderr)
        );
    }
    let stdout = String::from_utf8(peer.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    let peer: serde_json::Value = serde_json::from_str(last)?;
    let py_fps: Vec<f64> = serde_json::from_value(peer["fps_rounds"].clone())?;
    let theirs: Vec<Vec<[f64; 3]>> = serde_json::from_value(peer["detections"].clone())?;
    // Agreement: every detection of either side has one of the other's, same
    // class, within 0.01 mm.
    let (mut n, mut agree) = (0usize, 0usize);
    for (a, b) in ours.iter().zip(&theirs) {
        n += a.len().max(b.len());
        agree += a
            .iter()
            .filter(|d| {
                b.iter()
                    .any(|t| t[2] as usize == d.class && (t[0] - d.x_m).hypot(t[1] - d.y_m) < 1e-5)
            })
            .count();
    }
    let (rm, pm) = (median(rust_fps.clone()), median(py_fps.clone()));
    let _ = std::fs::remove_file(dir.join("frames.u8"));
    Ok(serde_json::json!({
        "frames": FRAMES, "rounds": ROUNDS, "width_px": 1280, "height_px": 720,
        "detections": ours.iter().map(|d| d.len()).sum::<usize>(),
        "agreement": agree as f64 / n.max(1) as f64,
        "rust_fps_median": rm, "python_cv2_fps_median": pm,
        "rust_ms_per_frame_median": 1e3 / rm, "python_cv2_ms_per_frame_median": 1e3 / pm,
        "ratio_rust_over_python": rm / pm,
        "rust_whole_frame_fps_median": median(whole_fps.clone()),
        "regions_share_of_frame_median": median(covered.clone()),
        "cv2_version": peer["cv2"], "opencv_rust_links": opencv::core::get_version_string()?,
    }))
}

async fn latency(seconds: f64) -> anyhow::Result<serde_json::Value> {
    let ctx = r2r::Context::create()?;
    let sim = SimParams {
        arrival_rate_per_min: 120.0,
        ..SimParams::default()
    };
    let sim = ServedNode::start(&ctx, "sim", "/cell", sim, |c| Ok(SimNode::new(c)))?;
    let camera = ServedNode::start(&ctx, "camera", "/cell", CameraParams::default(), |c| {
        Ok(CameraNode::new(c))
    })?;
    let detector = ServedNode::start(&ctx, "detector", "/cell", DetectorParams::default(), |c| {
        Ok(DetectorNode::new(c))
    })?;
    let probe = cncpick::kit::app::RunningNode::start(&ctx, "latency_probe", "/cell")?;
    let mut sub = {
        let mut n = probe.node.lock();
        n.subscribe::<DetectionArray>(
            "/cell/detections",
            r2r::QosProfile::default().reliable().keep_last(100),
        )?
    };
    // Bring-up in order: the world, then the camera, then the detector.
    for (node, steps) in [
        (&sim, &["configure", "activate"][..]),
        (&camera, &["configure", "activate"][..]),
        (&detector, &["configure", "activate"][..]),
    ] {
        for s in steps {
            if !node.change_state(s).await {
                anyhow::bail!("{}: {s} failed", node.fqn);
            }
        }
    }
    let mut lat_ms = Vec::new();
    let mut seqs = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await else {
            continue;
        };
        let now = to_duration(&wall_now());
        let stamp = to_duration(&msg.header.stamp);
        lat_ms.push(now.saturating_sub(stamp).as_secs_f64() * 1e3);
        seqs.push(msg.frame_seq);
    }
    let missing = seqs
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
        .sum::<u64>();
    probe.stop();
    for n in [detector, camera, sim] {
        n.stop().await;
    }
    if lat_ms.is_empty() {
        anyhow::bail!("no DetectionArray arrived");
    }
    Ok(serde_json::json!({
        "arrays": lat_ms.len(),
        "frames_missing": missing,
        "latency_ms_p50": quantile(&lat_ms, 0.5),
        "latency_ms_p99": quantile(&lat_ms, 0.99),
        "latency_ms_max": quantile(&lat_ms, 1.0),
    }))
}

fn main() -> anyhow::Result<()> {
    cncpick::kit::app::init_tracing_at(Some("warn"));
    let dir = std::path::Path::new("target/bench-perception");
    let t = throughput(dir)?;
    println!("throughput: {t}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let l = rt.block_on(latency(15.0))?;
    println!("latency: {l}");
    let mut all = t;
    if let (Some(a), Some(b)) = (all.as_object_mut(), l.as_object()) {
        a.extend(b.clone());
    }
    println!("{all}");
    Ok(())
}
