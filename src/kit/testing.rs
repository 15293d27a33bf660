//! Helpers for tests that use real DDS: each one leases its own ROS_DOMAIN_ID
//! so parallel tests (Rust and Python alike) never hear each other.
//!
//! A lease is an exclusive lock on `<dir>/<id>.lock`; the Python tests in
//! test/python use the same directory and range, so the two suites share one pool.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// Domain ids handed out to tests. Fast DDS accepts 0..=232; the low ids are
/// left to people running a cell on the same machine.
pub const TEST_DOMAINS: std::ops::RangeInclusive<u32> = 100..=232;

pub fn lease_dir() -> PathBuf {
    std::env::var_os("CNCPICK_DOMAIN_LEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cncpick-ros-domains"))
}

/// Holds a domain id until dropped.
#[derive(Debug)]
pub struct DomainLease {
    pub id: u32,
    _lock: File,
}

impl DomainLease {
    /// Takes the first free domain id, starting from a point derived from the
    /// process id so concurrent test processes rarely contend.
    pub fn acquire() -> std::io::Result<Self> {
        let dir = lease_dir();
        std::fs::create_dir_all(&dir)?;
        let n = TEST_DOMAINS.end() - TEST_DOMAINS.start() + 1;
        let start = std::process::id() % n;
        for k in 0..n {
            let id = TEST_DOMAINS.start() + (start + k) % n;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{id}.lock")))?;
            if file.try_lock().is_ok() {
                return Ok(DomainLease { id, _lock: file });
            }
        }
        Err(std::io::Error::other(format!(
            "all test ROS domain ids {TEST_DOMAINS:?} are leased (lock files in {})",
            dir.display()
        )))
    }
}
