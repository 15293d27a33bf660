//! bench/run bags: recording 1280×720 images.
//!
//! 1. **While the cell runs:** the main job (`cncpick run --record
//!    --record-images`, release build, the simulated cell at 30 fps) records
//!    every cncpick topic with its camera images; from the bag: images and
//!    MB recorded per second, and what the recorder dropped. The same run
//!    without recording, and with the default recording (no images): does
//!    recording slow the cell? (exposure → registered latency, p50).
//! 2. **Writer against writer, on the same messages:** the first 150 images
//!    of that bag written by our bag writer and by the `rosbags` writer
//!    (bench/bags_peer.py), uncompressed and with zstd, 3 rounds each
//!    (medians).

use cncpick::bag::reader;
use cncpick::bag::writer::{BagWriter, Compression, WriterOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

const RUN_S: f64 = 20.0;
const N: usize = 150;
const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How the main job records.
#[derive(Clone, Copy, PartialEq)]
enum Recording {
    Off,
    Topics,
    WithImages,
}

/// The main job for RUN_S; returns its report and stdout.
fn main_job(dir: &Path, rec: Recording) -> anyhow::Result<(serde_json::Value, String)> {
    let mut cmd = std::process::Command::new("target/release/cncpick");
    cmd.args([
        "run",
        "--duration-s",
        &RUN_S.to_string(),
        "--no-progress",
        "--metrics-bind",
        "",
    ])
    .arg("--out")
    .arg(dir.join("out"));
    if rec != Recording::Off {
        cmd.arg("--record").arg(dir.join("bag"));
    }
    if rec == Recording::WithImages {
        cmd.arg("--record-images");
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "the run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json"))?)?;
    Ok((report, stdout))
}

