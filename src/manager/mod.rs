//! The `manager` node: ordered bring-up and shutdown of the cell, heartbeat
//! watch, restarts with a circuit breaker per node, alerts, and the cell's
//! KPIs (CellMetrics, /diagnostics, Prometheus).

pub mod core;
pub mod metrics;
pub mod node;
pub mod params;
pub mod prom;
