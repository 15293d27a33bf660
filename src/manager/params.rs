//! The manager's parameters (section `manager` of a params file).

use super::core::Config;
use super::metrics::MetricsConfig;
use crate::kit::params::{NodeParams, Spec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerParams {
    /// The managed nodes' names in /cell, in bring-up order (down in reverse).
    pub node_names: Vec<String>,
    pub autostart: bool,
    pub agent_heartbeat_s: f64,
    pub critical_s: f64,
    pub recover_grace_s: f64,
    pub breaker_failures: i64,
    pub breaker_open_s: f64,
    pub bringup_timeout_s: f64,
    pub transition_timeout_s: f64,
    pub tick_period_s: f64,
    pub metrics_period_s: f64,
    pub metrics_window_s: f64,
    pub metrics_bind: String,
    pub miss_rate_warning: f64,
    pub lanes: i64,
    pub belt_length_m: f64,
    pub cnc_ids: Vec<String>,
}

impl Default for ManagerParams {
    fn default() -> Self {
        ManagerParams {
            node_names: Vec::new(),
            autostart: true,
            agent_heartbeat_s: 3.0,
            critical_s: 10.0,
            recover_grace_s: 5.0,
            breaker_failures: 3,
            breaker_open_s: 60.0,
            bringup_timeout_s: 30.0,
            transition_timeout_s: 40.0,
            tick_period_s: 0.1,
            metrics_period_s: 1.0,
            metrics_window_s: 60.0,
            metrics_bind: "127.0.0.1:9464".into(),
            miss_rate_warning: 0.1,
            lanes: 4,
            belt_length_m: 4.0,
            cnc_ids: vec!["1".into(), "2".into()],
        }
    }
}

const SPECS: &[Spec] = &[
    Spec::new(
        "node_names",
        "Managed nodes in /cell, in bring-up order (down in reverse)",
    )
    .read_only(),
    Spec::new("autostart", "Bring the cell up at start").read_only(),
    Spec::new(
        "agent_heartbeat_s",
        "A node silent this long: warning, s (seed: 3)",
    )
    .range(0.1, 600.0),
    Spec::new(
        "critical_s",
        "A node silent this long: critical, and a restart, s (seed: 10)",
    )
    .range(0.1, 3600.0),
    Spec::new(
        "recover_grace_s",
        "A live node out of the wanted state this long is reconfigured, s",
    )
    .range(0.0, 600.0),
    Spec::new(
        "breaker_failures",
        "Failed recoveries in a row that open a node's breaker",
    )
    .range(1.0, 100.0),
    Spec::new(
        "breaker_open_s",
        "How long an open breaker stops recoveries, s",
    )
    .range(0.0, 3600.0),
    Spec::new(
        "bringup_timeout_s",
        "Waiting for a node to appear at bring-up or after a respawn, s",
    )
    .range(0.1, 600.0),
    Spec::new(
        "transition_timeout_s",
        "Each lifecycle transition, at most, s (configure opens serial ports)",
    )
    .range(0.1, 600.0),
    Spec::new("tick_period_s", "Heartbeats checked this often, s").range(0.005, 5.0),
    Spec::new(
        "metrics_period_s",
        "CellMetrics, /diagnostics and /metrics refreshed this often, s",
    )
    .range(0.05, 600.0),
    Spec::new("metrics_window_s", "KPIs over this window, s").range(1.0, 86_400.0),
    Spec::new(
        "metrics_bind",
        "Prometheus endpoint address, host:port ('' = none; port 0 = any)",
    )
    .read_only(),
    Spec::new(
        "miss_rate_warning",
        "A miss rate above this is a warning alert (seed: 0.1)",
    )
    .range(0.0, 1.0),
    Spec::new("lanes", "Belt lanes, for per-lane KPIs").range(1.0, 64.0),
    Spec::new("belt_length_m", "Belt length, for congestion, m").range(0.01, 1000.0),
    Spec::new("cnc_ids", "The CNCs, for per-CNC KPIs").read_only(),
];

impl NodeParams for ManagerParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }

    fn validate(&self) -> Result<(), String> {
        if self.critical_s < self.agent_heartbeat_s {
            return Err(format!(
                "critical_s ({}) must not be under agent_heartbeat_s ({})",
                self.critical_s, self.agent_heartbeat_s
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.node_names {
            if n.is_empty() || n.contains('/') {
                return Err(format!(
                    "node_names: {n:?} is not a node name (short names in /cell)"
                ));
            }
            if !seen.insert(n) {
                return Err(format!("node_names: {n:?} is listed twice"));
            }
        }
        Ok(())
    }
}

impl ManagerParams {
    pub fn core_config(&self) -> Config {
        Config {
            agent_heartbeat_s: self.agent_heartbeat_s,
            critical_s: self.critical_s,
            recover_grace_s: self.recover_grace_s,
            breaker_failures: self.breaker_failures.max(1) as u32,
            breaker_open_s: self.breaker_open_s,
            epoch_issuer: "state_manager".into(),
            epoch_holders: self.cnc_ids.iter().map(|id| format!("cnc_{id}")).collect(),
        }
    }

    pub fn metrics_config(&self) -> MetricsConfig {
        MetricsConfig {
            window_s: self.metrics_window_s,
            lanes: self.lanes.clamp(1, 64) as u8,
            belt_length_m: self.belt_length_m,
            cnc_ids: self.cnc_ids.clone(),
            miss_rate_warning: self.miss_rate_warning,
            min_samples: 10,
        }
    }
}
