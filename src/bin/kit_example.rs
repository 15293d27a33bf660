//! Node executable: the node-kit example (lifecycle, health). New nodes copy it.
use clap::Parser;
use cncpick::example::node::{run as run_example, ExampleArgs};
use cncpick::kit::app::{run, strip_ros_args};

#[derive(Parser)]
#[command(name = "kit_example")]
struct Args {
    #[command(flatten)]
    example: ExampleArgs,
}

fn main() {
    let args = Args::parse_from(strip_ros_args(std::env::args()));
    if let Err(e) = run(|ctx| run_example(ctx, args.example)) {
        eprintln!("kit_example: error: {e:#}");
        std::process::exit(1);
    }
}
