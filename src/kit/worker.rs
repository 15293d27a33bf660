//! A thread that loops until told to stop, and is joined when stopped or
//! dropped: the shape of every blocking loop in cncpick (spin threads,
//! serial ports).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `step` over and over on a thread named `name` until stopped.
    pub fn spawn(name: &str, mut step: impl FnMut() + Send + 'static) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    step();
                }
            })?;
        Ok(Worker {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the loop after its current step and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
