//! Benchmark: tracker. Feeds the same detections to cncpick's tracker and,
//! in the same run, to two Python trackers from PyPI (motpy and norfair,
//! bench/tracker_peer.py), then scores all three the same way.
//!
//! 1. Identity: the simulator's truth for seeds 1–3 (60 s each at 30 fps,
//!    bursts and twins side by side in a lane) as detections with 1 mm
//!    noise, 5 % of them missed. Each tracker reports, per frame, the tracks it shows in the
//!    camera's view; one scorer (in the peer script) computes ID switches
//!    and IDF1 against the truth for all three.
//! 2. Update time with 10, 100 and 1,000 live tracks: synthetic belts of 1,
//!    10 and 100 lanes with 10 objects in view per lane. The median time of
//!    one frame's update (prediction, gating, assignment, bookkeeping).
//!
//! Prints one JSON object on its last line. Run with `bench/run tracker`
//! (`CNCPICK_BENCH_KEEP=1` keeps the detection and track files).

use cncpick::sim::cell::SimCore;
use cncpick::sim::rng::stream;
use cncpick::tracker::core::{Observation, TrackState, Tracker, TrackerConfig};
use cncpick::tracker::truth::{crowded, observe};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const NOISE_M: f64 = 0.0003;
/// Identity runs: noisier than the detector measures (p95 0.09 mm), and
/// 5 % of detections missed.
const IDENTITY_NOISE_M: f64 = 0.001;
const MISS_PROBABILITY: f64 = 0.05;
const FPS: f64 = 30.0;
const VIEW: (f64, f64) = (0.2, 1.48);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One frame of detections with the truth behind each.
struct Frame {
    t_s: f64,
    obs: Vec<Observation>,
    /// The truth: id and true position of each object in or near the view.
    truth: Vec<(u64, f64, f64)>,
}

fn write_frames(path: &Path, frames: &[Frame]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for fr in frames {
        let d: Vec<_> = fr
            .obs
            .iter()
            .map(|o| json!([o.x_m, o.y_m, o.size_m[0], o.size_m[1], o.class_id]))
            .collect();
        let g: Vec<_> = fr.truth.iter().map(|(i, x, y)| json!([i, x, y])).collect();
        writeln!(f, "{}", json!({"t": fr.t_s, "d": d, "g": g}))?;
    }
    Ok(())
}

fn sim_frames(seed: i64, seconds: f64) -> anyhow::Result<Vec<Frame>> {
    let p = crowded(seed);
    let cfg = p.config().map_err(anyhow::Error::msg)?;
    let mut core = SimCore::new(cfg);
    let mut rng = stream(seed as u64, "bench-detections");
    let mut out = Vec::new();
    for k in 0..(seconds * FPS) as u64 {
        let (truth, _) = core.frame(k);
        let mut obs = observe(&truth, VIEW, IDENTITY_NOISE_M, &mut rng);
        // The detector misses an object now and then.
        obs.retain(|_| !rng.random_bool(MISS_PROBABILITY));
        // The truth: every object on the belt whose centre is in view, and
        // those within 5 cm of it (the scorer's don't-care zone).
        let t = truth
            .objects
            .iter()
            .filter(|o| o.state == "on_belt")
            .filter(|o| (VIEW.0 - 0.05..=VIEW.1 + 0.05).contains(&o.position_m[0]))
            .map(|o| (o.id, o.position_m[0], o.position_m[1]))
            .collect();
        out.push(Frame {
            t_s: truth.t_s,
            obs,
            truth: t,
        });
    }
    Ok(out)
}

/// `per_lane` objects in view in each of `lanes` lanes, riding at 0.2 m/s.
fn synthetic_frames(lanes: usize, per_lane: usize, n: usize) -> Vec<Frame> {
    let spacing = (VIEW.1 - VIEW.0 - 0.04) / per_lane as f64;
    let mut rng = stream(lanes as u64, "bench-synthetic");
    let noise = Normal::new(0.0, NOISE_M).unwrap();
    (0..n)
        .map(|k| {
            let t_s = k as f64 / FPS;
            let mut obs = Vec::new();
            let mut truth = Vec::new();
            for lane in 0..lanes {
                let travel = 0.2 * t_s + spacing * (lane as f64 * 0.37).fract();
                let first = (travel / spacing).floor() as i64;
                for j in 0..per_lane as i64 {
                    let x = VIEW.0 + 0.02 + travel - (first - j) as f64 * spacing;
                    let y = (lane as f64 + 0.5) * 0.15;
                    let id = (lane as u64) << 32 | (first - j + 1000) as u64;
                    let mut object_id = [0u8; 16];
                    object_id[..8].copy_from_slice(&id.to_le_bytes());
                    object_id[8..].copy_from_slice(&(k as u64).to_le_bytes());
                    obs.push(Observation {
                        x_m: x + noise.sample(&mut rng),
                        y_m: y + noise.sample(&mut rng),
                        class_id: "c".into(),
                        confidence: 0.9,
                        size_m: [0.05, 0.05],
                        yaw_rad: 0.0,
                        object_id,
                        vision_id: String::new(),
                    });
                    truth.push((id, x, y));
                }
            }
            Frame { t_s, obs, truth }
        })
        .collect()
}

