//! The cncpick command line. Start it through ./cncpick in the repository,
//! which sets up and sets the ROS environment first.

use clap::{Parser, Subcommand};
use cncpick::demo::app::{finish, run_graph, SourceArgs};
use cncpick::kit::app::{run, shutdown_signal, strip_ros_args, RunningNode};

#[derive(Parser)]
#[command(
    name = "cncpick",
    version,
    about = "Controller for a vision-guided conveyor picking cell"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job: the whole cell from its params files (default: the
    /// simulated cell, params/sim.yaml), brought up in order by the manager,
    /// for --duration-s, with live KPIs and a report at the end.
    Run(cncpick::cell::run::RunArgs),
    /// Check every node's parameters in the params files (with -p
    /// overrides and CNCPICK_PARAM_<NODE>__<NAME> variables) and print the graph.
    CheckConfig {
        /// Params files, in order (default: params/sim.yaml).
        #[arg(long = "params-file")]
        params_file: Vec<std::path::PathBuf>,
        /// node.name:=value
        #[arg(short = 'p', long = "param")]
        param: Vec<String>,
        /// Print the graph as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The demo graph: two r2r nodes exchanging cncpick_msgs over DDS, with a report.
    Demo(SourceArgs),
    /// Check the ROS environment and say what is wrong.
    CheckEnv,
    /// Start a GRBL 1.1h emulator on a new PTY, print its path, and run
    /// until Ctrl-C. Point any GRBL host at the path.
    GrblEmulator {
        /// Homing enabled ($22=1): boots into Alarm until $H or $X.
        #[arg(long)]
        homing: bool,
        /// Soft limits ($20=1), machine space [-$130..0] per axis.
        #[arg(long)]
        soft_limits: bool,
        /// Run faster (>1) or slower than real time.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
    },
    /// Run the simulated cell's `sim` node (the same as the `sim`
    /// executable): ROS arguments follow, e.g. `--ros-args --params-file F`.
    Sim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ros_args: Vec<String>,
    },
    /// Simulate the cell with no CNCs and write the camera's view to a
    /// video plus its ground truth (video.avi, truth.jsonl, camera.json).
    SimRecord {
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Simulated seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// A ros__parameters file with a `sim` section.
        #[arg(long)]
        params_file: Vec<std::path::PathBuf>,
        /// A sim parameter, name:=value (YAML value), e.g. seed:=7.
        #[arg(short = 'p', long = "param")]
        param: Vec<String>,
        /// mjpg (small, lossy) or ffv1 (lossless: a replay gives the same pixels).
        #[arg(long, default_value = "mjpg")]
        codec: String,
    },
    /// Run the `camera` node (as the `camera` executable): ROS arguments follow.
    Camera {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ros_args: Vec<String>,
    },
    /// Run the `detector` node (as the `detector` executable): ROS arguments follow.
    Detector {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ros_args: Vec<String>,
    },
    /// Compute the camera's pixel → belt homography from an image of a
    /// chessboard lying on the belt, and write it as the detector's
    /// parameters. Columns of the board run along the belt's travel (the
    /// image's u axis); the inner corner nearest the image's top-left is at
    /// (origin-x-m, origin-y-m) on the belt.
    Calibrate {
        /// The image (PNG, JPEG, ...).
        #[arg(long)]
        image: std::path::PathBuf,
        #[command(flatten)]
        board: BoardArgs,
        /// The params file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The node section to write.
        #[arg(long, default_value = "detector")]
        node: String,
    },
    /// Render a chessboard as the simulated camera sees it (to try `calibrate`).
    SimPattern {
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        board: BoardArgs,
    },
    /// Interop probe for tests: publish every message type from a fixture,
    /// serve GetObject and PickObject, print what arrives as JSON lines.
    #[command(hide = true)]
    Interop {
        #[arg(long)]
        fixture: std::path::PathBuf,
        #[arg(long, default_value = "interop")]
        prefix: String,
    },
}

/// A chessboard lying on the belt (no defaults: a wrong board must not pass quietly).
#[derive(clap::Args)]
struct BoardArgs {
    /// Inner corners along a row.
    #[arg(long)]
    cols: u32,
    /// Inner corners along a column.
    #[arg(long)]
    rows: u32,
    /// Side of one square, m.
    #[arg(long)]
    square_m: f64,
    /// Belt position of the inner corner nearest the image's top-left, m.
    #[arg(long)]
    origin_x_m: f64,
    /// (and across the belt).
    #[arg(long)]
    origin_y_m: f64,
}

impl BoardArgs {
    fn board(&self) -> cncpick::detector::calibrate::Chessboard {
        cncpick::detector::calibrate::Chessboard {
            inner_cols: self.cols,
            inner_rows: self.rows,
            square_m: self.square_m,
            origin_x_m: self.origin_x_m,
            origin_y_m: self.origin_y_m,
        }
    }
}

