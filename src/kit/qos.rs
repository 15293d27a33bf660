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

/// Services many clients call at once (the state manager's): the default
/// service QoS, keeping 1000 requests instead of 10, so a burst waits its
/// turn instead of being dropped.
pub fn busy_service() -> QosProfile {
    QosProfile::services_default().keep_last(1000)
}
