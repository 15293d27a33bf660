//! Parameters of a motion controller node (`cnc_<id>`). The defaults are
//! CNC 1 of the simulated cell (params/sim.yaml). [`MotionParams::picker`]
//! turns them into the intercept model the scheduler shares.

use crate::kinematics::{Limits, MachineFrame, Picker, Workspace};
use crate::kit::lifecycle::Recovery;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{same_lengths, NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotionParams {
    pub heartbeat_period_s: f64,
    pub cnc_id: String,
    pub port: String,
    pub baud: i64,
    pub grbl_command_response_s: f64,
    pub motion_wait_for_trigger_s: f64,
    pub banner_timeout_s: f64,
    pub homing_timeout_s: f64,
    pub origin_x_m: f64,
    pub origin_y_m: f64,
    pub origin_z_m: f64,
    pub reach_x_min_m: f64,
    pub reach_x_max_m: f64,
    pub max_rate_mm_per_min: Vec<f64>,
    pub accel_mm_per_s2: Vec<f64>,
    pub travel_mm: Vec<f64>,
    pub homing: bool,
    pub workspace_margin_mm: f64,
    pub approach_height_m: f64,
    pub safe_z_m: f64,
    pub descend_s: f64,
    pub track_s: f64,
    pub lag_s: f64,
    pub bin_classes: Vec<String>,
    pub bin_x_m: Vec<f64>,
    pub bin_y_m: Vec<f64>,
    pub release_dwell_s: f64,
    pub status_period_s: f64,
    pub poll_idle_s: f64,
    pub poll_busy_s: f64,
    pub state_call_timeout_s: f64,
    pub reconnect_attempts: i64,
    pub reconnect_initial_s: f64,
    pub reconnect_max_s: f64,
}

impl Default for MotionParams {
    fn default() -> Self {
        MotionParams {
            heartbeat_period_s: 1.0,
            cnc_id: "1".into(),
            port: "/tmp/cncpick/cnc_1".into(),
            baud: 115_200,
            grbl_command_response_s: 2.0,
            motion_wait_for_trigger_s: 5.0,
            banner_timeout_s: 3.0,
            homing_timeout_s: 30.0,
            origin_x_m: 2.6,
            origin_y_m: 0.75,
            origin_z_m: 0.15,
            reach_x_min_m: 2.0,
            reach_x_max_m: 2.6,
            max_rate_mm_per_min: vec![30_000.0; 3],
            accel_mm_per_s2: vec![3_000.0; 3],
            travel_mm: vec![650.0, 800.0, 150.0],
            homing: false,
            workspace_margin_mm: 1.0,
            approach_height_m: 0.02,
            safe_z_m: 0.08,
            descend_s: 0.2,
            track_s: 0.25,
            lag_s: 0.05,
            bin_classes: vec!["red_box".into()],
            bin_x_m: vec![2.3],
            bin_y_m: vec![0.68],
            release_dwell_s: 0.05,
            status_period_s: 0.1,
            poll_idle_s: 0.2,
            poll_busy_s: 0.02,
            state_call_timeout_s: 2.0,
            reconnect_attempts: 50,
            // Soon: an alarm or a closed port is worth a look at once; a
            // port not back yet is tried again five times a second
            // (opening a missing tty costs nothing, and every tenth of a
            // second after the cable is back is a tenth more of a CNC
            // out of the cell), for about 10 s before the manager takes
            // over.
            reconnect_initial_s: 0.1,
            reconnect_max_s: 0.2,
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new("cnc_id", "This CNC's id (the node is cnc_<id>)").read_only(),
    Spec::new("port", "The GRBL board's serial port (a tty)").read_only(),
    Spec::new("baud", "Serial speed, baud")
        .range(1200.0, 4.0e6)
        .read_only(),
    Spec::new(
        "grbl_command_response_s",
        "A line unanswered this long: feed hold, reset, fault, s",
    )
    .range(0.05, 60.0),
    Spec::new(
        "motion_wait_for_trigger_s",
        "Longest wait for an object to reach its pick point, s",
    )
    .range(0.1, 600.0),
    Spec::new("banner_timeout_s", "Soft reset to banner, at most, s").range(0.1, 60.0),
    Spec::new("homing_timeout_s", "$H to done, at most, s").range(1.0, 600.0),
    Spec::new("origin_x_m", "Belt x of machine zero, m")
        .range(-1e3, 1e3)
        .read_only(),
    Spec::new("origin_y_m", "Belt y of machine zero, m")
        .range(-1e3, 1e3)
        .read_only(),
    Spec::new("origin_z_m", "Belt z of machine zero, m")
        .range(-1e3, 1e3)
        .read_only(),
    Spec::new("reach_x_min_m", "Upstream end of the reach window, m").range(-1e3, 1e3),
    Spec::new(
        "reach_x_max_m",
        "Downstream end of the reach window, m (cut to the workspace's X)",
    )
    .range(-1e3, 1e3),
    Spec::new(
        "max_rate_mm_per_min",
        "Expected $110-$112: checked against the board at configure",
    )
    .read_only(),
    Spec::new(
        "accel_mm_per_s2",
        "Expected $120-$122: checked against the board at configure",
    )
    .read_only(),
    Spec::new(
        "travel_mm",
        "Expected $130-$132: checked against the board; the workspace is [-travel, 0]",
    )
    .read_only(),
    Spec::new(
        "homing",
        "Expected $22: homing enabled (then $H at configure)",
    )
    .read_only(),
    Spec::new(
        "workspace_margin_mm",
        "Targets keep this far inside the travel, mm",
    )
    .range(0.0, 100.0),
    Spec::new(
        "approach_height_m",
        "Nozzle above an object's top before the descent, m",
    )
    .range(0.001, 1.0),
    Spec::new("safe_z_m", "Belt-frame z for travel between picks, m").range(-1e3, 1e3),
    Spec::new("descend_s", "Time of the descent onto an object, s").range(0.01, 10.0),
    Spec::new(
        "track_s",
        "Time the nozzle rides with an object, vacuum on, s",
    )
    .range(0.01, 10.0),
    Spec::new(
        "lag_s",
        "Time allowed for the link and status lag in every plan, s",
    )
    .range(0.0, 5.0),
    Spec::new("bin_classes", "Object classes this CNC bins, one bin each").read_only(),
    Spec::new("bin_x_m", "Each bin's belt-frame x, m").read_only(),
    Spec::new("bin_y_m", "Each bin's belt-frame y, m").read_only(),
    Spec::new(
        "release_dwell_s",
        "Dwell after vacuum off over a bin, s (GRBL dwells in whole 50 ms steps: 0.06 dwells 0.1 s)",
    ).range(0.0, 10.0),
    Spec::new("status_period_s", "Period of cnc_<id>/status, s").range(0.005, 10.0),
    Spec::new("poll_idle_s", "Status polling period when idle, s").range(0.02, 10.0),
    Spec::new("poll_busy_s", "Status polling period while picking, s").range(0.005, 10.0),
    Spec::new(
        "state_call_timeout_s",
        "Each call to the state manager, at most, s",
    )
    .range(0.05, 60.0),
    Spec::new(
        "reconnect_attempts",
        "After a fault: reconfigure and reactivate this many times (0: stay in error)",
    )
    .range(0.0, 1000.0),
    crate::kit::node::RECONNECT_INITIAL_SPEC,
    crate::kit::node::RECONNECT_MAX_SPEC,
];

impl NodeParams for MotionParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        if self.cnc_id.trim().is_empty() {
            return Err("cnc_id is empty".into());
        }
        if self.port.trim().is_empty() {
            return Err("port is empty: name the GRBL board's tty".into());
        }
        for (name, v) in [
            ("max_rate_mm_per_min", &self.max_rate_mm_per_min),
            ("accel_mm_per_s2", &self.accel_mm_per_s2),
            ("travel_mm", &self.travel_mm),
        ] {
            if v.len() != 3 || v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(format!(
                    "{name} needs 3 positive numbers (X, Y, Z), got {v:?}"
                ));
            }
        }
        if self.reach_x_max_m <= self.reach_x_min_m {
            return Err(format!(
                "reach_x_max_m ({}) must be downstream of reach_x_min_m ({})",
                self.reach_x_max_m, self.reach_x_min_m
            ));
        }
        let (lo, hi) = self.picker().reach_x_m();
        if hi <= lo {
            return Err(format!(
                "reach_x_min_m..reach_x_max_m ({}..{} m) lies outside the workspace's X \
                 (origin_x_m, travel_mm and workspace_margin_mm put it at belt x {:.4}..{:.4} m)",
                self.reach_x_min_m,
                self.reach_x_max_m,
                self.origin_x_m - self.travel_mm[0] / 1000.0 + self.workspace_margin_mm / 1000.0,
                self.origin_x_m - self.workspace_margin_mm / 1000.0,
            ));
        }
        same_lengths(&[
            ("bin_classes", self.bin_classes.len()),
            ("bin_x_m", self.bin_x_m.len()),
            ("bin_y_m", self.bin_y_m.len()),
        ])?;
        Ok(())
    }
}

