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
    /// A chaos run: the simulated cell, one process per node, with faults
    /// injected at random seeded times (kills of every kind of node, GRBL
    /// alarms, unplugged and noisy serial lines, vacuum failures, camera
    /// frame drops, dropped and delayed DDS messages, a full database, bad
    /// parameter updates); then the invariants and the recovery time per
    /// kind of fault. Exit code 4 when one broke.
    Chaos(cncpick::cell::chaos::ChaosArgs),
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
    /// Record topics into a rosbag2 bag (MCAP storage, metadata.yaml), as
    /// `ros2 bag record` does. Stops at --duration-s, Ctrl-C or SIGTERM.
    Record(cncpick::bag::cli::RecordArgs),
    /// Play a rosbag2 bag (ours or anyone's, MCAP storage) with its original
    /// timing, as `ros2 bag play` does. Services on the player node
    /// (std_srvs/Trigger): pause, resume, toggle_paused, play_next, is_paused.
    Play(cncpick::bag::cli::PlayArgs),
    /// Bag tools.
    #[command(subcommand)]
    Bag(BagCommand),
    /// The golden-bag regression: replay test/golden's bags through the
    /// detector, tracker and scheduler and compare with the golden decisions.
    #[command(subcommand)]
    Golden(GoldenCommand),
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
    /// Start a node's process as `ros2 launch` does (launch/cell.launch.py
    /// puts this before every node's command): a restart of the node gets
    /// a Fast DDS participant number nobody held in the last 15 s, so it
    /// does not take the killed process's ports, which its peers still
    /// hold for the dead participant; then this process becomes the node.
    WithParticipantId {
        /// The node's name (one per node of the cell).
        #[arg(long)]
        node: String,
        /// The folder of the file shared by every node process of this
        /// user, host and domain (default: the temporary folder's
        /// cncpick-participants-<uid>-domain-<ROS_DOMAIN_ID>).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
        /// The node's command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
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

#[derive(Subcommand)]
enum BagCommand {
    /// What a bag holds (as `ros2 bag info`), and any damage, by file and
    /// offset. Exit 1 if damaged, after printing what could be read.
    Info {
        bag: std::path::PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score a bag of a run (`cncpick run --record`) offline: the main
    /// job's report from its object events, pick results and sim truth.
    Score {
        bag: std::path::PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GoldenCommand {
    /// Replay every golden bag; exit 1 naming the first decision that changed.
    Check {
        #[arg(long, default_value = "test/golden")]
        dir: std::path::PathBuf,
    },
    /// Accept the decisions the bags give now as golden (after a deliberate change).
    Rewrite {
        #[arg(long, default_value = "test/golden")]
        dir: std::path::PathBuf,
    },
    /// Record new golden bags: a live simulated run (with <dir>/cell.yaml) for
    /// the cell bag, the simulated camera (with <dir>/frames.yaml) for the
    /// frames bag; then rewrite the decisions.
    Rerecord {
        #[arg(long, default_value = "test/golden")]
        dir: std::path::PathBuf,
        /// How long the live run goes once up, s.
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Seconds of camera frames.
        #[arg(long, default_value_t = 8.0)]
        frames_s: f64,
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
    let args: Vec<String> = std::env::args().collect();
    // The command this one runs keeps its ROS arguments.
    let cli = if args.get(1).map(String::as_str) == Some("with-participant-id") {
        Cli::parse_from(args)
    } else {
        Cli::parse_from(strip_ros_args(args))
    };
    let result = match cli.command {
        Command::WithParticipantId {
            node,
            state_dir,
            command,
        } => {
            cncpick::kit::app::init_tracing();
            let dir = state_dir.unwrap_or_else(cncpick::cell::launch_ids::default_state_dir);
            Err(cncpick::cell::launch_ids::exec_with_participant_id(
                &dir, &node, &command,
            ))
        }
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
        Command::Chaos(args) => std::process::exit(cncpick::cell::run::chaos_main(args)),
        Command::CheckConfig {
            params_file,
            param,
            json,
        } => std::process::exit(cncpick::cell::run::check_config(params_file, &param, json)),
        Command::Record(a) => cncpick::bag::cli::record(a),
        Command::Play(a) => cncpick::bag::cli::play(a),
        Command::Bag(BagCommand::Info { bag, json }) => bag_info(&bag, json),
        Command::Bag(BagCommand::Score { bag, json }) => {
            std::process::exit(cncpick::cell::run::score_bag(&bag, json))
        }
        Command::Golden(g) => golden(g),
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

fn bag_info(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let bag = cncpick::bag::reader::open(path).map_err(anyhow::Error::msg)?;
    let report = cncpick::bag::info_json(&bag);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", cncpick::bag::info_text(&bag));
    }
    if let Err(e) = bag.sound() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    Ok(())
}

fn golden(g: GoldenCommand) -> anyhow::Result<()> {
    use cncpick::bag::regress;
    let lines = match g {
        GoldenCommand::Check { dir } => regress::check(&dir),
        GoldenCommand::Rewrite { dir } => regress::rewrite(&dir),
        GoldenCommand::Rerecord {
            dir,
            duration_s,
            frames_s,
        } => rerecord(&dir, duration_s, frames_s).and_then(|mut l| {
            l.extend(regress::rewrite(&dir)?);
            Ok(l)
        }),
    }
    .map_err(anyhow::Error::msg)?;
    for l in lines {
        println!("golden: {l}");
    }
    Ok(())
}

fn rerecord(dir: &std::path::Path, duration_s: f64, frames_s: f64) -> Result<Vec<String>, String> {
    use cncpick::bag::regress;
    let mut lines = Vec::new();
    let (cell_bag, cell_params, _) = regress::files(dir, "cell");
    let work = std::env::temp_dir().join(format!("cncpick-golden-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = std::process::Command::new(exe)
        .arg("run")
        .arg("--params-file")
        .arg(&cell_params)
        .args([
            "--duration-s",
            &duration_s.to_string(),
            "--no-progress",
            "--metrics-bind",
            "",
        ])
        .arg("--out")
        .arg(work.join("out"))
        .arg("--record")
        .arg(work.join("bag"))
        .status()
        .map_err(|e| format!("starting cncpick run: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the live run failed ({status}); its files are in {}",
            work.display()
        ));
    }
    let live = cncpick::bag::reader::open(&work.join("bag"))?;
    live.sound()?;
    let sp: cncpick::sched::params::SchedParams = regress::params(&cell_params, "scheduler")?;
    let _ = std::fs::remove_dir_all(&cell_bag);
    let n = regress::copy_topics(
        &live,
        &regress::cell_topics(&sp.cnc_ids),
        &cell_bag,
        Vec::new(),
    )?;
    lines.push(format!(
        "cell: {n} messages of a {duration_s} s live run into {}",
        cell_bag.display()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let (frames_bag, frames_params, _) = regress::files(dir, "frames");
    let _ = std::fs::remove_dir_all(&frames_bag);
    let n = regress::render_frames(&frames_params, frames_s, &frames_bag)?;
    lines.push(format!("frames: {n} frames into {}", frames_bag.display()));
    Ok(lines)
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
