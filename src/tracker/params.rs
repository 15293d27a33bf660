//! Parameters of the `tracker` node. [`TrackerParams::config`] turns them
//! into the core's [`TrackerConfig`]; the CNC reach windows are only drawn
//! in rviz.

use super::core::TrackerConfig;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{same_lengths, NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackerParams {
    pub heartbeat_period_s: f64,
    pub detections_topic: String,
    pub encoder_topic: String,
    pub encoder_timeout_s: f64,
    pub speed_period_s: f64,
    pub markers_period_s: f64,
    pub view_x_min_m: f64,
    pub view_x_max_m: f64,
    pub belt_length_m: f64,
    pub belt_width_m: f64,
    pub lanes: i64,
    pub gate_chi2: f64,
    pub gate_distance_m: f64,
    pub measurement_stddev_m: f64,
    pub accel_stddev_mps2: f64,
    pub confirm_hits: i64,
    pub tentative_misses: i64,
    pub trigger_watch_for_object_s: f64,
    pub initial_speed_mps: f64,
    pub speed_baseline_s: f64,
    pub speed_window_s: f64,
    pub speed_steady_window_s: f64,
    pub stop_mps: f64,
    pub duplicate_distance_m: f64,
    pub register_service: String,
    pub register_timeout_s: f64,
    pub register_attempts: i64,
    pub register_requeue_s: f64,
    pub cnc_ids: Vec<String>,
    pub cnc_x_min_m: Vec<f64>,
    pub cnc_x_max_m: Vec<f64>,
}

impl Default for TrackerParams {
    fn default() -> Self {
        let c = TrackerConfig::default();
        TrackerParams {
            heartbeat_period_s: 1.0,
            detections_topic: "detections".into(),
            encoder_topic: "belt/encoder".into(),
            encoder_timeout_s: c.encoder_timeout_s,
            speed_period_s: 0.1,
            markers_period_s: 0.1,
            view_x_min_m: c.view_x_m.0,
            view_x_max_m: c.view_x_m.1,
            belt_length_m: c.belt_length_m,
            belt_width_m: c.belt_width_m,
            lanes: c.lanes as i64,
            gate_chi2: c.gate_chi2,
            gate_distance_m: c.gate_distance_m,
            measurement_stddev_m: c.measurement_stddev_m,
            accel_stddev_mps2: c.accel_stddev_mps2,
            confirm_hits: c.confirm_hits as i64,
            tentative_misses: c.tentative_misses as i64,
            trigger_watch_for_object_s: c.lost_after_s,
            initial_speed_mps: c.initial_speed_mps,
            speed_baseline_s: c.speed_baseline_s,
            speed_window_s: c.speed_window_s,
            speed_steady_window_s: c.speed_steady_window_s,
            stop_mps: c.stop_mps,
            duplicate_distance_m: c.duplicate_distance_m,
            register_service: "state_manager/register_object".into(),
            register_timeout_s: 2.0,
            register_attempts: 4,
            register_requeue_s: 5.0,
            cnc_ids: vec!["1".into(), "2".into()],
            cnc_x_min_m: vec![2.0, 2.8],
            cnc_x_max_m: vec![2.6, 3.4],
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new("detections_topic", "The detector's DetectionArray topic").read_only(),
    Spec::new(
        "encoder_topic",
        "A belt encoder's BeltSpeed topic, which takes precedence while fresh; empty for none",
    )
    .read_only(),
    Spec::new(
        "encoder_timeout_s",
        "An encoder reading older than this (by stamps) gives way to vision, s",
    )
    .range(0.01, 60.0),
    Spec::new("speed_period_s", "Period of belt/speed, s").range(0.005, 10.0),
    Spec::new("markers_period_s", "Period of the rviz markers, s").range(0.01, 10.0),
    Spec::new(
        "view_x_min_m",
        "Upstream edge of the camera's view on the belt, m",
    )
    .range(-100.0, 100.0),
    Spec::new(
        "view_x_max_m",
        "Downstream edge of the camera's view on the belt, m",
    )
    .range(-100.0, 100.0),
    Spec::new(
        "belt_length_m",
        "Belt length: a track past its end is deleted, m",
    )
    .range(0.1, 1000.0),
    Spec::new("belt_width_m", "Belt width (lanes split it evenly), m").range(0.05, 5.0),
    Spec::new("lanes", "Lanes across the belt").range(1.0, 32.0),
    Spec::new(
        "gate_chi2",
        "Squared Mahalanobis gate for matching a detection to a track (2 dof)",
    )
    .range(0.1, 1000.0),
    Spec::new(
        "gate_distance_m",
        "And no further than this from the prediction, m",
    )
    .range(0.0001, 1.0),
    Spec::new(
        "measurement_stddev_m",
        "Detection position noise, standard deviation, m",
    )
    .range(1e-6, 0.1),
    Spec::new(
        "accel_stddev_mps2",
        "Track acceleration noise, standard deviation, m/s²",
    )
    .range(1e-4, 100.0),
    Spec::new(
        "confirm_hits",
        "Detections that confirm a track (and register it)",
    )
    .range(1.0, 100.0),
    Spec::new(
        "tentative_misses",
        "Frames in view without a detection that drop a tentative track",
    )
    .range(1.0, 100.0),
    Spec::new(
        "trigger_watch_for_object_s",
        "A confirmed track expected in view but unseen this long is lost, s",
    )
    .range(0.01, 3600.0),
    Spec::new(
        "initial_speed_mps",
        "Belt speed assumed before it is measured, m/s",
    )
    .range(-10.0, 10.0),
    Spec::new(
        "speed_baseline_s",
        "Each speed sample is a track's move over about this long, s",
    )
    .range(0.01, 10.0),
    Spec::new(
        "speed_window_s",
        "The speed estimate uses the samples of this long, s",
    )
    .range(0.01, 10.0),
    Spec::new(
        "speed_steady_window_s",
        "While the speed is steady, the estimate uses samples of this long, s",
    )
    .range(0.01, 60.0),
    Spec::new("stop_mps", "Below this the belt counts as stopped, m/s").range(0.0, 1.0),
    Spec::new(
        "duplicate_distance_m",
        "A new detection this close to a live track is that object again, m",
    )
    .range(0.0, 1.0),
    Spec::new(
        "register_service",
        "The state manager's RegisterObject service; empty to register nothing",
    )
    .read_only(),
    Spec::new(
        "register_timeout_s",
        "Bound on each RegisterObject attempt, s",
    )
    .range(0.01, 60.0),
    Spec::new(
        "register_attempts",
        "RegisterObject attempts per round (with backoff)",
    )
    .range(1.0, 100.0),
    Spec::new(
        "register_requeue_s",
        "After a round fails, try again while the track lives: after 0.25 s, doubling up to this, s",
    )
    .range(0.01, 3600.0),
    Spec::new("cnc_ids", "CNC ids, for their reach windows in rviz"),
    Spec::new(
        "cnc_x_min_m",
        "Each CNC's reach window start along the belt, m",
    )
    .range(-100.0, 1000.0),
    Spec::new(
        "cnc_x_max_m",
        "Each CNC's reach window end along the belt, m",
    )
    .range(-100.0, 1000.0),
];

impl TrackerParams {
    /// The core's configuration; every refusal names the parameters.
    pub fn config(&self) -> Result<TrackerConfig, String> {
        if self.view_x_min_m >= self.view_x_max_m {
            return Err(format!(
                "view_x_min_m {} is not below view_x_max_m {}",
                self.view_x_min_m, self.view_x_max_m
            ));
        }
        if self.view_x_max_m > self.belt_length_m || self.view_x_min_m < 0.0 {
            return Err(format!(
                "view_x_min_m, view_x_max_m: the view [{}, {}] m is not on the belt [0, {}] m \
                 (belt_length_m)",
                self.view_x_min_m, self.view_x_max_m, self.belt_length_m
            ));
        }
        if self.speed_window_s < self.speed_baseline_s / 4.0 {
            return Err(format!(
                "speed_window_s {} is under a quarter of speed_baseline_s {}: too few samples \
                 would be averaged",
                self.speed_window_s, self.speed_baseline_s
            ));
        }
        let n = same_lengths(&[
            ("cnc_ids", self.cnc_ids.len()),
            ("cnc_x_min_m", self.cnc_x_min_m.len()),
            ("cnc_x_max_m", self.cnc_x_max_m.len()),
        ])?;
        for i in 0..n {
            if self.cnc_x_min_m[i] >= self.cnc_x_max_m[i] {
                return Err(format!(
                    "cnc_x_min_m[{i}] {} is not below cnc_x_max_m[{i}] {} (CNC {})",
                    self.cnc_x_min_m[i], self.cnc_x_max_m[i], self.cnc_ids[i]
                ));
            }
        }
        Ok(TrackerConfig {
            view_x_m: (self.view_x_min_m, self.view_x_max_m),
            belt_length_m: self.belt_length_m,
            belt_width_m: self.belt_width_m,
            lanes: self.lanes as u32,
            gate_chi2: self.gate_chi2,
            gate_distance_m: self.gate_distance_m,
            measurement_stddev_m: self.measurement_stddev_m,
            accel_stddev_mps2: self.accel_stddev_mps2,
            confirm_hits: self.confirm_hits as u32,
            tentative_misses: self.tentative_misses as u32,
            lost_after_s: self.trigger_watch_for_object_s,
            initial_speed_mps: self.initial_speed_mps,
            speed_baseline_s: self.speed_baseline_s,
            speed_window_s: self.speed_window_s,
            speed_steady_window_s: self.speed_steady_window_s,
            stop_mps: self.stop_mps,
            duplicate_distance_m: self.duplicate_distance_m,
            encoder_timeout_s: self.encoder_timeout_s,
        })
    }

    /// The tracker's parameters for the simulated cell `sim`: its camera's
    /// view, its belt, its CNC windows and its nominal speed.
    pub fn for_sim(sim: &crate::sim::params::SimConfig) -> TrackerParams {
        let c = &sim.camera;
        TrackerParams {
            view_x_min_m: c.x_min_m,
            view_x_max_m: c.x_min_m + c.width_px as f64 * c.m_per_px,
            belt_length_m: sim.belt_length_m,
            belt_width_m: sim.belt_width_m,
            lanes: sim.lanes as i64,
            initial_speed_mps: sim.speed_nominal_mps,
            cnc_ids: sim.cncs.iter().map(|k| k.id.clone()).collect(),
            cnc_x_min_m: sim.cncs.iter().map(|k| k.x_min_m).collect(),
            cnc_x_max_m: sim.cncs.iter().map(|k| k.x_max_m).collect(),
            ..TrackerParams::default()
        }
    }
}

impl NodeParams for TrackerParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        self.config().map(|_| ())
    }
}

impl KitParams for TrackerParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}
