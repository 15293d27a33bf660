//! Parameters of the `detector` node. Per-class values are parallel lists;
//! the calibration is a list of point pairs (`cncpick calibrate` writes
//! them). [`DetectorParams::config`] checks everything together and fits
//! the homography; every refusal names the parameters involved.

use super::core::{ClassSpec, DetectorConfig, Shape};
use super::homography::Homography;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{same_lengths, NodeParams, Spec};
use opencv::core::Rect;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorParams {
    pub heartbeat_period_s: f64,
    pub image_topic: String,
    pub calib_points_px: Vec<f64>,
    pub calib_points_belt_m: Vec<f64>,
    pub roi_px: Vec<i64>,
    pub belt_width_m: f64,
    pub lanes: i64,
    pub class_names: Vec<String>,
    pub class_shapes: Vec<String>,
    pub class_hue_deg: Vec<f64>,
    pub class_hue_tolerance_deg: Vec<f64>,
    pub class_saturation_min: Vec<i64>,
    pub class_value_min: Vec<i64>,
    pub class_length_m: Vec<f64>,
    pub class_width_m: Vec<f64>,
    pub open_px: i64,
    pub area_tolerance: f64,
    pub min_confidence: f64,
    pub duplicate_distance_m: f64,
    pub border_margin_px: i64,
    pub debug_image: bool,
    /// Frames waiting for the detector beyond this are dropped (oldest first).
    pub queue_frames: i64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The simulated camera: 1 mm pixels, pixel (0, 0) centred on belt
        // (0.2005, -0.0595); these are the image's outer corners.
        DetectorParams {
            heartbeat_period_s: 1.0,
            image_topic: "camera/image_raw".into(),
            calib_points_px: vec![-0.5, -0.5, 1279.5, -0.5, 1279.5, 719.5, -0.5, 719.5],
            calib_points_belt_m: vec![0.2, -0.06, 1.48, -0.06, 1.48, 0.66, 0.2, 0.66],
            roi_px: Vec::new(),
            belt_width_m: 0.6,
            lanes: 4,
            class_names: s(&["red_box", "green_disc", "blue_bar"]),
            class_shapes: s(&["box", "disc", "box"]),
            class_hue_deg: vec![0.0, 128.6, 226.7],
            class_hue_tolerance_deg: vec![20.0, 20.0, 20.0],
            class_saturation_min: vec![100, 100, 100],
            class_value_min: vec![60, 60, 60],
            class_length_m: vec![0.06, 0.05, 0.09],
            class_width_m: vec![0.06, 0.05, 0.04],
            open_px: 3,
            area_tolerance: 0.4,
            min_confidence: 0.0,
            duplicate_distance_m: 0.02,
            border_margin_px: 1,
            debug_image: false,
            queue_frames: 2,
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new("image_topic", "The camera's image topic").read_only(),
    Spec::new(
        "calib_points_px",
        "Calibration: image points u0, v0, u1, v1, ... (4 or more), px",
    )
    .range(-1.0e5, 1.0e5),
    Spec::new(
        "calib_points_belt_m",
        "Calibration: the same points on the belt x0, y0, x1, y1, ..., m",
    )
    .range(-1.0e3, 1.0e3),
    Spec::new(
        "roi_px",
        "Region of interest x, y, width, height, px (empty: the whole image)",
    )
    .range(0.0, 1.0e5),
    Spec::new("belt_width_m", "Belt width (lanes split it evenly), m").range(0.05, 5.0),
    Spec::new("lanes", "Lanes across the belt").range(1.0, 32.0),
    Spec::new("class_names", "Object classes, as class_id in detections"),
    Spec::new("class_shapes", "Each class's shape: box or disc"),
    Spec::new(
        "class_hue_deg",
        "Each class's hue, degrees (0 red, 120 green, 240 blue)",
    )
    .range(0.0, 360.0),
    Spec::new(
        "class_hue_tolerance_deg",
        "Accepted hue either side of class_hue_deg, degrees",
    )
    .range(0.0, 180.0),
    Spec::new(
        "class_saturation_min",
        "Each class's lowest saturation, 0..255",
    )
    .range(0.0, 255.0),
    Spec::new("class_value_min", "Each class's lowest value, 0..255").range(0.0, 255.0),
    Spec::new(
        "class_length_m",
        "Each class's length (a disc: its diameter), m",
    )
    .range(0.001, 5.0),
    Spec::new("class_width_m", "Each class's width, m").range(0.001, 5.0),
    Spec::new(
        "open_px",
        "Side of the morphological opening's square kernel, px (0 or 1: none)",
    )
    .range(0.0, 31.0),
    Spec::new(
        "area_tolerance",
        "Accepted area: the class's area times 1 ± this",
    )
    .range(0.01, 10.0),
    Spec::new(
        "min_confidence",
        "Detections below this confidence are dropped",
    )
    .range(0.0, 1.0),
    Spec::new(
        "duplicate_distance_m",
        "Two detections of one frame closer than this are one object, m",
    )
    .range(0.0, 1.0),
    Spec::new(
        "border_margin_px",
        "Contours this close to the ROI's edge are cut off and skipped, px",
    )
    .range(0.0, 100.0),
    Spec::new(
        "debug_image",
        "Publish detector/debug_image (the frame with detections drawn)",
    ),
    Spec::new(
        "queue_frames",
        "Frames that may wait for the detector; older ones are dropped",
    )
    .range(1.0, 100.0),
];

fn pairs(name: &str, v: &[f64]) -> Result<Vec<(f64, f64)>, String> {
    if !v.len().is_multiple_of(2) {
        return Err(format!(
            "{name} has {} numbers: give x, y pairs (an even count)",
            v.len()
        ));
    }
    Ok(v.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

impl DetectorParams {
    /// The homography from the calibration pairs.
    pub fn homography(&self) -> Result<Homography, String> {
        let px = pairs("calib_points_px", &self.calib_points_px)?;
        let belt = pairs("calib_points_belt_m", &self.calib_points_belt_m)?;
        let fit = Homography::fit(&px, &belt)
            .map_err(|e| format!("calib_points_px, calib_points_belt_m: {e}"))?;
        if fit.max_error_px > 5.0 {
            return Err(format!(
                "calib_points_px, calib_points_belt_m: the pairs disagree; the best homography \
                 misses one by {:.1} px (RMS {:.1} px). Check the pairs, or recalibrate",
                fit.max_error_px, fit.rms_error_px
            ));
        }
        Ok(fit.homography)
    }

    /// Checks the parameters together and builds the detector's configuration.
    pub fn config(&self) -> Result<DetectorConfig, String> {
        let n = same_lengths(&[
            ("class_names", self.class_names.len()),
            ("class_shapes", self.class_shapes.len()),
            ("class_hue_deg", self.class_hue_deg.len()),
            (
                "class_hue_tolerance_deg",
                self.class_hue_tolerance_deg.len(),
            ),
            ("class_saturation_min", self.class_saturation_min.len()),
            ("class_value_min", self.class_value_min.len()),
            ("class_length_m", self.class_length_m.len()),
            ("class_width_m", self.class_width_m.len()),
        ])?;
        if n == 0 {
            return Err("class_names is empty: give at least one class to detect".into());
        }
        let mut classes: Vec<ClassSpec> = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.class_names[i].clone();
            if name.is_empty() || self.class_names[..i].contains(&name) {
                return Err(format!(
                    "class_names[{i}] {name:?} is empty or repeated: class names must be unique"
                ));
            }
            let shape = Shape::parse(&self.class_shapes[i]).ok_or_else(|| {
                format!(
                    "class_shapes[{i}] ({name}) is {:?}: use box or disc",
                    self.class_shapes[i]
                )
            })?;
            let c = ClassSpec {
                name,
                shape,
                hue_deg: self.class_hue_deg[i],
                hue_tolerance_deg: self.class_hue_tolerance_deg[i],
                saturation_min: self.class_saturation_min[i] as u8,
                value_min: self.class_value_min[i] as u8,
                length_m: self.class_length_m[i],
                width_m: self.class_width_m[i],
            };
            // Saturation and value windows all reach 255, so hues decide.
            if let Some(other) = classes
                .iter()
                .find(|o| (0..180u8).any(|h| o.hue_accepts(h) && c.hue_accepts(h)))
            {
                return Err(format!(
                    "class_hue_deg, class_hue_tolerance_deg: the hue windows of {} and {} overlap; \
                     a colour must belong to one class",
                    other.name, c.name
                ));
            }
            classes.push(c);
        }
        let roi_px = match self.roi_px.as_slice() {
            [] => None,
            [x, y, w, h] if *w > 0 && *h > 0 => {
                Some(Rect::new(*x as i32, *y as i32, *w as i32, *h as i32))
            }
            [_, _, _, _] => return Err("roi_px: width and height must be positive".into()),
            other => {
                return Err(format!(
                    "roi_px has {} numbers: give x, y, width, height, or none for the whole image",
                    other.len()
                ))
            }
        };
        Ok(DetectorConfig {
            classes,
            px_to_belt: self.homography()?,
            roi_px,
            belt_width_m: self.belt_width_m,
            lanes: self.lanes as u32,
            open_px: self.open_px as i32,
            area_tolerance: self.area_tolerance,
            min_confidence: self.min_confidence,
            duplicate_distance_m: self.duplicate_distance_m,
            border_margin_px: self.border_margin_px as i32,
        })
    }
}

impl NodeParams for DetectorParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        self.config().map(|_| ())
    }
}

