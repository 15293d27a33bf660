//! Parameters of the `state_manager` node.

use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateParams {
    pub heartbeat_period_s: f64,
    pub database_path: String,
    pub size_limit_mb: f64,
    pub list_limit: i64,
    pub reach_end_x_m: f64,
    pub expire_after_s: f64,
    pub republish_events: i64,
    pub retention_days: f64,
    pub prune_period_s: f64,
    pub prune_batch: i64,
    pub snapshot_dir: String,
    pub snapshot_period_s: f64,
    pub snapshot_keep: i64,
}

impl Default for StateParams {
    fn default() -> Self {
        StateParams {
            heartbeat_period_s: 1.0,
            database_path: "cncpick-state.sqlite".into(),
            size_limit_mb: 0.0,
            list_limit: 1000,
            reach_end_x_m: 3.4,
            expire_after_s: 20.0,
            republish_events: 1000,
            retention_days: 30.0,
            prune_period_s: 60.0,
            prune_batch: 500,
            snapshot_dir: String::new(),
            snapshot_period_s: 600.0,
            snapshot_keep: 6,
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new(
        "database_path",
        "The SQLite database (created if missing; a damaged one is refused, never overwritten)",
    )
    .read_only(),
    Spec::new(
        "size_limit_mb",
        "Cap on the database's size, MB (0: none); once it is reached, new work is refused as on \
         a full disk. Takes effect at once; never below the pages already in use",
    )
    .range(0.0, 1.0e7),
    Spec::new(
        "list_limit",
        "ListObjects returns at most this many when the request sets no limit",
    )
    .range(1.0, 1.0e6),
    Spec::new(
        "reach_end_x_m",
        "Belt x of the downstream end of the last CNC's reach window, m: on recovery an open \
         object predicted past it is MISSED",
    )
    .range(-1.0e3, 1.0e3),
    Spec::new(
        "expire_after_s",
        "An object still DETECTED or ASSIGNED, unchanged this long and predicted past \
         reach_end_x_m, left the cell with nobody to settle it: MISSED (0: never)",
    )
    .range(0.0, 86_400.0),
    Spec::new(
        "republish_events",
        "On activation, publish again this many of the latest events, so late joiners of the \
         transient_local topic get them after a restart",
    )
    .range(0.0, 1.0e4)
    .read_only(),
    Spec::new(
        "retention_days",
        "Terminal objects last changed longer ago than this are pruned, days (0: keep all)",
    )
    .range(0.0, 1.0e5),
    Spec::new(
        "prune_period_s",
        "How often retention looks for old objects, s",
    )
    .range(0.01, 1.0e6),
    Spec::new(
        "prune_batch",
        "Objects removed per retention transaction (requests wait at most one batch)",
    )
    .range(1.0, 1.0e5),
    Spec::new(
        "snapshot_dir",
        "Where online backups go ('': beside the database, in <database_path>.snapshots)",
    )
    .read_only(),
    Spec::new(
        "snapshot_period_s",
        "Time between online backups, s (0: none)",
    )
    .range(0.0, 1.0e6)
    .read_only(),
    Spec::new("snapshot_keep", "How many backups to keep, newest first")
        .range(1.0, 1.0e4)
        .read_only(),
];

impl NodeParams for StateParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        if self.database_path.trim().is_empty() {
            return Err("database_path is empty: name the SQLite file".into());
        }
        if self.snapshot_period_s > 0.0 && self.snapshot_period_s < 1.0 {
            return Err(format!(
                "snapshot_period_s {}: use 0 (none) or at least 1 s",
                self.snapshot_period_s
            ));
        }
        Ok(())
    }
}

impl StateParams {
    /// The folder snapshots go to.
    pub fn snapshot_folder(&self) -> std::path::PathBuf {
        if self.snapshot_dir.is_empty() {
            format!("{}.snapshots", self.database_path).into()
        } else {
            self.snapshot_dir.clone().into()
        }
    }
}

impl KitParams for StateParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}
