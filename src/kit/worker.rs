//! A thread that loops until told to stop, and is joined when stopped or
//! dropped: the shape of every blocking loop in cncpick (spin threads,
//! serial ports). A loop may own a state, handed back when it stops
//! ([`Worker::spawn_with`], [`Worker::finish`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Worker<S: Send + 'static = ()> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<S>>,
}

impl Worker {
    /// Runs `step` over and over on a thread named `name` until stopped.
    pub fn spawn(name: &str, mut step: impl FnMut() + Send + 'static) -> std::io::Result<Self> {
        Worker::spawn_with(name, (), move |_| step())
    }
}

impl<S: Send + 'static> Worker<S> {
    /// Runs `step` on `state` over and over on a thread named `name` until
    /// stopped; [`Worker::finish`] hands `state` back.
    pub fn spawn_with(
        name: &str,
        mut state: S,
        mut step: impl FnMut(&mut S) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    step(&mut state);
                }
                state
            })?;
        Ok(Worker {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the loop after its current step and waits for the thread.
    pub fn stop(&mut self) {
        self.join();
    }

    /// Stops the loop after its current step, waits for the thread, and
    /// hands its state back (none if a step panicked).
    pub fn finish(mut self) -> Option<S> {
        self.join()
    }

    fn join(&mut self) -> Option<S> {
        self.stop.store(true, Ordering::Release);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl<S: Send + 'static> Drop for Worker<S> {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_loop_hands_back_its_state_with_every_step_counted() {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Worker::spawn_with("counting", 0u64, move |n| {
            *n += 1;
            let _ = tx.send(*n);
            std::thread::yield_now();
        })
        .unwrap();
        // At least three steps taken, then stopped.
        for want in 1..=3 {
            assert_eq!(rx.recv().unwrap(), want);
        }
        let n = w.finish().expect("the loop's state");
        // Every step the loop took is in the state handed back.
        let sent: Vec<u64> = rx.try_iter().collect();
        assert_eq!(n, 3 + sent.len() as u64, "sent after the third: {sent:?}");
    }

    #[test]
    fn a_loop_that_panicked_hands_back_nothing() {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Worker::spawn_with("panicking", (), move |_| {
            let _ = tx.send(());
            panic!("a step failed")
        })
        .unwrap();
        // In its first step (past the stop flag): it will panic.
        rx.recv().unwrap();
        assert!(w.finish().is_none());
    }
}
