//! Helpers the integration tests share (each test binary uses some).
#![allow(dead_code)]

use cncpick::bag::reader::Bag;
use cncpick::sim::cell::SimCore;
use cncpick::sim::render::Renderer;
use std::path::Path;

/// A fresh, empty directory for test `tag` of suite `suite`.
pub fn temp_dir(suite: &str, tag: &str) -> Scratch {
    Scratch::new(&format!("cncpick-{suite}-{tag}-"))
}

/// A fresh, empty directory under the system's temporary folder, removed
/// when dropped: a test run leaves nothing behind. A failing test's is kept
/// (its path printed), for a look at what it wrote.
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        Scratch(Some(dir))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.0.take().filter(|_| std::thread::panicking()) {
            eprintln!("kept for a look: {}", d.keep().display());
        }
    }
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