/// The run's exposure → registered latency, p50 ms.
fn latency_p50_ms(report: &serde_json::Value) -> f64 {
    report["exposure_to_registered_ms"]["p50"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// The run that records images: the bag, what the recorder dropped, the report.
fn live_run(dir: &Path) -> anyhow::Result<(PathBuf, u64, serde_json::Value)> {
    let (report, stdout) = main_job(dir, Recording::WithImages)?;
    // "cncpick: recorded N messages on K topics into DIR (D dropped)"
    let dropped = stdout
        .lines()
        .find(|l| l.contains("recorded") && l.contains("dropped"))
        .and_then(|l| l.rsplit('(').next())
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no recorder summary in:\n{stdout}"))?;
    Ok((dir.join("bag"), dropped, report))
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cncpick-bench-bags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Does recording slow the cell? The same run without, and with the
    // default recording (every topic but images).
    let mut p50 = Vec::new();
    for (name, rec) in [("off", Recording::Off), ("topics", Recording::Topics)] {
        eprintln!("bags: the simulated cell for {RUN_S} s, recording {name}");
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        p50.push(latency_p50_ms(&main_job(&d, rec)?.0));
    }
    eprintln!("bags: running the simulated cell for {RUN_S} s, recording with images");
    let (bag_dir, dropped, with_images) = live_run(&dir)?;
    p50.push(latency_p50_ms(&with_images));
    eprintln!("bags: exposure -> registered p50: {p50:.1?} ms (off, topics, with images)");
    let bag = reader::open(&bag_dir).map_err(anyhow::Error::msg)?;
    bag.sound().map_err(anyhow::Error::msg)?;
    let images = bag
        .topics
        .iter()
        .position(|t| t.type_name == "sensor_msgs/msg/Image")
        .ok_or_else(|| anyhow::anyhow!("no images in the bag"))?;
    let frames: Vec<_> = bag.messages.iter().filter(|m| m.topic == images).collect();
    anyhow::ensure!(frames.len() > N, "only {} images recorded", frames.len());
    let span_s = (frames[frames.len() - 1].log_time_ns - frames[0].log_time_ns) as f64 / 1e9;
    let image_bytes: usize = frames.iter().map(|m| m.data.len()).sum();
    let live_fps = (frames.len() - 1) as f64 / span_s;
    let live_mbps = image_bytes as f64 / 1e6 / span_s;
    let all_bytes: usize = bag.messages.iter().map(|m| m.data.len()).sum();
    eprintln!(
        "bags: live: {} images in {span_s:.1} s ({live_fps:.1}/s, {live_mbps:.1} MB/s), {} messages in all, {dropped} dropped",
        frames.len(),
        bag.messages.len()
    );

    // Writer against writer, on the same first N images.
    let msgs: Vec<(u64, &[u8])> = frames
        .iter()
        .take(N)
        .map(|m| (m.log_time_ns, m.data.as_slice()))
        .collect();
    let bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
    let topic = &bag.topics[images];
    let mut ours = std::collections::BTreeMap::new();
    for (name, c) in [("none", Compression::None), ("zstd", Compression::Zstd)] {
        let mut secs = Vec::new();
        for r in 0..ROUNDS {
            let out = dir.join(format!("ours-{name}-{r}"));
            let t0 = Instant::now();
            let mut w = BagWriter::create(
                &out,
                WriterOptions {
                    compression: c,
                    ..WriterOptions::default()
                },
            )
            .map_err(anyhow::Error::msg)?;
            let i = w
                .add_topic_with(
                    &topic.name,
                    &topic.type_name,
                    &topic.offered_qos,
                    topic.definition.clone(),
                )
                .map_err(anyhow::Error::msg)?;
            for (t, data) in &msgs {
                w.write(i, *t, data).map_err(anyhow::Error::msg)?;
            }
            w.close().map_err(anyhow::Error::msg)?;
            secs.push(t0.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&out)?;
        }
        ours.insert(name, secs);
    }
    let peer = std::process::Command::new("python3")
        .arg("bench/bags_peer.py")
        .arg(&bag_dir)
        .arg(N.to_string())
        .arg(ROUNDS.to_string())
        .output()?;
    anyhow::ensure!(
        peer.status.success(),
        "the rosbags peer failed: {}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let p: serde_json::Value =
        serde_json::from_str(String::from_utf8(peer.stdout)?.lines().last().unwrap_or(""))?;
    anyhow::ensure!(
        p["bytes"].as_u64() == Some(bytes as u64),
        "the peer read other messages: {p}"
    );
    let theirs = |k: &str| -> anyhow::Result<f64> {
        Ok(median(serde_json::from_value(
            p[format!("seconds_{k}")].clone(),
        )?))
    };
    let mb = bytes as f64 / 1e6;
    let (o_none, o_zstd) = (median(ours["none"].clone()), median(ours["zstd"].clone()));
    let (t_none, t_zstd) = (theirs("none")?, theirs("zstd")?);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({
            "live_run_s": RUN_S,
            "live_images": frames.len(),
            "live_images_per_s": live_fps,
            "live_image_mb_per_s": live_mbps,
            "live_all_topics_mb_per_s": all_bytes as f64 / 1e6 / span_s,
            "live_dropped_by_recorder": dropped,
            "exposure_to_registered_p50_ms_not_recording": p50[0],
            "exposure_to_registered_p50_ms_recording": p50[1],
            "exposure_to_registered_p50_ms_recording_images": p50[2],
            "ratio_latency_recording_over_not": p50[1] / p50[0],
            "ratio_latency_recording_images_over_not": p50[2] / p50[0],
            "messages_per_round": N,
            "mb_per_round": mb,
            "ours_mb_per_s_none": mb / o_none,
            "ours_msgs_per_s_none": N as f64 / o_none,
            "rosbags_mb_per_s_none": mb / t_none,
            "rosbags_msgs_per_s_none": N as f64 / t_none,
            "ratio_ours_over_rosbags_none": t_none / o_none,
            "ours_mb_per_s_zstd": mb / o_zstd,
            "rosbags_mb_per_s_zstd": mb / t_zstd,
            "ratio_ours_over_rosbags_zstd": t_zstd / o_zstd,
        })
    );
    Ok(())
}