impl KitParams for MotionParams {
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

fn three(v: &[f64]) -> [f64; 3] {
    [v[0], v[1], v[2]]
}

/// The parameters a CNC's model is made of ([`MotionParams::picker`], its
/// bins and dwell): what the scheduler reads from each `cnc_<id>`.
pub const MODEL_PARAMS: &[&str] = &[
    "cnc_id",
    "origin_x_m",
    "origin_y_m",
    "origin_z_m",
    "max_rate_mm_per_min",
    "accel_mm_per_s2",
    "travel_mm",
    "workspace_margin_mm",
    "reach_x_min_m",
    "reach_x_max_m",
    "approach_height_m",
    "safe_z_m",
    "descend_s",
    "track_s",
    "lag_s",
    "bin_classes",
    "bin_x_m",
    "bin_y_m",
    "release_dwell_s",
];

impl MotionParams {
    /// The intercept model for this CNC (params validated).
    pub fn picker(&self) -> Picker {
        Picker {
            frame: MachineFrame::new(self.origin_x_m, self.origin_y_m, self.origin_z_m),
            limits: Limits {
                max_rate_mm_per_min: three(&self.max_rate_mm_per_min),
                accel_mm_per_s2: three(&self.accel_mm_per_s2),
            },
            workspace: Workspace::from_travel(three(&self.travel_mm), self.workspace_margin_mm),
            reach_x_min_m: self.reach_x_min_m,
            reach_x_max_m: self.reach_x_max_m,
            approach_height_m: self.approach_height_m,
            safe_z_m: self.safe_z_m,
            descend_s: self.descend_s,
            track_s: self.track_s,
            lag_s: self.lag_s,
        }
    }

