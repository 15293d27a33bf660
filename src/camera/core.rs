//! The camera's pure core: which source, and frame timing (dropped frames
//! from gaps in exposure stamps, and the pace of a file's playback).

use std::path::PathBuf;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The simulated cell's rendered frames (`sim/image_raw`).
    Sim,
    /// A video file through OpenCV's VideoCapture.
    File(PathBuf),
    /// A V4L2 device (`/dev/videoN`) through OpenCV's VideoCapture.
    V4l2(PathBuf),
}

impl SourceSpec {
    /// `sim`, `file:<path>` or `v4l2:<device>`.
    pub fn parse(s: &str) -> Result<SourceSpec, String> {
        if s == "sim" {
            return Ok(SourceSpec::Sim);
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err("file: needs a path, e.g. file:/data/belt.avi".into());
            }
            return Ok(SourceSpec::File(p.into()));
        }
        if let Some(p) = s.strip_prefix("v4l2:") {
            if p.is_empty() {
                return Err("v4l2: needs a device, e.g. v4l2:/dev/video0".into());
            }
            return Ok(SourceSpec::V4l2(p.into()));
        }
        Err(format!(
            "{s:?} is not a source: use sim, file:<video> or v4l2:<device>"
        ))
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Sim => write!(f, "sim"),
            SourceSpec::File(p) => write!(f, "file:{}", p.display()),
            SourceSpec::V4l2(p) => write!(f, "v4l2:{}", p.display()),
        }
    }
}

/// Counts frames missing from a stream with a nominal period, from the
/// gaps between consecutive exposure stamps.
#[derive(Debug, Clone, PartialEq)]
pub struct DropCounter {
    period_s: f64,
    last_s: Option<f64>,
    pub frames: u64,
    pub dropped: u64,
    /// Frames stamped at or before the one before them.
    pub out_of_order: u64,
}

impl DropCounter {
    pub fn new(fps: f64) -> Self {
        DropCounter {
            period_s: if fps > 0.0 { 1.0 / fps } else { 0.0 },
            last_s: None,
            frames: 0,
            dropped: 0,
            out_of_order: 0,
        }
    }

    /// A frame exposed at `stamp_s`; returns how many frames went missing
    /// just before it.
    pub fn frame(&mut self, stamp_s: f64) -> u64 {
        self.frames += 1;
        let missing = match self.last_s {
            Some(last) if stamp_s <= last => {
                self.out_of_order += 1;
                return 0;
            }
            Some(last) if self.period_s > 0.0 => {
                let periods = ((stamp_s - last) / self.period_s).round();
                (periods as u64).saturating_sub(1)
            }
            _ => 0,
        };
        self.last_s = Some(stamp_s);
        self.dropped += missing;
        missing
    }
}

/// When frame `k` of a file played at `fps` is due, s after playback began.
pub fn due_s(k: u64, fps: f64) -> f64 {
    k as f64 / fps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_bad_ones_say_what_to_write() {
        assert_eq!(SourceSpec::parse("sim").unwrap(), SourceSpec::Sim);
        assert_eq!(
            SourceSpec::parse("file:/a/b.avi").unwrap(),
            SourceSpec::File("/a/b.avi".into())
        );
        assert_eq!(
            SourceSpec::parse("v4l2:/dev/video0").unwrap(),
            SourceSpec::V4l2("/dev/video0".into())
        );
        assert!(SourceSpec::parse("usb:3")
            .unwrap_err()
            .contains("use sim, file:"));
        assert!(SourceSpec::parse("file:")
            .unwrap_err()
            .contains("needs a path"));
        assert_eq!(SourceSpec::parse("file:/x").unwrap().to_string(), "file:/x");
    }

    #[test]
    fn gaps_in_the_stamps_count_as_dropped_frames() {
        let mut d = DropCounter::new(30.0);
        let p = 1.0 / 30.0;
        assert_eq!(d.frame(10.0), 0);
        assert_eq!(d.frame(10.0 + p), 0);
        // Two frames missing, with some jitter.
        assert_eq!(d.frame(10.0 + 4.0 * p + 0.003), 2);
        // A repeated stamp is out of order, not a drop.
        assert_eq!(d.frame(10.0 + 4.0 * p + 0.003), 0);
        assert_eq!((d.frames, d.dropped, d.out_of_order), (4, 2, 1));
    }
}
