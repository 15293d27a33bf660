//! Parameters of the example node. Names carry units; every default lives here.

use crate::kit::node::{KitParams, HEARTBEAT_SPEC};
use crate::kit::params::{NodeParams, Spec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleParams {
    pub heartbeat_period_s: f64,
    pub tick_period_s: f64,
    /// A transition whose callback fails, for tests of the failure paths.
    pub fail_on: String,
    pub fail_mode: String,
    /// A GetObject service to call on every tick while active ("" = none),
    /// through the kit's bounded, retried, circuit-broken calls.
    pub peer_service: String,
    pub peer_timeout_s: f64,
    /// Failures in a row that open the circuit breaker around peer calls.
    pub peer_breaker_failures: i64,
    pub peer_breaker_open_s: f64,
}

impl Default for ExampleParams {
    fn default() -> Self {
        ExampleParams {
            heartbeat_period_s: 1.0,
            tick_period_s: 0.05,
            fail_on: String::new(),
            fail_mode: "error".into(),
            peer_service: String::new(),
            peer_timeout_s: 2.0,
            peer_breaker_failures: 5,
            peer_breaker_open_s: 60.0,
        }
    }
}

const SPECS: &[Spec] = &[
    HEARTBEAT_SPEC,
    Spec::new(
        "tick_period_s",
        "Period of the ticks published while active, s",
    )
    .range(0.001, 10.0),
    Spec::new("fail_on", "Transition whose callback fails (tests only)").choices(&[
        "",
        "configure",
        "activate",
        "deactivate",
        "cleanup",
        "shutdown",
    ]),
    Spec::new(
        "fail_mode",
        "How it fails: failure (stay) or error (ErrorProcessing)",
    )
    .choices(&["failure", "error"]),
    Spec::new(
        "peer_service",
        "GetObject service called on each tick while active; empty for none",
    )
    .read_only(),
    Spec::new("peer_timeout_s", "Bound on each call to peer_service, s").range(0.001, 30.0),
    Spec::new(
        "peer_breaker_failures",
        "Failures in a row that open the breaker",
    )
    .range(1.0, 1000.0),
    Spec::new(
        "peer_breaker_open_s",
        "How long the breaker stays open before a probe, s",
    )
    .range(0.1, 3600.0),
];

impl NodeParams for ExampleParams {
    fn specs() -> &'static [Spec] {
        SPECS
    }
    fn validate(&self) -> Result<(), String> {
        if self.tick_period_s > self.heartbeat_period_s * 100.0 {
            return Err(format!(
                "tick_period_s {} is more than 100 heartbeats ({} s each)",
                self.tick_period_s, self.heartbeat_period_s
            ));
        }
        Ok(())
    }
}

impl KitParams for ExampleParams {
    fn heartbeat_period(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_period_s)
    }
}
