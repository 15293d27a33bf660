//! Heartbeats and /diagnostics: every node says it is alive, and in which
//! lifecycle state, every `heartbeat_period_s`.

use crate::kit::lifecycle::State;
use crate::kit::spin::SharedNode;
use crate::kit::time::wall_now;
use crate::msgs::msg::Heartbeat;
use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};
use r2r::QosProfile;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const HEARTBEAT_TOPIC: &str = "heartbeat";
pub const DIAGNOSTICS_TOPIC: &str = "/diagnostics";

/// Counter keys every node reports the same way, for the manager's per-node
/// metrics: messages handled and errors among them (running counts), and
/// gauges: work queued, and the latest processing latency in microseconds.
pub const MESSAGES: &str = "messages";
pub const ERRORS: &str = "errors";
pub const QUEUE_DEPTH: &str = "queue_depth";
pub const LATENCY_US: &str = "latency_us";

/// The diagnostic level for a lifecycle state: a node that is configured or
/// idle is fine; one handling an error is not; a finalized one is gone.
pub fn level_of(state: State) -> u8 {
    match state {
        State::ErrorProcessing => DiagnosticStatus::ERROR as u8,
        State::Finalized | State::Unknown => DiagnosticStatus::STALE as u8,
        _ => DiagnosticStatus::OK as u8,
    }
}

/// A node's running counts (frames dropped, messages refused, ...): kept
/// here by the node, reported in its /diagnostics status as key-values.
#[derive(Clone, Default, Debug)]
pub struct Counters(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl Counters {
    pub fn add(&self, key: &str, n: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert(0) += n;
    }
    /// Takes `n` from a gauge kept with [`Counters::add`] (never below 0).
    pub fn sub(&self, key: &str, n: u64) {
        if let Some(v) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            *v = v.saturating_sub(n);
        }
    }
    /// Sets a gauge (a value that goes up and down, e.g. a queue's depth).
    pub fn set(&self, key: &str, v: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), v);
    }
    pub fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// How often the lifecycle state is looked at between heartbeats.
const STATE_POLL: Duration = Duration::from_millis(50);

pub struct Health {
    task: JoinHandle<()>,
}

impl Health {
    /// Publishes a Heartbeat and a DiagnosticStatus for node `fqn` every
    /// `period()` (read each time, so a parameter update takes effect), and
    /// at once when the state `state()` reports changes, with that state.
    pub fn start(
        node: &SharedNode,
        fqn: &str,
        period: impl Fn() -> Duration + Send + 'static,
        state: impl Fn() -> State + Send + 'static,
        counters: Counters,
    ) -> anyhow::Result<Health> {
        let (beats, diags) = {
            let mut n = node.lock();
            (
                n.create_publisher::<Heartbeat>(HEARTBEAT_TOPIC, QosProfile::default())?,
                n.create_publisher::<DiagnosticArray>(DIAGNOSTICS_TOPIC, QosProfile::default())?,
            )
        };
        let name = fqn.to_string();
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut last: Option<State> = None;
            let mut due = tokio::time::Instant::now();
            loop {
                // Every period, and at once when the lifecycle state changes
                // (a watcher learns of a node back in Active without waiting
                // out a period).
                let s = state();
                let now = tokio::time::Instant::now();
                if last == Some(s) && now < due {
                    tokio::time::sleep((due - now).min(STATE_POLL)).await;
                    continue;
                }
                last = Some(s);
                // Parameters are validated, but never spin on a zero period.
                due = now + period().max(Duration::from_millis(1));
                seq += 1;
                let stamp = wall_now();
                let hb = Heartbeat {
                    node: name.clone(),
                    seq,
                    state: s.id(),
                    stamp: stamp.clone(),
                };
                let mut values = vec![
                    KeyValue {
                        key: "lifecycle_state".into(),
                        value: s.label().into(),
                    },
                    KeyValue {
                        key: "heartbeat_seq".into(),
                        value: seq.to_string(),
                    },
                ];
                values.extend(counters.snapshot().into_iter().map(|(key, v)| KeyValue {
                    key,
                    value: v.to_string(),
                }));
                let mut diag = DiagnosticArray::default();
                diag.header.stamp = stamp;
                diag.status.push(DiagnosticStatus {
                    level: level_of(s),
                    name: name.clone(),
                    message: s.label().into(),
                    hardware_id: String::new(),
                    values,
                });
                if let Err(e) = beats.publish(&hb).and_then(|_| diags.publish(&diag)) {
                    tracing::warn!(node = %name, "publishing health: {e}");
                }
            }
        });
        Ok(Health { task })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_goes_up_and_down_and_never_below_zero() {
        let c = Counters::default();
        c.add(QUEUE_DEPTH, 3);
        c.sub(QUEUE_DEPTH, 1);
        assert_eq!(c.get(QUEUE_DEPTH), 2);
        c.sub(QUEUE_DEPTH, 5);
        assert_eq!(c.get(QUEUE_DEPTH), 0);
        // Taking from a gauge never added leaves no entry.
        c.sub(MESSAGES, 1);
        assert_eq!(c.snapshot(), vec![(QUEUE_DEPTH.to_string(), 0)]);
    }
}
