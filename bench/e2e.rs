//! bench/run e2e: the whole simulated cell, end to end.
//!
//! 1. **The main job with four CNCs** (`cncpick run`, release build,
//!    params/sim.yaml + params/four-cncs.yaml: a 6 m belt, 30 fps at
//!    1280×720, 120 objects/min), 60 s a round, 3 rounds: the exposure →
//!    assignment latency, p50 and p99 (an Assignment carries the exposure
//!    stamp of the frame it was decided on, and is published once the store
//!    took it; the run's observer times it on arrival), with the stages
//!    before it (exposure → detections, → tracks), as medians of the
//!    rounds' figures; the same latency over every round's assignments
//!    together (`exposure_to_assignment_ms_pooled`, from each round's
//!    traces.csv: a round's 57 are too few for a p99 of their own, which
//!    is their second-largest); and the whole cell's RSS
//!    (the main job hosts every node, the simulator and its GRBL emulators
//!    in one process), sampled each second after WARM_S.
//! 2. **The same relay in r2r and in rclpy**, in the same run: a driver
//!    publishes a DetectionArray of 10 detections every 10 ms, stamped when
//!    sent, to `/bench/relay/in`; the relay (this binary with `relay`, or
//!    bench/relay_peer.py) counts the detections, marks the array and
//!    publishes it on `/bench/relay/out`; the driver times each one back.
//!    Rounds alternate; medians of the rounds' p50 and p99, and the ratio.
//! 3. **The scheduler's core alone**: one more round of the cell with the
//!    scheduler's input log on, replayed through its pure core in this
//!    process, each step timed (`core_*`): how much of tracks → decision is
//!    the scheduler's work rather than the hops between threads.
//!
//! Prints one JSON object on its last line. `bench_e2e quick` makes one
//! short round of each, to check the benchmark itself works.

use cncpick::kit::app::RunningNode;
use cncpick::kit::params::{load, RosArgs};
use cncpick::kit::time::{seconds, wall_now, wall_now_s};
use cncpick::msgs::msg::{Detection, DetectionArray};
use cncpick::sched::core::{Core, Input, Logged, Output};
use cncpick::sched::params::SchedParams;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WARM_S: f64 = 15.0;
const PARAMS_FILES: [&str; 2] = ["params/sim.yaml", "params/four-cncs.yaml"];
const RELAY_PERIOD: Duration = Duration::from_millis(10);

/// How much to run: the benchmark, or a quick check of it.
#[derive(Clone, Copy)]
struct Sizes {
    run_s: f64,
    cell_rounds: usize,
    relay_rounds: usize,
    relay_messages: usize,
    /// The round whose scheduler inputs are logged and replayed, s.
    log_run_s: f64,
}

const FULL: Sizes = Sizes {
    run_s: 60.0,
    cell_rounds: 3,
    relay_rounds: 3,
    relay_messages: 1000,
    log_run_s: 40.0,
};