fn main() {
    let cli = Cli::parse_from(strip_ros_args(std::env::args()));
    let result = match cli.command {
        Command::CheckEnv => match cncpick::kit::env::check() {
            Ok(()) => {
                println!("environment ok");
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Command::Run(args) => std::process::exit(cncpick::cell::run::main(args)),
        Command::CheckConfig {
            params_file,
            param,
            json,
        } => std::process::exit(cncpick::cell::run::check_config(params_file, &param, json)),
        Command::Demo(args) => args.config().and_then(|cfg| {
            run(|ctx| async move {
                println!(
                    "cncpick: demo graph on ROS_DOMAIN_ID {}: {} frames at {} Hz, {} objects each",
                    std::env::var("ROS_DOMAIN_ID").unwrap_or_else(|_| "0".into()),
                    cfg.frames,
                    cfg.rate_hz,
                    cfg.objects_per_frame
                );
                let report = run_graph(ctx, cfg).await?;
                finish("cncpick: demo graph report", &report)
            })
        }),
        Command::GrblEmulator {
            homing,
            soft_limits,
            time_scale,
        } => grbl_emulator(homing, soft_limits, time_scale),
        Command::Sim { .. } => {
            cncpick::sim::node::main();
            Ok(())
        }
        Command::SimRecord {
            out,
            seconds,
            params_file,
            param,
            codec,
        } => sim_record(out, seconds, params_file, param, &codec),
        Command::Camera { .. } => {
            cncpick::camera::node::main();
            Ok(())
        }
        Command::Detector { .. } => {
            cncpick::detector::node::main();
            Ok(())
        }
        Command::Calibrate {
            image,
            board,
            out,
            node,
        } => calibrate(&image, &board.board(), &out, &node),
        Command::SimPattern { out, board } => sim_pattern(&out, &board.board()),
        Command::Interop { fixture, prefix } => run(|ctx| async move {
            let text = std::fs::read_to_string(&fixture)
                .map_err(|e| anyhow::anyhow!("reading fixture {}: {e}", fixture.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("fixture {}: {e}", fixture.display()))?;
            let node = RunningNode::start(&ctx, "interop_probe", "")?;
            let probe = cncpick::interop::Probe::start(&node.node, &value, &prefix)?;
            cncpick::interop::emit(serde_json::json!({"event": "ready"}));
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = stdin_closed() => {}
            }
            probe.stop().await;
            node.stop();
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("cncpick: error: {e:#}");
        std::process::exit(1);
    }
}

fn grbl_emulator(homing: bool, soft_limits: bool, time_scale: f64) -> anyhow::Result<()> {
    use cncpick::sim::grbl::{machine::Config, pty::PtyEmulator, settings::Settings};
    let mut settings = Settings::default();
    if homing {
        settings.set(22, 1.0);
    }
    if soft_limits {
        settings.set(20, 1.0);
    }
    let mut emu = PtyEmulator::start(Config::default(), settings, time_scale)
        .map_err(|e| anyhow::anyhow!("--time-scale or PTY: {e}"))?;
    println!("grbl-emulator: {}", emu.path());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(shutdown_signal());
    emu.stop();
    Ok(())
}

/// Resolves when standard input reaches end of file (the driving test is done).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
}

fn sim_record(
    out: std::path::PathBuf,
    seconds: f64,
    params_files: Vec<std::path::PathBuf>,
    params: Vec<String>,
    codec: &str,
) -> anyhow::Result<()> {
    let codec = cncpick::sim::record::Codec::parse(codec)
        .ok_or_else(|| anyhow::anyhow!("--codec {codec:?}: use mjpg or ffv1"))?;
    use cncpick::kit::params::{load, RosArgs};
    use cncpick::sim::params::SimParams;
    let mut args = RosArgs {
        params_files,
        ..RosArgs::default()
    };
    for p in params {
        let (k, v) = p
            .split_once(":=")
            .ok_or_else(|| anyhow::anyhow!("-p {p:?}: write name:=value"))?;
        args.overrides.push((k.to_string(), v.to_string()));
    }
    let p: SimParams = load("/cell/sim", &args, |_| None)?;
    let cfg = p.config().map_err(anyhow::Error::msg)?;
    if !(seconds.is_finite() && seconds > 0.0) {
        anyhow::bail!("--seconds must be a positive number, got {seconds}");
    }
    let r = cncpick::sim::record::record_with(cfg, seconds, &out, codec)?;
    println!(
        "sim-record: {} frames ({} in the video) into {}, truth in {}",
        r.frames,
        r.frames_written,
        r.video.display(),
        r.truth.display()
    );
    Ok(())
}

fn calibrate(
    image: &std::path::Path,
    board: &cncpick::detector::calibrate::Chessboard,
    out: &std::path::Path,
    node: &str,
) -> anyhow::Result<()> {
    use cncpick::detector::calibrate::{calibrate, params_yaml};
    if !(board.square_m.is_finite() && board.square_m > 0.0) {
        anyhow::bail!(
            "--square-m must be a positive length, got {}",
            board.square_m
        );
    }
    let path = image
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: the path is not UTF-8", image.display()))?;
    if !image.is_file() {
        anyhow::bail!("{}: no such file", image.display());
    }
    let img = opencv::imgcodecs::imread_def(path)?;
    if opencv::prelude::MatTraitConst::empty(&img) {
        anyhow::bail!("{}: not an image OpenCV can read", image.display());
    }
    let c = calibrate(&img, board).map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
    std::fs::write(out, params_yaml(&c, node, &image.display().to_string()))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    println!(
        "calibrate: {} corners, reprojection error {:.3} px RMS ({:.3} px at most); wrote {}",
        c.px.len(),
        c.fit.rms_error_px,
        c.fit.max_error_px,
        out.display()
    );
    Ok(())
}

fn sim_pattern(
    out: &std::path::Path,
    board: &cncpick::detector::calibrate::Chessboard,
) -> anyhow::Result<()> {
    use cncpick::sim::params::SimParams;
    let cfg = SimParams::default().config().map_err(anyhow::Error::msg)?;
    let r = cncpick::sim::render::CameraGeometry::new(&cfg.camera);
    let img = cncpick::detector::calibrate::render_chessboard(
        &r.belt_to_px,
        cfg.camera.width_px as i32,
        cfg.camera.height_px as i32,
        board,
    )?;
    let path = out
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: the path is not UTF-8", out.display()))?;
    if !opencv::imgcodecs::imwrite_def(path, &img)? {
        anyhow::bail!("{}: OpenCV could not write it", out.display());
    }
    println!("sim-pattern: wrote {}", out.display());
    Ok(())
}
