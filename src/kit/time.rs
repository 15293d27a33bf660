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

/// A stamp as seconds.
pub fn seconds(t: &Time) -> f64 {
    to_duration(t).as_secs_f64()
}

/// Seconds as a stamp (negative ones as 0).
pub fn from_seconds(s: f64) -> Time {
    from_duration(Duration::from_secs_f64(s.max(0.0)))
}

/// Wall-clock seconds since the epoch. Only shells call this.
pub fn wall_now_s() -> f64 {
    seconds(&wall_now())
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
