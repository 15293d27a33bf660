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
}

impl Default for StateParams {
    fn default() -> Self {
        StateParams {
            heartbeat_period_s: 1.0,
            database_path: "cncpick-state.sqlite".into(),
            size_limit_mb: 0.0,
            list_limit: 1000,
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
        "Cap on the database's size, MB (0: none); past it, new work is refused as on a full disk",
    )
    .range(0.0, 1.0e7)
    .read_only(),
    Spec::new(
        "list_limit",
        "ListObjects returns at most this many when the request sets no limit",
    )
    .range(1.0, 1.0e6),
];

impl NodeParams for StateParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        if self.database_path.trim().is_empty() {
            return Err("database_path is empty: name the SQLite file".into());
        }
        Ok(())
    }
}

impl KitParams for StateParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}
