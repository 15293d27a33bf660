//! Ground truth, for scoring: every object's exact pose per frame and what
//! happened to it. Written as JSON lines (one per frame) and published on
//! `sim/truth`.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Arrived,
    /// A nozzle took it off the belt.
    PickedUp,
    /// Released over a bin.
    Binned,
    /// Fell from a nozzle, or was released off the belt and not over a bin.
    Dropped,
    /// Released over the belt: it rides on.
    PutBack,
    /// Left the belt at its end unpicked.
    FellOff,
    /// A vacuum cycle that took nothing.
    MissedPick,
    /// A fault was injected (detail says which).
    Fault,
}

impl EventKind {
    /// The value in cncpick_msgs/TruthEvent.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthEvent {
    pub t_s: f64,
    /// 0 when no object is involved.
    pub object_id: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnc: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl TruthEvent {
    pub fn new(t_s: f64, object_id: u64, kind: EventKind) -> Self {
        TruthEvent {
            t_s,
            object_id,
            kind,
            cnc: None,
            detail: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthObject {
    pub id: u64,
    pub class: String,
    pub lane: u32,
    /// Belt frame; z is the object's top.
    pub position_m: [f64; 3],
    pub yaw_rad: f64,
    pub length_m: f64,
    pub width_m: f64,
    pub velocity_x_mps: f64,
    /// on_belt or held.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnc: Option<String>,
    pub arrived_s: f64,
}

/// The truth at one frame's exposure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    pub frame: u64,
    /// Exposure time, s since the simulation started.
    pub t_s: f64,
    pub belt_speed_mps: f64,
    pub belt_travel_m: f64,
    /// Whether the frame reached the camera output (drop faults).
    pub delivered: bool,
    pub objects: Vec<TruthObject>,
    /// Everything since the previous frame.
    pub events: Vec<TruthEvent>,
}

/// Appends FrameTruth lines to a file.
pub struct TruthLog {
    out: std::io::BufWriter<std::fs::File>,
    path: String,
}

impl TruthLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("truth log {}: {e}", path.display()))
        })?;
        Ok(TruthLog {
            out: std::io::BufWriter::new(file),
            path: path.display().to_string(),
        })
    }

    pub fn write(&mut self, frame: &FrameTruth) -> std::io::Result<()> {
        let line = serde_json::to_string(frame).map_err(std::io::Error::other)?;
        writeln!(self.out, "{line}")
            .map_err(|e| std::io::Error::new(e.kind(), format!("truth log {}: {e}", self.path)))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads a truth log; an error names the file and the line.
pub fn read_log(path: &Path) -> Result<Vec<FrameTruth>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
