//! Parameters of the simulated cell (the `sim` node). Flat ROS parameters:
//! per-class, per-CNC and per-bin values are parallel lists. [`SimParams::
//! config`] checks them together and builds the typed [`SimConfig`]; every
//! refusal names the parameters involved.

use super::faults::{parse_faults, FaultSpec};
use crate::kinematics::MachineFrame;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{same_lengths, NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimParams {
    pub heartbeat_period_s: f64,
    /// Every random stream of the world derives from this.
    pub seed: i64,
    /// Simulated seconds per wall-clock second (world, camera and emulators).
    pub time_scale: f64,

    pub belt_length_m: f64,
    pub belt_width_m: f64,
    pub lanes: i64,
    pub belt_speed_nominal_mps: f64,
    pub speed_profile: String,
    pub speed_drift_fraction: f64,
    pub speed_drift_period_s: f64,
    pub speed_event_at_s: f64,
    pub speed_event_every_s: f64,
    pub speed_event_for_s: f64,
    pub speed_ramp_s: f64,
    pub speed_reverse_fraction: f64,

    pub arrival_rate_per_min: f64,
    pub lane_bias: Vec<f64>,
    pub burst_probability: f64,
    pub burst_size_max: i64,
    pub pair_probability: f64,
    pub min_gap_m: f64,

    pub class_names: Vec<String>,
    pub class_shapes: Vec<String>,
    pub class_colors: Vec<String>,
    pub class_length_m: Vec<f64>,
    pub class_width_m: Vec<f64>,
    pub class_height_m: Vec<f64>,
    pub class_weights: Vec<f64>,

    pub camera_x_min_m: f64,
    pub camera_y_min_m: f64,
    pub camera_m_per_px: f64,
    pub camera_width_px: i64,
    pub camera_height_px: i64,
    pub camera_fps: f64,
    pub noise_stddev: f64,
    pub blur_sigma_px: f64,
    pub lighting_drift_fraction: f64,
    pub lighting_drift_period_s: f64,
    pub occluder_x_m: Vec<f64>,
    pub occluder_width_m: f64,
    pub publish_images: bool,

    pub cnc_ids: Vec<String>,
    pub cnc_x_min_m: Vec<f64>,
    pub cnc_x_max_m: Vec<f64>,
    pub cnc_origin_x_m: Vec<f64>,
    pub cnc_origin_y_m: Vec<f64>,
    pub cnc_origin_z_m: Vec<f64>,
    /// Symlinks made to each emulator's PTY ("" for none).
    pub cnc_pty_links: Vec<String>,
    pub cnc_homing: bool,
    pub cnc_soft_limits: bool,
    pub cnc_max_rate_mm_per_min: f64,
    pub cnc_accel_mm_per_s2: f64,
    /// Homing ($24 locate feed, $25 seek, $26 debounce, $27 pull-off).
    pub cnc_homing_feed_mm_per_min: f64,
    pub cnc_homing_seek_mm_per_min: f64,
    pub cnc_homing_debounce_ms: f64,
    pub cnc_homing_pulloff_mm: f64,

    pub bin_cnc_ids: Vec<String>,
    pub bin_classes: Vec<String>,
    pub bin_x_m: Vec<f64>,
    pub bin_y_m: Vec<f64>,
    pub bin_radius_m: f64,

    pub pick_xy_tolerance_m: f64,
    pub pick_z_tolerance_m: f64,
    pub vacuum_dwell_s: f64,
    pub drop_probability: f64,

    pub faults: Vec<String>,
    pub fault_rate_per_min: f64,
    pub fault_kinds: Vec<String>,
    pub fault_horizon_s: f64,

    /// JSON-lines ground truth, one line per frame ("" for none).
    pub truth_log_path: String,
}

impl Default for SimParams {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        SimParams {
            heartbeat_period_s: 1.0,
            seed: 1,
            time_scale: 1.0,
            belt_length_m: 4.0,
            belt_width_m: 0.6,
            lanes: 4,
            belt_speed_nominal_mps: 0.2,
            speed_profile: "constant".into(),
            speed_drift_fraction: 0.05,
            speed_drift_period_s: 2.0,
            speed_event_at_s: 20.0,
            speed_event_every_s: 60.0,
            speed_event_for_s: 3.0,
            speed_ramp_s: 0.5,
            speed_reverse_fraction: 0.5,
            arrival_rate_per_min: 60.0,
            lane_bias: vec![1.0; 4],
            burst_probability: 0.05,
            pair_probability: 0.0,
            burst_size_max: 3,
            min_gap_m: 0.02,
            class_names: s(&["red_box", "green_disc", "blue_bar"]),
            class_shapes: s(&["box", "disc", "box"]),
            class_colors: s(&["#dc2828", "#28b43c", "#2850dc"]),
            class_length_m: vec![0.06, 0.05, 0.09],
            class_width_m: vec![0.06, 0.05, 0.04],
            class_height_m: vec![0.04, 0.02, 0.03],
            class_weights: vec![1.0, 1.0, 1.0],
            camera_x_min_m: 0.2,
            camera_y_min_m: -0.06,
            camera_m_per_px: 0.001,
            camera_width_px: 1280,
            camera_height_px: 720,
            camera_fps: 30.0,
            noise_stddev: 2.0,
            blur_sigma_px: 0.8,
            lighting_drift_fraction: 0.05,
            lighting_drift_period_s: 30.0,
            occluder_x_m: Vec::new(),
            occluder_width_m: 0.05,
            publish_images: true,
            cnc_ids: s(&["1", "2"]),
            cnc_x_min_m: vec![2.0, 2.8],
            cnc_x_max_m: vec![2.6, 3.4],
            cnc_origin_x_m: vec![2.6, 3.4],
            cnc_origin_y_m: vec![0.75, 0.75],
            cnc_origin_z_m: vec![0.15, 0.15],
            cnc_pty_links: s(&["", ""]),
            cnc_homing: false,
            cnc_soft_limits: true,
            cnc_max_rate_mm_per_min: 30000.0,
            cnc_accel_mm_per_s2: 3000.0,
            cnc_homing_feed_mm_per_min: 600.0,
            cnc_homing_seek_mm_per_min: 10000.0,
            cnc_homing_debounce_ms: 25.0,
            cnc_homing_pulloff_mm: 2.0,
            bin_cnc_ids: s(&["1", "2"]),
            bin_classes: s(&["red_box", "blue_bar"]),
            bin_x_m: vec![2.3, 3.1],
            bin_y_m: vec![0.68, 0.68],
            bin_radius_m: 0.06,
            pick_xy_tolerance_m: 0.01,
            pick_z_tolerance_m: 0.005,
            vacuum_dwell_s: 0.1,
            drop_probability: 0.0,
            faults: Vec::new(),
            fault_rate_per_min: 0.0,
            fault_kinds: s(&["grbl_alarm", "garbage", "vacuum_failure", "frame_drop"]),
            fault_horizon_s: 3600.0,
            truth_log_path: String::new(),
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new("seed", "Seed of every random stream of the world")
        .range(0.0, 9.0e15)
        .read_only(),
    Spec::new("time_scale", "Simulated seconds per wall-clock second")
        .range(0.01, 100.0)
        .read_only(),
    Spec::new("belt_length_m", "Belt length along travel, m")
        .range(0.5, 100.0)
        .read_only(),
    Spec::new("belt_width_m", "Belt width, m")
        .range(0.05, 5.0)
        .read_only(),
    Spec::new("lanes", "Lanes across the belt")
        .range(1.0, 32.0)
        .read_only(),
    Spec::new(
        "belt_speed_nominal_mps",
        "Nominal belt speed, m/s (positive; see speed_profile for reversing)",
    )
    .range(0.001, 5.0)
    .read_only(),
    Spec::new("speed_profile", "Belt speed over time")
        .choices(&["constant", "drift", "stop", "reverse"])
        .read_only(),
    Spec::new(
        "speed_drift_fraction",
        "drift: largest deviation from nominal, fraction",
    )
    .range(0.0, 0.9)
    .read_only(),
    Spec::new(
        "speed_drift_period_s",
        "drift: time between speed set points, s",
    )
    .range(0.1, 3600.0)
    .read_only(),
    Spec::new(
        "speed_event_at_s",
        "stop/reverse: time of the first event, s",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    Spec::new(
        "speed_event_every_s",
        "stop/reverse: period of events, s (0 = once)",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    Spec::new(
        "speed_event_for_s",
        "stop/reverse: how long each event lasts, s",
    )
    .range(0.0, 3600.0)
    .read_only(),
    Spec::new("speed_ramp_s", "Time to change speed at an event, s")
        .range(0.001, 60.0)
        .read_only(),
    Spec::new(
        "speed_reverse_fraction",
        "reverse: backward speed as a fraction of nominal",
    )
    .range(0.0, 1.0)
    .read_only(),
    Spec::new(
        "arrival_rate_per_min",
        "Mean object arrivals per minute at nominal speed",
    )
    .range(0.0, 6000.0)
    .read_only(),
    Spec::new(
        "lane_bias",
        "Relative arrival weight of each lane (one per lane)",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    Spec::new(
        "burst_probability",
        "Chance an arrival is a burst of several objects",
    )
    .range(0.0, 1.0)
    .read_only(),
    Spec::new("burst_size_max", "Largest burst")
        .range(2.0, 50.0)
        .read_only(),
    Spec::new(
        "pair_probability",
        "Chance an object comes with a twin side by side in its lane (if two fit across it)",
    )
    .range(0.0, 1.0)
    .read_only(),
    Spec::new("min_gap_m", "Smallest gap between objects in a lane, m")
        .range(0.0, 1.0)
        .read_only(),
    Spec::new("class_names", "Object classes").read_only(),
    Spec::new("class_shapes", "Shape of each class: box or disc").read_only(),
    Spec::new("class_colors", "Colour of each class, #rrggbb").read_only(),
    Spec::new("class_length_m", "Length of each class (disc: diameter), m")
        .range(0.005, 1.0)
        .read_only(),
    Spec::new("class_width_m", "Width of each class (disc: diameter), m")
        .range(0.005, 1.0)
        .read_only(),
    Spec::new("class_height_m", "Height of each class above the belt, m")
        .range(0.001, 0.5)
        .read_only(),
    Spec::new("class_weights", "Relative frequency of each class")
        .range(0.0, 1.0e6)
        .read_only(),
    Spec::new("camera_x_min_m", "Belt x at the image's left edge, m")
        .range(-10.0, 100.0)
        .read_only(),
    Spec::new("camera_y_min_m", "Belt y at the image's top edge, m")
        .range(-10.0, 10.0)
        .read_only(),
    Spec::new("camera_m_per_px", "Size of a pixel on the belt, m")
        .range(1.0e-5, 0.1)
        .read_only(),
    Spec::new("camera_width_px", "Image width, px")
        .range(16.0, 8192.0)
        .read_only(),
    Spec::new("camera_height_px", "Image height, px")
        .range(16.0, 8192.0)
        .read_only(),
    Spec::new("camera_fps", "Frame rate, frames/s")
        .range(0.5, 240.0)
        .read_only(),
    Spec::new("noise_stddev", "Gaussian pixel noise, grey levels").range(0.0, 50.0),
    Spec::new("blur_sigma_px", "Gaussian blur, px (0 = sharp)").range(0.0, 10.0),
    Spec::new("lighting_drift_fraction", "Slow brightness swing, fraction").range(0.0, 0.5),
    Spec::new(
        "lighting_drift_period_s",
        "Period of the brightness swing, s",
    )
    .range(0.1, 1.0e5),
    Spec::new(
        "occluder_x_m",
        "Belt x of gantry beams drawn across the view, m",
    )
    .range(-10.0, 100.0)
    .read_only(),
    Spec::new("occluder_width_m", "Width of each gantry beam, m")
        .range(0.001, 1.0)
        .read_only(),
    Spec::new("publish_images", "Publish rendered frames on sim/image_raw"),
    Spec::new("cnc_ids", "CNC ids; node cnc_<id> drives each").read_only(),
    Spec::new("cnc_x_min_m", "Upstream end of each CNC's reach window, m")
        .range(-100.0, 100.0)
        .read_only(),
    Spec::new(
        "cnc_x_max_m",
        "Downstream end of each CNC's reach window, m",
    )
    .range(-100.0, 100.0)
    .read_only(),
    Spec::new("cnc_origin_x_m", "Belt x of each CNC's machine zero, m")
        .range(-100.0, 100.0)
        .read_only(),
    Spec::new("cnc_origin_y_m", "Belt y of each CNC's machine zero, m")
        .range(-100.0, 100.0)
        .read_only(),
    Spec::new(
        "cnc_origin_z_m",
        "Height of each CNC's machine zero above the belt, m",
    )
    .range(0.0, 10.0)
    .read_only(),
    Spec::new(
        "cnc_pty_links",
        "Symlink to each emulator's PTY (empty: none)",
    )
    .read_only(),
    Spec::new(
        "cnc_homing",
        "Emulators boot into Alarm until $H or $X ($22=1)",
    )
    .read_only(),
    Spec::new("cnc_soft_limits", "Emulators enforce soft limits ($20=1)").read_only(),
    Spec::new(
        "cnc_max_rate_mm_per_min",
        "Emulators' maximum rate on every axis ($110-$112), mm/min",
    )
    .range(1.0, 1.0e6)
    .read_only(),
    Spec::new(
        "cnc_accel_mm_per_s2",
        "Emulators' acceleration on every axis ($120-$122), mm/s^2",
    )
    .range(1.0, 1.0e6)
    .read_only(),
    Spec::new(
        "cnc_homing_feed_mm_per_min",
        "Emulators' homing locate feed ($24), mm/min",
    )
    .range(1.0, 1.0e6)
    .read_only(),
    Spec::new(
        "cnc_homing_seek_mm_per_min",
        "Emulators' homing seek rate ($25), mm/min",
    )
    .range(1.0, 1.0e6)
    .read_only(),
    Spec::new(
        "cnc_homing_debounce_ms",
        "Emulators' homing switch debounce delay ($26), ms",
    )
    .range(0.0, 65535.0)
    .read_only(),
    Spec::new(
        "cnc_homing_pulloff_mm",
        "Emulators' homing pull-off distance ($27), mm",
    )
    .range(0.0, 1000.0)
    .read_only(),
    Spec::new("bin_cnc_ids", "The CNC each bin belongs to").read_only(),
    Spec::new("bin_classes", "The class each bin takes").read_only(),
    Spec::new("bin_x_m", "Belt x of each bin's centre, m")
        .range(-100.0, 100.0)
        .read_only(),
    Spec::new(
        "bin_y_m",
        "Belt y of each bin's centre, m (beside the belt)",
    )
    .range(-100.0, 100.0)
    .read_only(),
    Spec::new("bin_radius_m", "Radius of every bin's opening, m")
        .range(0.005, 2.0)
        .read_only(),
    Spec::new(
        "pick_xy_tolerance_m",
        "Nozzle to object centre, across the belt plane, for a pick, m",
    )
    .range(0.0, 0.5),
    Spec::new(
        "pick_z_tolerance_m",
        "Nozzle height above the object's top for a pick, m",
    )
    .range(0.0, 0.5),
    Spec::new(
        "vacuum_dwell_s",
        "Contact time with vacuum on that a pick needs, s",
    )
    .range(0.0, 10.0),
    Spec::new(
        "drop_probability",
        "Chance a picked object drops on the way to its bin",
    )
    .range(0.0, 1.0),
    Spec::new(
        "faults",
        "Scheduled faults: \"<at_s> <kind> [key=value ...]\"",
    )
    .read_only(),
    Spec::new("fault_rate_per_min", "Random faults per minute (chaos)")
        .range(0.0, 600.0)
        .read_only(),
    Spec::new("fault_kinds", "Kinds of random fault").read_only(),
    Spec::new(
        "fault_horizon_s",
        "Random faults are drawn up to this time, s",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    Spec::new(
        "truth_log_path",
        "Ground truth as JSON lines, one per frame (empty: none)",
    )
    .read_only(),
];

/// One class of object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectClass {
    pub name: String,
    pub shape: Shape,
    /// Blue, green, red.
    pub color_bgr: [u8; 3],
    pub length_m: f64,
    pub width_m: f64,
    pub height_m: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Box,
    Disc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CncSpec {
    pub id: String,
    pub x_min_m: f64,
    pub x_max_m: f64,
    pub frame: MachineFrame,
    pub pty_link: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub cnc: usize,
    pub class: usize,
    pub x_m: f64,
    pub y_m: f64,
}

/// The belt's speed over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpeedProfile {
    Constant,
    Drift { fraction: f64, period_s: f64 },
    Stop(Events),
    Reverse(Events, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Events {
    pub at_s: f64,
    pub every_s: f64,
    pub for_s: f64,
}

/// The checked, typed form of [`SimParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub belt_length_m: f64,
    pub belt_width_m: f64,
    pub lanes: usize,
    pub speed_nominal_mps: f64,
    pub profile: SpeedProfile,
    pub ramp_s: f64,
    pub arrival_rate_per_min: f64,
    pub lane_bias: Vec<f64>,
    pub burst_probability: f64,
    pub burst_size_max: usize,
    pub pair_probability: f64,
    pub min_gap_m: f64,
    pub classes: Vec<ObjectClass>,
    pub camera: CameraSpec,
    pub cncs: Vec<CncSpec>,
    pub bins: Vec<Bin>,
    pub bin_radius_m: f64,
    pub vacuum: VacuumSpec,
    pub faults: Vec<FaultSpec>,
    pub fault_rate_per_min: f64,
    pub fault_kinds: Vec<String>,
    pub fault_horizon_s: f64,
    pub grbl: GrblSetup,
}

/// How the emulated boards are set up ($-settings every CNC shares).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrblSetup {
    pub homing: bool,
    pub soft_limits: bool,
    pub max_rate_mm_per_min: f64,
    pub accel_mm_per_s2: f64,
    pub homing_feed_mm_per_min: f64,
    pub homing_seek_mm_per_min: f64,
    pub homing_debounce_ms: f64,
    pub homing_pulloff_mm: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    pub x_min_m: f64,
    pub y_min_m: f64,
    pub m_per_px: f64,
    pub width_px: u32,
    pub height_px: u32,
    pub fps: f64,
    pub noise_stddev: f64,
    pub blur_sigma_px: f64,
    pub lighting_drift_fraction: f64,
    pub lighting_drift_period_s: f64,
    pub occluder_x_m: Vec<f64>,
    pub occluder_width_m: f64,
}

impl CameraSpec {
    /// The belt x range the image covers.
    pub fn view_x_m(&self) -> (f64, f64) {
        (
            self.x_min_m,
            self.x_min_m + self.width_px as f64 * self.m_per_px,
        )
    }
    pub fn view_y_m(&self) -> (f64, f64) {
        (
            self.y_min_m,
            self.y_min_m + self.height_px as f64 * self.m_per_px,
        )
    }
    pub fn frame_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VacuumSpec {
    pub xy_tolerance_m: f64,
    pub z_tolerance_m: f64,
    pub dwell_s: f64,
    pub drop_probability: f64,
}

/// `#rrggbb` to blue, green, red.
fn parse_color(s: &str) -> Option<[u8; 3]> {
    let hex = s.strip_prefix('#')?;
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([c(4)?, c(2)?, c(0)?])
}

impl SimParams {
    /// Checks the parameters together and builds the typed configuration.
    pub fn config(&self) -> Result<SimConfig, String> {
        let lanes = self.lanes as usize;
        if self.lane_bias.len() != lanes {
            return Err(format!(
                "lane_bias has {} entries but lanes is {}: give one weight per lane",
                self.lane_bias.len(),
                lanes
            ));
        }
        if self.lane_bias.iter().sum::<f64>() <= 0.0 {
            return Err("lane_bias: at least one lane needs a positive weight".into());
        }
        let lane_width_m = self.belt_width_m / lanes as f64;

        let n = same_lengths(&[
            ("class_names", self.class_names.len()),
            ("class_shapes", self.class_shapes.len()),
            ("class_colors", self.class_colors.len()),
            ("class_length_m", self.class_length_m.len()),
            ("class_width_m", self.class_width_m.len()),
            ("class_height_m", self.class_height_m.len()),
            ("class_weights", self.class_weights.len()),
        ])?;
        if n == 0 {
            return Err("class_names is empty: the world needs at least one class".into());
        }
        let mut classes = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.class_names[i].clone();
            if name.is_empty() || self.class_names[..i].contains(&name) {
                return Err(format!(
                    "class_names[{i}] {name:?} is empty or repeated: class names must be unique"
                ));
            }
            let shape = match self.class_shapes[i].as_str() {
                "box" => Shape::Box,
                "disc" => Shape::Disc,
                other => {
                    return Err(format!(
                        "class_shapes[{i}] ({name}) is {other:?}: use box or disc"
                    ))
                }
            };
            let color_bgr = parse_color(&self.class_colors[i]).ok_or_else(|| {
                format!(
                    "class_colors[{i}] ({name}) is {:?}: use #rrggbb",
                    self.class_colors[i]
                )
            })?;
            let (length_m, width_m) = (self.class_length_m[i], self.class_width_m[i]);
            if shape == Shape::Disc && length_m != width_m {
                return Err(format!(
                    "class {name} is a disc but class_length_m ({length_m}) and class_width_m ({width_m}) differ"
                ));
            }
            if width_m.min(length_m) > lane_width_m {
                return Err(format!(
                    "class {name} ({length_m} × {width_m} m, class_length_m, class_width_m) does not fit a lane \
                     ({lane_width_m} m = belt_width_m / lanes)"
                ));
            }
            classes.push(ObjectClass {
                name,
                shape,
                color_bgr,
                length_m,
                width_m,
                height_m: self.class_height_m[i],
                weight: self.class_weights[i],
            });
        }
        if classes.iter().map(|c| c.weight).sum::<f64>() <= 0.0 {
            return Err("class_weights: at least one class needs a positive weight".into());
        }

        let camera = CameraSpec {
            x_min_m: self.camera_x_min_m,
            y_min_m: self.camera_y_min_m,
            m_per_px: self.camera_m_per_px,
            width_px: self.camera_width_px as u32,
            height_px: self.camera_height_px as u32,
            fps: self.camera_fps,
            noise_stddev: self.noise_stddev,
            blur_sigma_px: self.blur_sigma_px,
            lighting_drift_fraction: self.lighting_drift_fraction,
            lighting_drift_period_s: self.lighting_drift_period_s,
            occluder_x_m: self.occluder_x_m.clone(),
            occluder_width_m: self.occluder_width_m,
        };
        let (vx0, vx1) = camera.view_x_m();
        let (vy0, vy1) = camera.view_y_m();
        if vx1 <= 0.0 || vx0 >= self.belt_length_m || vy1 <= 0.0 || vy0 >= self.belt_width_m {
            return Err(format!(
                "the camera's view [{vx0:.3}, {vx1:.3}] × [{vy0:.3}, {vy1:.3}] m misses the belt \
                 [0, {}] × [0, {}] m (camera_x_min_m, camera_y_min_m, camera_m_per_px, camera_*_px)",
                self.belt_length_m, self.belt_width_m
            ));
        }

        let m = same_lengths(&[
            ("cnc_ids", self.cnc_ids.len()),
            ("cnc_x_min_m", self.cnc_x_min_m.len()),
            ("cnc_x_max_m", self.cnc_x_max_m.len()),
            ("cnc_origin_x_m", self.cnc_origin_x_m.len()),
            ("cnc_origin_y_m", self.cnc_origin_y_m.len()),
            ("cnc_origin_z_m", self.cnc_origin_z_m.len()),
            ("cnc_pty_links", self.cnc_pty_links.len()),
        ])?;
        let mut cncs = Vec::with_capacity(m);
        for i in 0..m {
            let id = self.cnc_ids[i].clone();
            if id.is_empty()
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || self.cnc_ids[..i].contains(&id)
            {
                return Err(format!(
                    "cnc_ids[{i}] {id:?}: ids must be unique, non-empty, letters, digits or _ (node cnc_<id>)"
                ));
            }
            let (x0, x1) = (self.cnc_x_min_m[i], self.cnc_x_max_m[i]);
            if x0 >= x1 {
                return Err(format!(
                    "CNC {id}: cnc_x_min_m ({x0}) must be less than cnc_x_max_m ({x1})"
                ));
            }
            if x0 < 0.0 || x1 > self.belt_length_m {
                return Err(format!(
                    "CNC {id}: its reach window [{x0}, {x1}] m (cnc_x_min_m, cnc_x_max_m) is not on the belt [0, {}] m (belt_length_m)",
                    self.belt_length_m
                ));
            }
            if x0 < vx1 && x1 > vx0 {
                return Err(format!(
                    "CNC {id}: its reach window [{x0}, {x1}] m (cnc_x_min_m, cnc_x_max_m) overlaps the camera's view \
                     [{vx0:.3}, {vx1:.3}] m (camera_x_min_m, camera_m_per_px, camera_width_px); \
                     the gantry would hide the objects it picks"
                ));
            }
            if x1 <= vx0 {
                return Err(format!(
                    "CNC {id}: its reach window [{x0}, {x1}] m (cnc_x_min_m, cnc_x_max_m) is upstream of the camera's view \
                     [{vx0:.3}, {vx1:.3}] m (camera_x_min_m, camera_m_per_px, camera_width_px); \
                     it could only pick objects not yet seen"
                ));
            }
            let frame = MachineFrame::new(
                self.cnc_origin_x_m[i],
                self.cnc_origin_y_m[i],
                self.cnc_origin_z_m[i],
            );
            if frame.origin_m.x < x1 || frame.origin_m.y < self.belt_width_m {
                return Err(format!(
                    "CNC {id}: machine zero ({}, {}) m (cnc_origin_x_m, cnc_origin_y_m) must be at or beyond the far corner of its window \
                     (x ≥ {x1}, y ≥ belt_width_m {}): machine space is negative from zero",
                    frame.origin_m.x, frame.origin_m.y, self.belt_width_m
                ));
            }
            let link = self.cnc_pty_links[i].clone();
            if !link.is_empty() && self.cnc_pty_links[..i].contains(&link) {
                return Err(format!("cnc_pty_links[{i}] {link:?} is repeated"));
            }
            cncs.push(CncSpec {
                id,
                x_min_m: x0,
                x_max_m: x1,
                frame,
                pty_link: link,
            });
        }

        let k = same_lengths(&[
            ("bin_cnc_ids", self.bin_cnc_ids.len()),
            ("bin_classes", self.bin_classes.len()),
            ("bin_x_m", self.bin_x_m.len()),
            ("bin_y_m", self.bin_y_m.len()),
        ])?;
        let mut bins = Vec::with_capacity(k);
        for i in 0..k {
            let cnc = cncs
                .iter()
                .position(|c| c.id == self.bin_cnc_ids[i])
                .ok_or_else(|| {
                    format!(
                        "bin_cnc_ids[{i}] {:?} is not in cnc_ids",
                        self.bin_cnc_ids[i]
                    )
                })?;
            let class = classes
                .iter()
                .position(|c| c.name == self.bin_classes[i])
                .ok_or_else(|| {
                    format!(
                        "bin_classes[{i}] {:?} is not in class_names",
                        self.bin_classes[i]
                    )
                })?;
            let (x, y) = (self.bin_x_m[i], self.bin_y_m[i]);
            if y + self.bin_radius_m > 0.0 && y - self.bin_radius_m < self.belt_width_m {
                return Err(format!(
                    "bin {i} at y = {y} m (bin_y_m, bin_radius_m {}) is over the belt [0, {}] m: bins stand beside it",
                    self.bin_radius_m, self.belt_width_m
                ));
            }
            let c = &cncs[cnc];
            if x < c.x_min_m || x > c.x_max_m {
                return Err(format!(
                    "bin {i} at x = {x} m (bin_x_m) is outside CNC {}'s reach window [{}, {}] m",
                    c.id, c.x_min_m, c.x_max_m
                ));
            }
            bins.push(Bin {
                cnc,
                class,
                x_m: x,
                y_m: y,
            });
        }

        let events = Events {
            at_s: self.speed_event_at_s,
            every_s: self.speed_event_every_s,
            for_s: self.speed_event_for_s,
        };
        if events.every_s > 0.0 && events.every_s < events.for_s + 2.0 * self.speed_ramp_s {
            return Err(format!(
                "speed_event_every_s ({}) is shorter than one event (speed_event_for_s {} + 2 × speed_ramp_s {})",
                events.every_s, events.for_s, self.speed_ramp_s
            ));
        }
        let profile = match self.speed_profile.as_str() {
            "constant" => SpeedProfile::Constant,
            "drift" => SpeedProfile::Drift {
                fraction: self.speed_drift_fraction,
                period_s: self.speed_drift_period_s,
            },
            "stop" => SpeedProfile::Stop(events),
            "reverse" => SpeedProfile::Reverse(events, self.speed_reverse_fraction),
            other => {
                return Err(format!(
                    "speed_profile {other:?} is not constant, drift, stop or reverse"
                ))
            }
        };

        let cnc_ids: Vec<&str> = cncs.iter().map(|c| c.id.as_str()).collect();
        let faults = parse_faults(&self.faults, &cnc_ids)?;
        for (i, kind) in self.fault_kinds.iter().enumerate() {
            if !super::faults::KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "fault_kinds[{i}] {kind:?} is not one of {}",
                    super::faults::KINDS.join(", ")
                ));
            }
        }
        if self.fault_rate_per_min > 0.0 && self.fault_kinds.is_empty() {
            return Err("fault_rate_per_min is set but fault_kinds is empty".into());
        }

        Ok(SimConfig {
            seed: self.seed as u64,
            belt_length_m: self.belt_length_m,
            belt_width_m: self.belt_width_m,
            lanes,
            speed_nominal_mps: self.belt_speed_nominal_mps,
            profile,
            ramp_s: self.speed_ramp_s,
            arrival_rate_per_min: self.arrival_rate_per_min,
            lane_bias: self.lane_bias.clone(),
            burst_probability: self.burst_probability,
            pair_probability: self.pair_probability,
            burst_size_max: self.burst_size_max as usize,
            min_gap_m: self.min_gap_m,
            classes,
            camera,
            cncs,
            bins,
            bin_radius_m: self.bin_radius_m,
            vacuum: VacuumSpec {
                xy_tolerance_m: self.pick_xy_tolerance_m,
                z_tolerance_m: self.pick_z_tolerance_m,
                dwell_s: self.vacuum_dwell_s,
                drop_probability: self.drop_probability,
            },
            faults,
            fault_rate_per_min: self.fault_rate_per_min,
            fault_kinds: self.fault_kinds.clone(),
            fault_horizon_s: self.fault_horizon_s,
            grbl: GrblSetup {
                homing: self.cnc_homing,
                soft_limits: self.cnc_soft_limits,
                max_rate_mm_per_min: self.cnc_max_rate_mm_per_min,
                accel_mm_per_s2: self.cnc_accel_mm_per_s2,
                homing_feed_mm_per_min: self.cnc_homing_feed_mm_per_min,
                homing_seek_mm_per_min: self.cnc_homing_seek_mm_per_min,
                homing_debounce_ms: self.cnc_homing_debounce_ms,
                homing_pulloff_mm: self.cnc_homing_pulloff_mm,
            },
        })
    }
}

impl NodeParams for SimParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        self.config().map(|_| ())
    }
}

