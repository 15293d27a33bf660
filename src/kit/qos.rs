//! QoS profiles the architecture fixes for shared topics, so publishers and
//! subscribers in different nodes agree.

use r2r::QosProfile;

/// `objects/events` (ObjectEvent): reliable and transient_local, so a node
/// that starts late still hears the recent history (architecture.md).
pub fn events() -> QosProfile {
    QosProfile::default()
        .reliable()
        .transient_local()
        .keep_last(1000)
}