    /// The bin for `class`, belt frame.
    pub fn bin_for(&self, class: &str) -> Option<(f64, f64)> {
        let k = self.bin_classes.iter().position(|c| c == class)?;
        Some((self.bin_x_m[k], self.bin_y_m[k]))
    }

    /// The GRBL settings the board must have, by number.
    pub fn expected_settings(&self) -> Vec<(u16, f64)> {
        let mut out = vec![(22, if self.homing { 1.0 } else { 0.0 })];
        for a in 0..3u16 {
            out.push((110 + a, self.max_rate_mm_per_min[a as usize]));
            out.push((120 + a, self.accel_mm_per_s2[a as usize]));
            out.push((130 + a, self.travel_mm[a as usize]));
        }
        out
    }
}

/// What differs between the board's `$$` and what the params expect, each
/// naming the setting, the board's value and the param's.
pub fn settings_mismatches(
    expected: &[(u16, f64)],
    board: &std::collections::HashMap<u16, f64>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|&(n, want)| match board.get(&n) {
            None => Some(format!("${n} missing from the board's $$")),
            Some(&got) if (got - want).abs() > 1e-6 * want.abs().max(1.0) => Some(format!(
                "${n}={got} on the board, but the params say {want}"
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_params_are_all_a_cncs_model_is_made_of() {
        let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        for n in MODEL_PARAMS {
            assert!(names.contains(n), "{n} is not a parameter");
        }
        // Another CNC: every model parameter differs from the defaults.
        let d = MotionParams::default();
        let other = MotionParams {
            cnc_id: "7".into(),
            origin_x_m: d.origin_x_m + 0.8,
            origin_y_m: d.origin_y_m + 0.01,
            origin_z_m: d.origin_z_m + 0.02,
            max_rate_mm_per_min: vec![20_000.0, 18_000.0, 9_000.0],
            accel_mm_per_s2: vec![2_000.0, 1_500.0, 800.0],
            travel_mm: vec![690.0, 790.0, 140.0],
            workspace_margin_mm: 2.0,
            reach_x_min_m: d.reach_x_min_m + 0.8,
            reach_x_max_m: d.reach_x_max_m + 0.78,
            approach_height_m: d.approach_height_m + 0.01,
            safe_z_m: d.safe_z_m + 0.01,
            descend_s: d.descend_s + 0.05,
            track_s: d.track_s + 0.05,
            lag_s: d.lag_s + 0.01,
            bin_classes: vec!["blue_bar".into()],
            bin_x_m: vec![d.reach_x_min_m + 1.1],
            bin_y_m: vec![0.7],
            release_dwell_s: d.release_dwell_s + 0.1,
            reconnect_max_s: 3.0,
            ..d.clone()
        };
        assert!(other.validate().is_ok(), "{:?}", other.validate());
        // Read as the scheduler reads it: those parameters, defaults for
        // the rest.
        let (from, mut to) = (
            serde_json::to_value(&other).unwrap(),
            serde_json::to_value(&d).unwrap(),
        );
        for n in MODEL_PARAMS {
            to[*n] = from[*n].clone();
        }
        let read: MotionParams = serde_json::from_value(to).unwrap();
        assert_eq!(
            crate::sched::reach::CncModel::from_params(&read),
            crate::sched::reach::CncModel::from_params(&other)
        );
        assert_ne!(
            crate::sched::reach::CncModel::from_params(&d),
            crate::sched::reach::CncModel::from_params(&other)
        );
    }

    #[test]
    fn board_settings_are_checked_by_number_naming_each_difference() {
        let p = MotionParams::default();
        let mut board: std::collections::HashMap<u16, f64> =
            p.expected_settings().into_iter().collect();
        assert!(settings_mismatches(&p.expected_settings(), &board).is_empty());
        board.insert(121, 500.0);
        board.remove(&132);
        let m = settings_mismatches(&p.expected_settings(), &board);
        assert_eq!(
            m,
            vec![
                "$121=500 on the board, but the params say 3000".to_string(),
                "$132 missing from the board's $$".to_string()
            ]
        );
        assert_eq!(p.bin_for("red_box"), Some((2.3, 0.68)));
        assert_eq!(p.bin_for("blue_bar"), None);
        let bad = MotionParams {
            travel_mm: vec![1.0, 2.0],
            ..MotionParams::default()
        };
        assert!(bad.validate().unwrap_err().contains("travel_mm needs 3"));
        // A window past machine zero's end of the belt: named, with where
        // the workspace is.
        let off = MotionParams {
            reach_x_min_m: 3.0,
            reach_x_max_m: 3.5,
            ..MotionParams::default()
        };
        let e = off.validate().unwrap_err();
        assert!(
            e.contains("outside the workspace's X") && e.contains("..2.5990 m"),
            "{e}"
        );
    }
}
