//! Writes the camera's view of a simulated run to a video file plus its
//! ground truth, for tests and tools that read a file source: `video.avi`
//! (Motion-JPEG, OpenCV's own encoder; or FFV1, lossless, through FFmpeg,
//! when a replay must give back the very same pixels), `truth.jsonl` (one line per frame,
//! dropped frames marked and absent from the video) and `camera.json` (the
//! belt ↔ pixel homography and four point correspondences).

use super::cell::SimCore;
use super::params::SimConfig;
use super::render::Renderer;
use super::truth::TruthLog;
use anyhow::Context as _;
use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::videoio::VideoWriter;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub video: PathBuf,
    pub truth: PathBuf,
    pub camera: PathBuf,
    pub frames: u64,
    pub frames_written: u64,
}

/// The camera geometry as JSON: the homography both ways (row-major) and
/// the belt points of the image's four corner pixels.
pub fn camera_json(r: &Renderer) -> serde_json::Value {
    let g = &r.geometry;
    let (w, h) = (
        r.spec().width_px as f64 - 1.0,
        r.spec().height_px as f64 - 1.0,
    );
    let rows = |m: &nalgebra::Matrix3<f64>| -> Vec<Vec<f64>> {
        (0..3)
            .map(|i| (0..3).map(|j| m[(i, j)]).collect())
            .collect()
    };
    let corners: Vec<serde_json::Value> = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
        .iter()
        .map(|&(u, v)| {
            let (x, y) = g.belt_of(u, v);
            serde_json::json!({"pixel": [u, v], "belt_m": [x, y]})
        })
        .collect();
    serde_json::json!({
        "width_px": r.spec().width_px,
        "height_px": r.spec().height_px,
        "fps": r.spec().fps,
        "belt_to_px": rows(&g.belt_to_px),
        "px_to_belt": rows(&g.px_to_belt),
        "correspondences": corners,
    })
}

/// How the video is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Motion-JPEG: small, lossy.
    #[default]
    Mjpg,
    /// FFV1 in BGR: lossless, large.
    Ffv1,
}

impl Codec {
    pub fn parse(s: &str) -> Option<Codec> {
        match s {
            "mjpg" => Some(Codec::Mjpg),
            "ffv1" => Some(Codec::Ffv1),
            _ => None,
        }
    }
}

/// Simulates `seconds` of the cell (no CNCs move) and writes the files
/// into `dir`.
pub fn record(cfg: SimConfig, seconds: f64, dir: &Path) -> anyhow::Result<Recording> {
    record_with(cfg, seconds, dir, Codec::Mjpg)
}

/// As [`record`], in `codec`.
pub fn record_with(
    cfg: SimConfig,
    seconds: f64,
    dir: &Path,
    codec: Codec,
) -> anyhow::Result<Recording> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let video = dir.join("video.avi");
    let truth = dir.join("truth.jsonl");
    let camera = dir.join("camera.json");
    let mut renderer = Renderer::for_config(&cfg)?;
    std::fs::write(
        &camera,
        serde_json::to_string_pretty(&camera_json(&renderer))?,
    )
    .with_context(|| format!("writing {}", camera.display()))?;
    let fourcc = match codec {
        Codec::Mjpg => VideoWriter::fourcc('M', 'J', 'P', 'G')?,
        Codec::Ffv1 => VideoWriter::fourcc('F', 'F', 'V', '1')?,
    };
    let size = Size::new(cfg.camera.width_px as i32, cfg.camera.height_px as i32);
    let path = video.to_str().context("the video path is not UTF-8")?;
    let mut writer = VideoWriter::new(path, fourcc, cfg.camera.fps, size, true)?;
    if !writer.is_opened()? {
        anyhow::bail!(
            "{}: OpenCV cannot write a {codec:?} AVI here",
            video.display()
        );
    }
    let mut log = TruthLog::create(&truth)?;
    let frames = (seconds * cfg.camera.fps).round().max(0.0) as u64;
    let mut core = SimCore::new(cfg);
    let mut image = Mat::default();
    let mut written = 0;
    for k in 0..frames {
        let t = core.frame_time_s(k);
        // Faults that act on emulators have nothing to act on here.
        let _ = core.advance_to(t);
        let (frame, drawn) = core.frame(k);
        if frame.delivered {
            renderer.render(k, t, &drawn, &mut image)?;
            writer.write(&image)?;
            written += 1;
        }
        log.write(&frame)?;
    }
    writer.release()?;
    log.flush()?;
    Ok(Recording {
        video,
        truth,
        camera,
        frames,
        frames_written: written,
    })
}
