//! One dedicated spin thread per node, stopped and joined before the node is
//! dropped (exiting while rcl is spinning corrupts the heap).

use crate::kit::worker::Worker;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node shared between its spin thread and the async tasks that create
/// publishers, subscriptions and clients on it.
pub type SharedNode = Arc<Mutex<r2r::Node>>;

/// How long one spin_once may block; bounds how long stop() waits.
pub const SPIN_SLICE: Duration = Duration::from_millis(10);

pub struct Spinner {
    worker: Worker,
}

impl Spinner {
    pub fn start(node: SharedNode) -> Self {
        let worker = Worker::spawn("spin", move || {
            // A poisoned lock means a task panicked while holding the node;
            // keep spinning so shutdown can still proceed.
            let mut n = node.lock().unwrap_or_else(|e| e.into_inner());
            n.spin_once(SPIN_SLICE);
            drop(n);
            // Let other users of the node take the lock between slices.
            std::thread::yield_now();
        })
        .expect("spawning a thread only fails when the OS is out of resources");
        Spinner { worker }
    }

    /// Stops spinning and waits for the thread; afterwards the node may be dropped.
    pub fn stop(&mut self) {
        self.worker.stop();
    }
}

/// Creates a node in `namespace`, after checking the environment.
pub fn create_node(
    ctx: &r2r::Context,
    name: &str,
    namespace: &str,
) -> Result<SharedNode, r2r::Error> {
    let node = r2r::Node::create(ctx.clone(), name, namespace)?;
    Ok(Arc::new(Mutex::new(node)))
}
