//! The `recorder` executable: `cncpick record` as a ROS executable
//! (`ros2 run cncpick recorder -o DIR --all`).

use clap::Parser;

#[derive(Parser)]
#[command(name = "recorder", about = "Record topics into a rosbag2 bag (MCAP)")]
struct Cli {
    #[command(flatten)]
    args: cncpick::bag::cli::RecordArgs,
}

fn main() {
    let cli = Cli::parse_from(cncpick::kit::app::strip_ros_args(std::env::args()));
    if let Err(e) = cncpick::bag::cli::record(cli.args) {
        eprintln!("recorder: error: {e:#}");
        std::process::exit(1);
    }
}
