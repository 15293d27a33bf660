//! Parameters of the `scheduler` node. [`SchedParams::config`] turns them
//! into the core's [`Config`]. The CNCs' kinematics, reach windows and
//! bins are not repeated here: the node reads each `cnc_<id>` node's own
//! parameters (one source of truth).

use super::core::Config;
use super::policy::Policy;
use super::protocol::Timeouts;
use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{same_lengths, NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedParams {
    pub heartbeat_period_s: f64,
    pub policy: String,
    pub balance_ratios: Vec<f64>,
    pub cnc_ids: Vec<String>,
    pub queue_max: i64,
    pub min_confidence: f64,
    pub class_names: Vec<String>,
    pub class_height_m: Vec<f64>,
    pub goal_accept_s: f64,
    pub goal_lead_s: f64,
    pub commit_horizon_s: f64,
    pub assignment_to_pickup_s: f64,
    pub backoff_initial_s: f64,
    pub backoff_max_s: f64,
    pub status_timeout_s: f64,
    pub epoch_refused_report_s: f64,
    pub tick_period_s: f64,
    pub state_call_timeout_s: f64,
    pub state_call_attempts: i64,
    pub model_timeout_s: f64,
    pub input_log_path: String,
}

impl Default for SchedParams {
    fn default() -> Self {
        SchedParams {
            heartbeat_period_s: 1.0,
            policy: "lookahead".into(),
            balance_ratios: Vec::new(),
            cnc_ids: vec!["1".into(), "2".into()],
            queue_max: 3,
            min_confidence: 0.5,
            class_names: vec!["red_box".into(), "green_disc".into(), "blue_bar".into()],
            class_height_m: vec![0.04, 0.02, 0.03],
            goal_accept_s: 2.0,
            goal_lead_s: 3.0,
            commit_horizon_s: 4.0,
            assignment_to_pickup_s: 30.0,
            backoff_initial_s: 0.5,
            backoff_max_s: 8.0,
            status_timeout_s: 0.5,
            epoch_refused_report_s: 3.0,
            tick_period_s: 0.05,
            state_call_timeout_s: 2.0,
            state_call_attempts: 3,
            model_timeout_s: 2.0,
            input_log_path: String::new(),
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new("policy", "Which CNC picks what")
        .choices(&["greedy", "balance", "lookahead"])
        .read_only(),
    Spec::new(
        "balance_ratios",
        "Load balance: each CNC's share, in cnc_ids order ([] = equal)",
    )
    .read_only(),
    Spec::new("cnc_ids", "The CNCs (nodes cnc_<id>), any order").read_only(),
    Spec::new(
        "queue_max",
        "Picks a CNC may hold, the one in progress included",
    )
    .range(1.0, 16.0)
    .read_only(),
    Spec::new(
        "min_confidence",
        "Detections below this are never assigned (bypassed if they stay below)",
    )
    .range(0.0, 1.0)
    .read_only(),
    Spec::new("class_names", "Object classes").read_only(),
    Spec::new("class_height_m", "Each class's height above the belt, m").read_only(),
    Spec::new(
        "goal_accept_s",
        "A goal not accepted this long is revoked, s",
    )
    .range(0.05, 60.0)
    .read_only(),
    Spec::new(
        "goal_lead_s",
        "A goal goes out at most this long before contact, s",
    )
    .range(0.1, 60.0)
    .read_only(),
    Spec::new(
        "commit_horizon_s",
        "Assign only picks touching within this; later ones are planned again, s",
    )
    .range(0.1, 600.0)
    .read_only(),
    Spec::new(
        "assignment_to_pickup_s",
        "Assigned but not picking this long: revoked, s",
    )
    .range(0.5, 600.0)
    .read_only(),
    Spec::new(
        "backoff_initial_s",
        "First wait before reassigning after a failure, s",
    )
    .range(0.0, 60.0)
    .read_only(),
    Spec::new("backoff_max_s", "Longest wait before reassigning, s")
        .range(0.0, 600.0)
        .read_only(),
    Spec::new(
        "status_timeout_s",
        "A CNC silent this long is out of service, s",
    )
    .range(0.05, 60.0)
    .read_only(),
    Spec::new(
        "epoch_refused_report_s",
        "A CNC whose epoch the state manager refuses this long, still Active in it, \
         is reported (cnc_epoch_stale) for the manager to re-activate, s",
    )
    .range(0.1, 600.0)
    .read_only(),
    Spec::new(
        "tick_period_s",
        "Timeouts checked this often; decisions at each TrackArray, at most this often, s",
    )
    .range(0.005, 5.0)
    .read_only(),
    Spec::new(
        "state_call_timeout_s",
        "Each state manager call, at most, s",
    )
    .range(0.05, 60.0)
    .read_only(),
    Spec::new("state_call_attempts", "Tries per state manager call")
        .range(1.0, 20.0)
        .read_only(),
    Spec::new("model_timeout_s", "Reading a CNC's params, at most, s")
        .range(0.05, 60.0)
        .read_only(),
    Spec::new(
        "input_log_path",
        "Log every input as JSON lines here, for replay ('' = none)",
    )
    .read_only(),
];

impl SchedParams {
    pub fn policy(&self) -> Result<Policy, String> {
        Ok(match self.policy.as_str() {
            "greedy" => Policy::Greedy,
            "balance" => Policy::Balance {
                ratios: if self.balance_ratios.is_empty() {
                    vec![1.0; self.cnc_ids.len()]
                } else {
                    self.balance_ratios.clone()
                },
            },
            "lookahead" => Policy::Lookahead,
            other => {
                return Err(format!(
                    "policy {other:?} is not greedy, balance or lookahead"
                ))
            }
        })
    }

    /// The core's settings, or what is wrong (naming the parameters).
    pub fn config(&self) -> Result<Config, String> {
        let policy = self.policy()?;
        same_lengths(&[
            ("class_names", self.class_names.len()),
            ("class_height_m", self.class_height_m.len()),
        ])?;
        if !self.balance_ratios.is_empty() {
            same_lengths(&[
                ("cnc_ids", self.cnc_ids.len()),
                ("balance_ratios", self.balance_ratios.len()),
            ])?;
            if self.balance_ratios.iter().any(|r| r.is_nan() || *r <= 0.0) {
                return Err("balance_ratios must all be above 0".into());
            }
        }
        if self.cnc_ids.is_empty() {
            return Err("cnc_ids is empty: there is nobody to schedule".into());
        }
        let mut ids = self.cnc_ids.clone();
        ids.sort();
        ids.dedup();
        if ids.len() != self.cnc_ids.len() {
            return Err("cnc_ids has a repeated id".into());
        }
        if let Some(h) = self
            .class_height_m
            .iter()
            .find(|h| !(0.0..1.0).contains(*h))
        {
            return Err(format!("class_height_m {h} is not in [0, 1) m"));
        }
        if self.goal_lead_s < self.tick_period_s {
            return Err("goal_lead_s must be at least tick_period_s".into());
        }
        if self.commit_horizon_s < self.goal_lead_s {
            return Err("commit_horizon_s must be at least goal_lead_s".into());
        }
        Ok(Config {
            policy,
            cnc_ids: self.cnc_ids.clone(),
            queue_max: self.queue_max as usize,
            min_confidence: self.min_confidence,
            heights_m: self
                .class_names
                .iter()
                .cloned()
                .zip(self.class_height_m.iter().copied())
                .collect(),
            timeouts: Timeouts {
                goal_accept_s: self.goal_accept_s,
                assignment_to_pickup_s: self.assignment_to_pickup_s,
                backoff_initial_s: self.backoff_initial_s,
                backoff_max_s: self.backoff_max_s,
                goal_lead_s: self.goal_lead_s,
                adopt_settle_s: self.status_timeout_s,
            },
            status_timeout_s: self.status_timeout_s,
            commit_horizon_s: self.commit_horizon_s,
            decide_period_s: self.tick_period_s,
            epoch_refused_report_s: self.epoch_refused_report_s,
        })
    }
}

impl NodeParams for SchedParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        self.config().map(|_| ())
    }
}

impl KitParams for SchedParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::params::{load, RosArgs};
    use std::path::PathBuf;

    fn load_from(file: PathBuf) -> Result<SchedParams, String> {
        let args = RosArgs {
            params_files: vec![file],
            ..RosArgs::default()
        };
        load::<SchedParams>("/cell/scheduler", &args, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_params_load_and_bad_ones_are_refused_naming_file_and_key() {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("params/sim.yaml");
        let p = load_from(shipped).unwrap();
        assert_eq!(p, SchedParams::default(), "sim.yaml states the defaults");
        let dir = tempfile::Builder::new()
            .prefix("cncpick-sched-params-")
            .tempdir()
            .unwrap();
        let cases: &[(&str, &[&str])] = &[
            ("policy: fastest", &["policy", "fastest"]),
            ("queue_max: 0", &["queue_max"]),
            ("class_height_m: [0.04]", &["class_names", "class_height_m"]),
            ("balance_ratios: [1.0, 0.0]", &["balance_ratios"]),
            (
                "commit_horizon_s: 1.0",
                &["commit_horizon_s", "goal_lead_s"],
            ),
            ("cnc_ids: ['1', '1']", &["cnc_ids"]),
        ];
        for (body, wanted) in cases {
            let file = dir.path().join("sched.yaml");
            std::fs::write(
                &file,
                format!("scheduler:\n  ros__parameters:\n    {body}\n"),
            )
            .unwrap();
            let e = load_from(file).expect_err(body);
            assert!(e.contains("sched.yaml"), "{body}: {e}");
            for w in *wanted {
                assert!(e.contains(w), "{body}: expected {w:?} in {e}");
            }
        }
    }
}
