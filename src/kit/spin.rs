//! One dedicated spin thread per node, stopped and joined before the node is
//! dropped (exiting while rcl is spinning corrupts the heap).

use crate::kit::worker::Worker;
use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A node shared between its spin thread and the async tasks that create
/// publishers, subscriptions and clients on it.
///
/// A parking_lot lock, not std's: the spin thread takes the lock again
/// microseconds after releasing it, and std's lock lets it, while a waiter on
/// the other core is still waking. Measured here, with one subscription and one
/// service on the node, a thread waited a median 12 s for the lock of an
/// otherwise idle process. The spin thread now hands the lock to a waiter.
pub type SharedNode = Arc<Mutex<r2r::Node>>;

/// How long one spin_once may block; bounds how long stop() waits.
pub const SPIN_SLICE: Duration = Duration::from_millis(10);

pub struct Spinner {
    worker: Worker,
    slices: Arc<AtomicU64>,
}

impl Spinner {
    pub fn start(node: SharedNode) -> Self {
        let slices = Arc::new(AtomicU64::new(0));
        let count = slices.clone();
        let worker = Worker::spawn("spin", move || {
            let mut n = node.lock();
            n.spin_once(SPIN_SLICE);
            count.fetch_add(1, Ordering::Relaxed);
            // Any thread waiting for the node gets it before the next slice.
            MutexGuard::unlock_fair(n);
        })
        .expect("spawning a thread only fails when the OS is out of resources");
        Spinner { worker, slices }
    }

    /// How many spin slices have ended; read while holding the node, it
    /// cannot move.
    pub fn slices(&self) -> u64 {
        self.slices.load(Ordering::Relaxed)
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
