//! Helpers the integration tests share (each test binary uses some).
#![allow(dead_code)]

use cncpick::bag::reader::Bag;
use cncpick::sim::cell::SimCore;
use cncpick::sim::render::Renderer;
use std::path::PathBuf;

/// A fresh, empty directory for test `tag` of suite `suite` (per process).
pub fn temp_dir(suite: &str, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cncpick-{suite}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The camera of `core`'s cell.
pub fn renderer(core: &SimCore) -> Renderer {
    Renderer::for_config(&core.cfg).unwrap()
}

/// A message as read from a bag: its topic, log time (ns) and data.
pub type Read = (String, u64, Vec<u8>);

/// Every message `bag` holds, in its order, as (topic, log time, data).
pub fn messages_of(bag: &Bag) -> Vec<Read> {
    bag.messages
        .iter()
        .map(|m| {
            (
                bag.topics[m.topic].name.clone(),
                m.log_time_ns,
                m.data.clone(),
            )
        })
        .collect()
}

/// A child process killed (SIGKILL) and reaped when the test lets go of
/// it, failed or not: one left running would stay in a domain later tests
/// lease.
pub struct Killed(pub std::process::Child);

impl Killed {
    /// Kills and reaps it now.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.stop();
    }
}
