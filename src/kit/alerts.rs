//! Alerts on `alerts` (cncpick_msgs/Alert): what a node raises for the
//! operators and for the manager (architecture.md: on a timeout, log it,
//! make safe, and notify). One topic, one QoS and one way to make an
//! alert, for every node.

use crate::kit::lifecycle::{ActiveGate, LifecyclePublisher};
use crate::kit::time::wall_now;
use crate::msgs::msg as m;
use r2r::QosProfile;
use std::sync::{Arc, Mutex};

/// The topic, in the node's namespace.
pub const TOPIC: &str = "alerts";

/// A pick's outcome the state manager did not record, or recorded
/// otherwise: raised by the CNC when its record is refused, and by the
/// state manager for one reported with a new epoch that it could not take.
pub const PICK_OUTCOME_UNRECORDED: &str = "pick_outcome_unrecorded";

/// Reliable, the last 100 kept: a burst of alerts reaches the manager
/// whole.
pub fn qos() -> QosProfile {
    QosProfile::default().reliable().keep_last(100)
}

/// An alert named `name`, raised by (or, from the manager, about) `node`,
/// about `object` if there is one, stamped now.
pub fn alert(
    severity: u8,
    name: &str,
    node: &str,
    object: Option<&[u8; 16]>,
    message: String,
) -> m::Alert {
    let mut a = m::Alert {
        severity,
        name: name.into(),
        message,
        node: node.into(),
        stamp: wall_now(),
        ..Default::default()
    };
    if let Some(id) = object {
        a.object_id.uuid = id.to_vec();
    }
    a
}

/// A condition raised once per episode, not once per occurrence: the first
/// occurrence raises it, later ones are only counted, and its clearing
/// says how many there were (a full disk refuses every write while it
/// lasts; one alert, not one per write, tells the operator).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latch {
    occurrences: u64,
}

impl Latch {
    /// One more occurrence; true for the first of an episode (raise it).
    pub fn occurred(&mut self) -> bool {
        self.occurrences += 1;
        self.occurrences == 1
    }

    /// The condition has cleared: how many times it occurred in the
    /// episode that ended, or None if none was under way.
    pub fn cleared(&mut self) -> Option<u64> {
        (self.occurrences > 0).then(|| std::mem::take(&mut self.occurrences))
    }
}

/// A lifecycle node's alerts: published while the node is Active. A
/// failure to publish is logged, never raised: an alert must not take its
/// node down. Shared by the node's tasks (r2r's publishers are Send, not
/// Sync, hence the mutex).
#[derive(Clone)]
pub struct Alerts {
    node: String,
    publisher: Arc<Mutex<LifecyclePublisher<m::Alert>>>,
}

impl Alerts {
    /// `node`'s alerts on [`TOPIC`], gated by its lifecycle.
    pub fn new(n: &mut r2r::Node, node: &str, gate: ActiveGate) -> r2r::Result<Alerts> {
        Ok(Alerts {
            node: node.into(),
            publisher: Arc::new(Mutex::new(LifecyclePublisher::new(
                n.create_publisher(TOPIC, qos())?,
                gate,
            ))),
        })
    }

    /// Raises `name` from this node, about `object` if there is one.
    pub fn raise(&self, severity: u8, name: &str, object: Option<&[u8; 16]>, message: String) {
        self.publish(&alert(severity, name, &self.node, object, message));
    }

    /// Publishes `a` as it is (an alert naming another node).
    pub fn publish(&self, a: &m::Alert) {
        let published = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(a);
        if let Err(e) = published {
            tracing::warn!("{}: publishing an alert: {e}", self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_names_its_node_and_object_and_is_stamped() {
        let a = alert(
            m::Alert::ERROR as u8,
            "pick_outcome_unrecorded",
            "cnc_1",
            Some(&[7; 16]),
            "why".into(),
        );
        assert_eq!(
            (
                a.severity,
                a.name.as_str(),
                a.node.as_str(),
                a.message.as_str()
            ),
            (
                m::Alert::ERROR as u8,
                "pick_outcome_unrecorded",
                "cnc_1",
                "why"
            )
        );
        assert_eq!(a.object_id.uuid, vec![7; 16]);
        assert!(a.stamp.sec > 0);
        let none = alert(m::Alert::WARNING as u8, "x", "tracker", None, String::new());
        assert_eq!(
            none.object_id,
            r2r::unique_identifier_msgs::msg::UUID::default()
        );
    }

    #[test]
    fn a_latch_raises_the_first_of_an_episode_and_counts_the_rest() {
        let mut l = Latch::default();
        assert_eq!(l.cleared(), None);
        let raised: Vec<bool> = (0..4).map(|_| l.occurred()).collect();
        assert_eq!(raised, [true, false, false, false]);
        assert_eq!(l.cleared(), Some(4));
        assert_eq!(l.cleared(), None);
        // A new episode is raised again.
        assert!(l.occurred());
        assert_eq!(l.cleared(), Some(1));
    }
}
