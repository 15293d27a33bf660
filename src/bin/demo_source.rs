//! Node executable: the demo source (publishes detections, measures round trips).
use clap::Parser;
use cncpick::demo::app::{finish, run_source_only, SourceArgs};
use cncpick::kit::app::{run, strip_ros_args};

#[derive(Parser)]
#[command(name = "demo_source")]
struct Args {
    #[command(flatten)]
    source: SourceArgs,
}

fn main() {
    let args = Args::parse_from(strip_ros_args(std::env::args()));
    let result = args.source.config().and_then(|cfg| {
        run(|ctx| async move {
            let report = run_source_only(ctx, cfg).await?;
            finish("demo_source report", &report)
        })
    });
    if let Err(e) = result {
        eprintln!("demo_source: error: {e:#}");
        std::process::exit(1);
    }
}
