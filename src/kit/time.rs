//! Conversions between ROS time messages and std durations.

use r2r::builtin_interfaces::msg::Time;
use std::time::Duration;

pub fn to_duration(t: &Time) -> Duration {
    Duration::new(t.sec.max(0) as u64, t.nanosec)
}

pub fn from_duration(d: Duration) -> Time {
    Time {
        sec: d.as_secs() as i32,
        nanosec: d.subsec_nanos(),
    }
}

/// Wall-clock time as a ROS stamp. Only shells call this; cores take time as input.
pub fn wall_now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    from_duration(d)
}

/// Wall-clock nanoseconds since the epoch (lifecycle_msgs/TransitionEvent.timestamp).
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
