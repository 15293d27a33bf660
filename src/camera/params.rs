//! Parameters of the `camera` node.

use super::core::SourceSpec;
use super::source::Wanted;
use crate::kit::lifecycle::Recovery;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraParams {
    pub heartbeat_period_s: f64,
    pub source: String,
    pub loop_file: bool,
    pub fps: f64,
    pub width_px: i64,
    pub height_px: i64,
    pub exposure_s: f64,
    pub frame_id: String,
    pub sim_topic: String,
    pub image_topic: String,
    pub frame_timeout_s: f64,
    pub reconnect_attempts: i64,
    pub reconnect_initial_s: f64,
    pub reconnect_max_s: f64,
}

impl Default for CameraParams {
    fn default() -> Self {
        CameraParams {
            heartbeat_period_s: 1.0,
            source: "sim".into(),
            loop_file: false,
            fps: 30.0,
            width_px: 1280,
            height_px: 720,
            exposure_s: 0.0,
            frame_id: "camera".into(),
            sim_topic: "sim/image_raw".into(),
            image_topic: "camera/image_raw".into(),
            frame_timeout_s: 2.0,
            reconnect_attempts: 10,
            reconnect_initial_s: 0.5,
            reconnect_max_s: 5.0,
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new(
        "source",
        "Where frames come from: sim, file:<video> or v4l2:<device>",
    )
    .read_only(),
    Spec::new("loop_file", "file: start again at the end").read_only(),
    Spec::new(
        "fps",
        "Frame rate: requested of a device, the pace of a file, expected of sim (0: the source's own)",
    )
    .range(0.0, 1000.0)
    .read_only(),
    Spec::new("width_px", "Frame width; other sizes are refused (0: any)")
        .range(0.0, 16384.0)
        .read_only(),
    Spec::new("height_px", "Frame height; other sizes are refused (0: any)")
        .range(0.0, 16384.0)
        .read_only(),
    Spec::new(
        "exposure_s",
        "Manual exposure of a device, s (0: automatic); stamps are the exposure's middle",
    )
    .range(0.0, 1.0)
    .read_only(),
    Spec::new("frame_id", "header.frame_id of the images").read_only(),
    Spec::new("sim_topic", "sim: the simulator's image topic").read_only(),
    Spec::new("image_topic", "The topic the camera publishes").read_only(),
    Spec::new(
        "frame_timeout_s",
        "Active with no frame for this long: the camera is gone (fault, then reconnect), s",
    )
    .range(0.05, 600.0),
    Spec::new(
        "reconnect_attempts",
        "After a fault: attempts to configure and activate again (0: none)",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    crate::kit::node::RECONNECT_INITIAL_SPEC,
    crate::kit::node::RECONNECT_MAX_SPEC,
];

impl CameraParams {
    pub fn source_spec(&self) -> Result<SourceSpec, String> {
        SourceSpec::parse(&self.source).map_err(|e| format!("source: {e}"))
    }

    pub fn wanted(&self) -> Wanted {
        Wanted {
            fps: self.fps,
            width_px: self.width_px as u32,
            height_px: self.height_px as u32,
            exposure_s: self.exposure_s,
        }
    }
}

impl NodeParams for CameraParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        self.source_spec()?;
        if self.reconnect_max_s < self.reconnect_initial_s {
            return Err(format!(
                "reconnect_max_s ({}) is below reconnect_initial_s ({})",
                self.reconnect_max_s, self.reconnect_initial_s
            ));
        }
        Ok(())
    }
}

impl KitParams for CameraParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
    fn recovery(&self) -> Recovery {
        crate::kit::node::reconnect(
            self.reconnect_attempts,
            Duration::from_secs_f64(self.reconnect_initial_s),
            Duration::from_secs_f64(self.reconnect_max_s),
        )
    }
}
