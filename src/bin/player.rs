//! The `player` executable: `cncpick play` as a ROS executable
//! (`ros2 run cncpick player BAG --rate 2`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "player",
    about = "Play a rosbag2 bag (MCAP) with its original timing"
)]
struct Cli {
    #[command(flatten)]
    args: cncpick::bag::cli::PlayArgs,
}

fn main() {
    let cli = Cli::parse_from(cncpick::kit::app::strip_ros_args(std::env::args()));
    if let Err(e) = cncpick::bag::cli::play(cli.args) {
        eprintln!("player: error: {e:#}");
        std::process::exit(1);
    }
}
