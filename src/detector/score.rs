//! Scoring detections against the simulator's ground truth: which truth
//! objects the camera saw whole, which detections match them, and how far
//! off they are. Used by the perception tests and `bench/run perception`.

use super::core::Detected;
use super::homography::Homography;
use crate::sim::truth::FrameTruth;

/// Totals over any number of frames.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Truth objects wholly in view, found.
    pub true_positives: usize,
    /// Detections matching no truth object.
    pub false_positives: usize,
    /// Truth objects wholly in view, not found.
    pub false_negatives: usize,
    /// Detections of objects only partly in view (neither right nor wrong).
    pub ignored: usize,
    pub lane_right: usize,
    pub class_right: usize,
    /// Centre error of each match, m.
    pub errors_m: Vec<f64>,
}

impl Score {
    pub fn recall(&self) -> f64 {
        let n = self.true_positives + self.false_negatives;
        if n == 0 {
            1.0
        } else {
            self.true_positives as f64 / n as f64
        }
    }
    pub fn precision(&self) -> f64 {
        let n = self.true_positives + self.false_positives;
        if n == 0 {
            1.0
        } else {
            self.true_positives as f64 / n as f64
        }
    }
    pub fn lane_accuracy(&self) -> f64 {
        self.lane_right as f64 / self.true_positives.max(1) as f64
    }
    /// The `q` quantile (0..1) of the centre errors, m.
    pub fn error_quantile_m(&self, q: f64) -> f64 {
        quantile(&self.errors_m, q)
    }
    pub fn add(&mut self, other: &Score) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
        self.ignored += other.ignored;
        self.lane_right += other.lane_right;
        self.class_right += other.class_right;
        self.errors_m.extend_from_slice(&other.errors_m);
    }
}

/// The `q` quantile of `v` (nearest rank); NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// Scores one frame. A truth object counts when it is on the belt and its
/// whole footprint lies `margin_px` inside the `width_px` × `height_px`
/// image; a detection matches the nearest unmatched truth object within
/// `gate_m`.
pub fn score_frame(
    truth: &FrameTruth,
    detections: &[Detected],
    class_names: &[String],
    camera: &Homography,
    size_px: (u32, u32),
    margin_px: f64,
    gate_m: f64,
) -> Score {
    let mut s = Score::default();
    let on_belt: Vec<_> = truth
        .objects
        .iter()
        .filter(|o| o.state == "on_belt")
        .collect();
    let whole: Vec<bool> = on_belt
        .iter()
        .map(|o| {
            let (c, sn) = (o.yaw_rad.cos(), o.yaw_rad.sin());
            let (l, w) = (o.length_m / 2.0, o.width_m / 2.0);
            [(l, w), (-l, w), (-l, -w), (l, -w)].iter().all(|&(a, b)| {
                let (u, v) = camera.pixel_of(
                    o.position_m[0] + a * c - b * sn,
                    o.position_m[1] + a * sn + b * c,
                );
                u >= margin_px
                    && v >= margin_px
                    && u <= size_px.0 as f64 - 1.0 - margin_px
                    && v <= size_px.1 as f64 - 1.0 - margin_px
            })
        })
        .collect();
    // Every pair within the gate, closest first.
    let mut pairs = Vec::new();
    for (i, d) in detections.iter().enumerate() {
        for (j, o) in on_belt.iter().enumerate() {
            let e = (d.x_m - o.position_m[0]).hypot(d.y_m - o.position_m[1]);
            if e <= gate_m {
                pairs.push((e, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut det_used = vec![false; detections.len()];
    let mut obj_used = vec![false; on_belt.len()];
    for (e, i, j) in pairs {
        if det_used[i] || obj_used[j] {
            continue;
        }
        det_used[i] = true;
        obj_used[j] = true;
        if whole[j] {
            s.true_positives += 1;
            s.errors_m.push(e);
            s.lane_right += (detections[i].lane == on_belt[j].lane) as usize;
            s.class_right +=
                (class_names.get(detections[i].class) == Some(&on_belt[j].class)) as usize;
        } else {
            s.ignored += 1;
        }
    }
    s.false_positives = det_used.iter().filter(|u| !**u).count();
    s.false_negatives = (0..on_belt.len())
        .filter(|&j| whole[j] && !obj_used[j])
        .count();
    s
}