impl KitParams for DetectorParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}

/// Hue of an 8-bit BGR colour, degrees in [0, 360).
pub fn hue_deg(bgr: [u8; 3]) -> f64 {
    let [b, g, r] = bgr.map(|c| c as f64);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return 0.0;
    }
    let d = max - min;
    let h = if max == r {
        (g - b) / d
    } else if max == g {
        2.0 + (b - r) / d
    } else {
        4.0 + (r - g) / d
    };
    (60.0 * h).rem_euclid(360.0)
}

impl DetectorParams {
    /// The detector's parameters for the simulated cell `sim`: its camera's
    /// image corners as calibration pairs, its belt, and its classes with
    /// hue windows 20° either side of their colours.
    pub fn for_sim(sim: &crate::sim::params::SimConfig) -> DetectorParams {
        let c = &sim.camera;
        let (w, h) = (c.width_px as f64, c.height_px as f64);
        let corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
        let mut px = Vec::new();
        let mut belt = Vec::new();
        for (i, j) in corners {
            px.extend([i - 0.5, j - 0.5]);
            let nano = |v: f64| (v * 1e9).round() / 1e9;
            belt.extend([
                nano(c.x_min_m + i * c.m_per_px),
                nano(c.y_min_m + j * c.m_per_px),
            ]);
        }
        let classes = &sim.classes;
        DetectorParams {
            calib_points_px: px,
            calib_points_belt_m: belt,
            belt_width_m: sim.belt_width_m,
            lanes: sim.lanes as i64,
            class_names: classes.iter().map(|k| k.name.clone()).collect(),
            class_shapes: classes
                .iter()
                .map(|k| match k.shape {
                    crate::sim::params::Shape::Box => "box".to_string(),
                    crate::sim::params::Shape::Disc => "disc".to_string(),
                })
                .collect(),
            class_hue_deg: classes
                .iter()
                .map(|k| (hue_deg(k.color_bgr) * 10.0).round() / 10.0)
                .collect(),
            class_hue_tolerance_deg: vec![20.0; classes.len()],
            class_saturation_min: vec![100; classes.len()],
            class_value_min: vec![60; classes.len()],
            class_length_m: classes.iter().map(|k| k.length_m).collect(),
            class_width_m: classes.iter().map(|k| k.width_m).collect(),
            ..DetectorParams::default()
        }
    }
}
