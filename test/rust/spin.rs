//! The spin thread and the node lock: a thread that wants the node (to
//! create a publisher, a service, a client) gets it when the spin slice in
//! progress ends, not whenever the spin thread happens to let go.

use cncpick::kit::spin::{create_node, Spinner};
use cncpick::kit::testing::DomainLease;
use std::time::Duration;

#[test]
fn a_thread_waiting_for_the_node_gets_it_when_the_spin_slice_ends() {
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    let ctx = r2r::Context::create().unwrap();
    let node = create_node(&ctx, "spin_fairness", "").unwrap();
    // With something to wait on, each slice blocks in rcl_wait for its whole
    // length, holding the node; an empty wait set returns at once.
    let _sub = node
        .lock()
        .subscribe::<r2r::std_msgs::msg::String>("/spin_fairness", r2r::QosProfile::default())
        .unwrap();
    let mut spinner = Spinner::start(node.clone());
    let mut waited = Vec::new();
    for _ in 0..40 {
        // Let the spin thread take the node again before asking for it.
        std::thread::sleep(Duration::from_millis(2));
        let before = spinner.slices();
        let n = node.lock();
        waited.push(spinner.slices() - before);
        drop(n);
    }
    spinner.stop();
    // One slice, or two when the spin thread took the node again in the
    // instant between our reading the count and our waiting. With std's
    // lock a waiter in an idle process sat through hundreds of slices.
    let worst = *waited.iter().max().unwrap();
    assert!(worst <= 2, "slices sat through for each lock: {waited:?}");
    assert!(
        waited.iter().any(|&w| w >= 1),
        "the spin thread never held the node: {waited:?}"
    );
}
