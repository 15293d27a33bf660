//! Node executable: the demo registry (answers each new object with an ObjectEvent).
use cncpick::demo::app::run_registry;
use cncpick::kit::app::{run, strip_ros_args};

fn main() {
    let _ = strip_ros_args(std::env::args());
    if let Err(e) = run(|ctx| run_registry(ctx, "demo_registry")) {
        eprintln!("demo_registry: error: {e:#}");
        std::process::exit(1);
    }
}