impl KitParams for SimParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}

impl SimConfig {
    /// The $-settings of CNC `i`'s board: rates and acceleration from the
    /// params, travel covering its window (plus 50 mm) and the bins, down to
    /// the belt.
    pub fn grbl_settings(&self, i: usize) -> crate::sim::grbl::settings::Settings {
        let c = &self.cncs[i];
        let o = c.frame.origin_m;
        let mut s = crate::sim::grbl::settings::Settings::default();
        let g = self.grbl;
        for axis in 0..3u16 {
            s.set(110 + axis, g.max_rate_mm_per_min);
            s.set(120 + axis, g.accel_mm_per_s2);
        }
        let y_reach = self
            .bins
            .iter()
            .filter(|b| b.cnc == i)
            .map(|b| b.y_m - self.bin_radius_m)
            .fold(0.0f64, f64::min);
        s.set(130, ((o.x - c.x_min_m) + 0.05) * 1000.0);
        s.set(131, ((o.y - y_reach) + 0.05) * 1000.0);
        s.set(132, o.z * 1000.0);
        s.set(20, if g.soft_limits { 1.0 } else { 0.0 });
        s.set(22, if g.homing { 1.0 } else { 0.0 });
        s.set(24, g.homing_feed_mm_per_min);
        s.set(25, g.homing_seek_mm_per_min);
        s.set(26, g.homing_debounce_ms.round());
        s.set(27, g.homing_pulloff_mm);
        s
    }

    /// Lane of belt y, clamped to the belt.
    pub fn lane_of(&self, y_m: f64) -> usize {
        let w = self.belt_width_m / self.lanes as f64;
        ((y_m / w).floor().max(0.0) as usize).min(self.lanes - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_make_a_valid_cell() {
        let c = SimParams::default().config().unwrap();
        assert_eq!(c.cncs.len(), 2);
        assert_eq!(c.classes[0].color_bgr, [0x28, 0x28, 0xdc]);
        assert_eq!(c.camera.view_x_m(), (0.2, 0.2 + 1.28));
    }
}