const QUICK: Sizes = Sizes {
    run_s: 25.0,
    cell_rounds: 1,
    relay_rounds: 1,
    relay_messages: 200,
    log_run_s: 25.0,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// SIGTERM, then a bounded wait (SIGKILL after 10 s).
fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One round of the main job with four CNCs: its report and RSS samples.
fn cell_round(
    dir: &Path,
    run_s: f64,
    extra: &[String],
) -> anyhow::Result<(serde_json::Value, Vec<f64>)> {
    let mut child = Command::new("target/release/cncpick")
        .arg("run")
        .args(PARAMS_FILES.iter().flat_map(|f| ["--params-file", f]))
        .args([
            "--duration-s",
            &run_s.to_string(),
            "--no-progress",
            "--metrics-bind",
            "",
        ])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let t0 = Instant::now();
    let mut rss_mb = Vec::new();
    // Bring-up takes a few seconds, the run run_s more: a bound on both.
    let limit = Duration::from_secs_f64(run_s + 120.0);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > limit {
            terminate(&mut child);
            anyhow::bail!("the main job did not end within {limit:?}");
        }
        // Only while the cell runs (up is written when every node is active).
        if dir.join("up").exists() && t0.elapsed().as_secs_f64() > WARM_S {
            if let Some(kb) = rss_kb(pid) {
                rss_mb.push(kb as f64 / 1024.0);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    anyhow::ensure!(status.success(), "the main job failed ({status}):\n{err}");
    let report = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json"))?)?;
    anyhow::ensure!(!rss_mb.is_empty(), "no RSS sample while the cell ran");
    Ok((report, rss_mb))
}

/// The scheduler's share of tracks → decision, apart from the host's
/// hops: one more round with the scheduler's input log on (its write and
/// flush at every input are on the core's path, so the measured rounds
/// run without it), replayed REPLAYS times through the scheduler's pure
/// core in this process (the same outputs as the live run: the core is
/// deterministic), timing each step. The steps that send an assignment are
/// the ones on the figure's path.
fn core_steps(dir: &Path, run_s: f64) -> anyhow::Result<serde_json::Value> {
    const REPLAYS: usize = 5;
    let log_path = dir.join("scheduler.inputs.jsonl");
    std::fs::create_dir_all(dir)?;
    eprintln!("e2e: the same cell for {run_s} s with the scheduler's inputs logged");
    let extra = [
        "-p".to_string(),
        format!("scheduler.input_log_path:={}", log_path.display()),
    ];
    cell_round(&dir.join("cell"), run_s, &extra)?;
    let args = RosArgs {
        params_files: PARAMS_FILES.iter().map(PathBuf::from).collect(),
        ..RosArgs::default()
    };
    let sp: SchedParams =
        load("/cell/scheduler", &args, |_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = sp
        .config()
        .map_err(|e| anyhow::anyhow!("scheduler params: {e}"))?;
    let text = std::fs::read_to_string(&log_path)?;
    let log = text
        .lines()
        .enumerate()
        .map(|(k, l)| {
            serde_json::from_str::<Logged>(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", log_path.display(), k + 1))
        })
        .collect::<anyhow::Result<Vec<Logged>>>()?;
    let (mut assigning, mut tracks, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPLAYS {
        let mut core = Core::new(cfg.clone());
        let (mut a, mut t, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for l in &log {
            let is_tracks = matches!(l.input, Input::Tracks { .. });
            let input = l.input.clone();
            let t0 = Instant::now();
            let out = core.step(l.now_s, input);
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if out.iter().any(|x| matches!(x, Output::Assign { .. })) {
                a.push(ms);
            }
            if is_tracks {
                t.push(ms)
            } else {
                o.push(ms)
            }
            std::hint::black_box(out);
        }
        assigning.push(a);
        tracks.push(t);
        others.push(o);
    }
    // Medians over the replays of each replay's quantile.
    let fig = |runs: &[Vec<f64>], q: f64| median(runs.iter().map(|r| quantile(r, q)).collect());
    Ok(serde_json::json!({
        "core_inputs_logged": log.len(),
        "core_assigning_steps": assigning.first().map_or(0, Vec::len),
        "core_assigning_step_ms_p50": fig(&assigning, 0.5),
        "core_assigning_step_ms_p99": fig(&assigning, 0.99),
        "core_tracks_step_ms_p50": fig(&tracks, 0.5),
        "core_tracks_step_ms_p99": fig(&tracks, 0.99),
        "core_other_step_ms_p50": fig(&others, 0.5),
        "core_other_step_ms_p99": fig(&others, 0.99),
    }))
}

/// What a relay does to each array: count its detections, mark it.
fn process(mut a: DetectionArray, seen: &mut u64) -> DetectionArray {
    *seen += a.detections.len() as u64;
    a.header.frame_id = "relay_r2r".into();
    a
}

fn qos() -> r2r::QosProfile {
    r2r::QosProfile::default().reliable().keep_last(100)
}

/// `bench_e2e relay`: the r2r relay, until SIGTERM.
fn relay() -> anyhow::Result<()> {
    cncpick::kit::app::run(|ctx| async move {
        let node = RunningNode::start(&ctx, "relay_r2r", "/bench")?;
        let (mut sub, out) = {
            let mut n = node.node.lock();
            (
                n.subscribe::<DetectionArray>("relay/in", qos())?,
                n.create_publisher::<DetectionArray>("relay/out", qos())?,
            )
        };
        println!("relay_r2r: up");
        let work = tokio::spawn(async move {
            let mut seen = 0u64;
            while let Some(a) = sub.next().await {
                if let Err(e) = out.publish(&process(a, &mut seen)) {
                    eprintln!("relay_r2r: publish: {e}");
                }
            }
        });
        cncpick::kit::app::shutdown_signal().await;
        cncpick::kit::app::stop_tasks(vec![work]).await;
        node.stop();
        Ok(())
    })
}

/// One relay round: latencies (ms) of the arrays that came back, and how
/// many did not.
async fn relay_round(
    driver: &RunningNode,
    relay: &mut Child,
    name: &str,
    messages: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let (publisher, mut back) = {
        let mut n = driver.node.lock();
        (
            n.create_publisher::<DetectionArray>("relay/in", qos())?,
            n.subscribe::<DetectionArray>("relay/out", qos())?,
        )
    };
    let array = |seq: u64| {
        let mut a = DetectionArray {
            frame_seq: seq,
            detections: vec![Detection::default(); 10],
            ..Default::default()
        };
        a.header.stamp = wall_now();
        a
    };
    // Until the relay answers (both of its ends matched), at most 60 s.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        anyhow::ensure!(Instant::now() < end, "{name} never relayed a probe");
        if let Some(s) = relay.try_wait()? {
            anyhow::bail!("{name} exited ({s}) before relaying");
        }
        publisher.publish(&array(u64::MAX))?;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), back.next()).await {
            break;
        }
    }
    // Drain stray probes.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), back.next()).await {}
    let collect = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Ok(Some(a)) = tokio::time::timeout(Duration::from_secs(2), back.next()).await {
            if a.frame_seq != u64::MAX {
                lat.push((wall_now_s() - seconds(&a.header.stamp)) * 1e3);
            }
            if a.frame_seq + 1 == messages as u64 {
                break;
            }
        }
        lat
    });
    let mut tick = tokio::time::interval(RELAY_PERIOD);
    for seq in 0..messages as u64 {
        tick.tick().await;
        publisher.publish(&array(seq))?;
    }
    let lat = collect.await?;
    let lost = messages - lat.len();
    Ok((lat, lost))
}

async fn relays(z: Sizes) -> anyhow::Result<serde_json::Value> {
    let ctx = r2r::Context::create()?;
    let driver = RunningNode::start(&ctx, "relay_driver", "/bench")?;
    let exe = std::env::current_exe()?;
    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut lost = [0usize; 2];
    for round in 0..z.relay_rounds {
        for (k, name) in ["relay_r2r", "relay_rclpy"].into_iter().enumerate() {
            let mut cmd = if k == 0 {
                let mut c = Command::new(&exe);
                c.arg("relay");
                c
            } else {
                let mut c = Command::new("python");
                c.arg("bench/relay_peer.py");
                c
            };
            let mut child = cmd.stdout(Stdio::null()).spawn()?;
            let r = relay_round(&driver, &mut child, name, z.relay_messages).await;
            terminate(&mut child);
            let (lat, l) = r?;
            anyhow::ensure!(!lat.is_empty(), "{name}: nothing came back");
            eprintln!(
                "e2e: relay round {round}: {name} p50 {:.3} ms, p99 {:.3} ms, {l} lost",
                quantile(&lat, 0.5),
                quantile(&lat, 0.99)
            );
            p50[k].push(quantile(&lat, 0.5));
            p99[k].push(quantile(&lat, 0.99));
            lost[k] += l;
        }
    }
    driver.stop();
    let (r50, r99) = (median(p50[0].clone()), median(p99[0].clone()));
    let (py50, py99) = (median(p50[1].clone()), median(p99[1].clone()));
    Ok(serde_json::json!({
        "relay_messages_per_round": z.relay_messages,
        "relay_rounds": z.relay_rounds,
        "relay_r2r_ms_p50": r50, "relay_r2r_ms_p99": r99,
        "relay_rclpy_ms_p50": py50, "relay_rclpy_ms_p99": py99,
        "relay_lost_r2r": lost[0], "relay_lost_rclpy": lost[1],
        "relay_ratio_rclpy_over_r2r_p50": py50 / r50,
        "relay_ratio_rclpy_over_r2r_p99": py99 / r99,
    }))
}

/// Each object's first Assignment's age when heard, ms, from a round's
/// `traces.csv` (the `assignment_age_ms` column).
fn assignment_ages(dir: &Path) -> anyhow::Result<Vec<f64>> {
    let path = dir.join("traces.csv");
    let text = std::fs::read_to_string(&path)?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split(',')
        .position(|c| c == "assignment_age_ms")
        .ok_or_else(|| anyhow::anyhow!("{}: no assignment_age_ms column", path.display()))?;
    let mut ages = Vec::new();
    for (k, l) in lines.enumerate() {
        match l.split(',').nth(col) {
            Some("") => {}
            Some(v) => ages.push(v.parse().map_err(|e| {
                anyhow::anyhow!(
                    "{} line {}: assignment_age_ms {v:?}: {e}",
                    path.display(),
                    k + 2
                )
            })?),
            None => anyhow::bail!("{} line {}: too few fields", path.display(), k + 2),
        }
    }
    Ok(ages)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("relay") {
        return relay();
    }
    let z = if std::env::args().nth(1).as_deref() == Some("quick") {
        QUICK
    } else {
        FULL
    };
    cncpick::kit::app::init_tracing_at(Some("warn"));
    let dir = std::env::temp_dir().join(format!("cncpick-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut figures: Vec<serde_json::Value> = Vec::new();
    let mut rss = Vec::new();
    // Every round's assignments together: a round has about 57, too few
    // for a p99 of its own (its p99 is its second-largest).
    let mut ages = Vec::new();
    for round in 0..z.cell_rounds {
        eprintln!(
            "e2e: the simulated cell with four CNCs for {} s (round {round})",
            z.run_s
        );
        let round_dir = dir.join(format!("cell-{round}"));
        let (report, rss_mb) = cell_round(&round_dir, z.run_s, &[])?;
        ages.extend(assignment_ages(&round_dir)?);
        let pct = |k: &str, q: &str| report[k][q].as_f64().unwrap_or(f64::NAN);
        let f = serde_json::json!({
            "assignments": report["exposure_to_assignment_ms"]["n"],
            "exposure_to_assignment_ms_p50": pct("exposure_to_assignment_ms", "p50"),
            "exposure_to_assignment_ms_p99": pct("exposure_to_assignment_ms", "p99"),
            "exposure_to_detections_ms_p50": pct("exposure_to_detections_ms", "p50"),
            "exposure_to_detections_ms_p99": pct("exposure_to_detections_ms", "p99"),
            "exposure_to_tracks_ms_p50": pct("exposure_to_tracks_ms", "p50"),
            "exposure_to_tracks_ms_p99": pct("exposure_to_tracks_ms", "p99"),
            "exposure_to_decision_ms_p50": pct("exposure_to_decision_ms", "p50"),
            "exposure_to_decision_ms_p99": pct("exposure_to_decision_ms", "p99"),
            "decision_to_assignment_ms_p50": pct("decision_to_assignment_ms", "p50"),
            "decision_to_assignment_ms_p99": pct("decision_to_assignment_ms", "p99"),
            "registered_to_assigned_s_p50": pct("registered_to_assigned_s", "p50"),
            "assigned_to_goal_accepted_s_p50": pct("assigned_to_goal_accepted_s", "p50"),
            "picked": report["picked"], "missed": report["missed"], "objects": report["objects"],
            "rss_mb_median": median(rss_mb.clone()),
            "rss_mb_max": rss_mb.iter().cloned().fold(0.0, f64::max),
        });
        eprintln!("e2e: round {round}: {f}");
        rss.extend(rss_mb);
        figures.push(f);
    }
    let med = |k: &str| {
        median(
            figures
                .iter()
                .map(|f| f[k].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    let core = core_steps(&dir.join("logged"), z.log_run_s)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let relay = rt.block_on(relays(z))?;
    let mut all = serde_json::json!({
        "cncs": 4, "fps": 30, "width_px": 1280, "height_px": 720, "run_s": z.run_s,
        "cell_rounds": z.cell_rounds,
        "exposure_to_assignment_ms_p50": med("exposure_to_assignment_ms_p50"),
        "exposure_to_assignment_ms_p99": med("exposure_to_assignment_ms_p99"),
        "exposure_to_detections_ms_p50": med("exposure_to_detections_ms_p50"),
        "exposure_to_detections_ms_p99": med("exposure_to_detections_ms_p99"),
        "exposure_to_tracks_ms_p50": med("exposure_to_tracks_ms_p50"),
        "exposure_to_tracks_ms_p99": med("exposure_to_tracks_ms_p99"),
        "exposure_to_decision_ms_p50": med("exposure_to_decision_ms_p50"),
        "exposure_to_decision_ms_p99": med("exposure_to_decision_ms_p99"),
        "decision_to_assignment_ms_p50": med("decision_to_assignment_ms_p50"),
        "decision_to_assignment_ms_p99": med("decision_to_assignment_ms_p99"),
        "exposure_to_assignment_ms_pooled": serde_json::to_value(
            cncpick::cell::report::Percentiles::of(ages)
        )?,
        "assignments_per_round": med("assignments"),
        "picked_per_round": med("picked"),
        "cell_rss_mb_median": median(rss.clone()),
        "cell_rss_mb_max": rss.iter().cloned().fold(0.0, f64::max),
        "rounds": figures,
    });
    for part in [relay, core] {
        if let (Some(a), Some(b)) = (all.as_object_mut(), part.as_object()) {
            a.extend(b.clone());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{all}");
    Ok(())
}