/// Runs cncpick's tracker over `frames`; returns the per-frame update
/// times (s) and, per frame, the tracks it shows in view: [key, x, y].
/// Per frame: the tracks shown, as (key, x, y).
type Shown = Vec<Vec<(usize, f64, f64)>>;

fn run_ours(cfg: TrackerConfig, frames: &[Frame]) -> (Vec<f64>, Shown, Vec<usize>) {
    let mut tracker = Tracker::new(cfg);
    let mut keys: HashMap<[u8; 16], usize> = HashMap::new();
    let mut times = Vec::with_capacity(frames.len());
    let mut shown = Vec::with_capacity(frames.len());
    let mut live = Vec::with_capacity(frames.len());
    for f in frames {
        let start = Instant::now();
        tracker.step(f.t_s, &f.obs);
        times.push(start.elapsed().as_secs_f64());
        live.push(tracker.tracks().len());
        let mut now = Vec::new();
        for t in tracker.tracks() {
            let p = t.position();
            // Shown in the view and a little beyond (the scorer's don't-care zone).
            if t.state == TrackState::Confirmed && (VIEW.0 - 0.05..=VIEW.1 + 0.05).contains(&p.x) {
                let next = keys.len();
                now.push((*keys.entry(t.object_id).or_insert(next), p.x, p.y));
            }
        }
        shown.push(now);
    }
    (times, shown, live)
}

fn write_shown(path: &Path, shown: &Shown) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for s in shown {
        let v: Vec<_> = s.iter().map(|(k, x, y)| json!([k, x, y])).collect();
        writeln!(f, "{}", serde_json::Value::Array(v))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cncpick-bench-tracker-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let base = TrackerConfig {
        view_x_m: VIEW,
        ..TrackerConfig::default()
    };

    // 1. Identity on sim truth.
    let mut identity_files = Vec::new();
    for seed in [1, 2, 3] {
        let frames = sim_frames(seed, 60.0)?;
        let cfg = TrackerConfig {
            measurement_stddev_m: IDENTITY_NOISE_M,
            ..base.clone()
        };
        let (_, shown, _) = run_ours(cfg, &frames);
        let det = dir.join(format!("identity-{seed}.jsonl"));
        let ours = dir.join(format!("identity-{seed}-ours.jsonl"));
        write_frames(&det, &frames)?;
        write_shown(&ours, &shown)?;
        identity_files.push(json!({"detections": det, "ours": ours}));
        eprintln!("identity seed {seed}: {} frames", frames.len());
    }

    // 2. Update time against live tracks.
    let mut scaling = Vec::new();
    let mut ours_ms = serde_json::Map::new();
    let mut live_tracks = serde_json::Map::new();
    for (lanes, n_frames) in [(1usize, 600usize), (10, 600), (100, 300)] {
        let frames = synthetic_frames(lanes, 10, n_frames);
        let cfg = TrackerConfig {
            belt_length_m: VIEW.1,
            belt_width_m: lanes as f64 * 0.15,
            lanes: lanes as u32,
            ..base.clone()
        };
        // The median of 5 rounds' medians, past the first 2 s (tracks confirmed).
        let mut rounds = Vec::new();
        let mut live = 0;
        for _ in 0..5 {
            let (times, _, l) = run_ours(cfg.clone(), &frames);
            rounds.push(median(times[60..].to_vec()));
            live = median(l[60..].iter().map(|&n| n as f64).collect()) as usize;
        }
        let key = format!("{}", lanes * 10);
        ours_ms.insert(key.clone(), json!(median(rounds) * 1e3));
        live_tracks.insert(key.clone(), json!(live));
        let det = dir.join(format!("scaling-{key}.jsonl"));
        write_frames(&det, &frames)?;
        scaling.push(json!({"tracks": lanes * 10, "detections": det}));
        eprintln!(
            "{key} tracks: ours {:.3} ms per update",
            ours_ms[&key].as_f64().unwrap_or(0.0)
        );
    }

    // The peers, on the same files; they also score every tracker's identity.
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        serde_json::to_string(
            &json!({"identity": identity_files, "scaling": scaling, "fps": FPS, "view": [VIEW.0, VIEW.1]}),
        )?,
    )?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(repo.join("bench/tracker_peer.py"))
        .arg(&spec)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bench/tracker_peer.py failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let peer: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("{}"))?;
    if std::env::var_os("CNCPICK_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut speedup = serde_json::Map::new();
    for name in ["motpy", "norfair"] {
        let mut r = serde_json::Map::new();
        for (k, v) in &ours_ms {
            if let (Some(p), Some(o)) = (peer["update_ms"][name][k].as_f64(), v.as_f64()) {
                r.insert(k.clone(), json!(p / o));
            }
        }
        speedup.insert(name.into(), serde_json::Value::Object(r));
    }
    let mut peer_ms = peer["update_ms"].clone();
    if let Some(m) = peer_ms.as_object_mut() {
        m.insert("ours".into(), serde_json::Value::Object(ours_ms));
    }
    println!(
        "{}",
        json!({
            "bench": "tracker",
            "update_ms_median": peer_ms,
            "live_tracks": live_tracks,
            "speedup_vs": speedup,
            "identity": peer["identity"],
        })
    );
    Ok(())
}
