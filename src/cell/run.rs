//! The main job (`cncpick run`): the whole cell from its params files (by
//! default the simulated cell, `params/sim.yaml`), brought up in order by
//! the manager, run for a set time with a progress bar and live KPIs, then
//! brought down, with a report (KPIs, latency percentiles, per-CNC and
//! per-lane tables), a plot and the run's files in its output folder.
//!
//! Exit codes: 0 the run went and its invariants held; 3 the cell did not
//! come up; 4 an invariant broke (an object picked twice, or stuck);
//! 2 bad parameters; 1 any other error.

use super::chaos::{self, ChaosArgs};
use super::chaos_node::ChaosShell;
use super::host::{dds_profiles_in, serve, DdsProfiles, Processes};
use super::report::{plot_html, Heard, Report};
use super::spec::{check, CellArgs, CellSpec};
use crate::kit::app::RunningNode;
use crate::kit::node::ServedNode;
use crate::kit::time::wall_now_s;
use crate::manager::node::{Manager, Supervisor, ALERTS_TOPIC};
use crate::manager::params::ManagerParams;
use crate::msgs::msg as m;
use futures::StreamExt;
use r2r::QosProfile;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Params files, in order (later wins). Default: params/sim.yaml.
    #[arg(long = "params-file")]
    pub params_file: Vec<PathBuf>,
    /// A parameter of one node, node.name:=value (YAML value), e.g.
    /// scheduler.policy:=greedy or sim.arrival_rate_per_min:=100.
    #[arg(short = 'p', long = "param")]
    pub param: Vec<String>,
    /// How long the cell runs once up, s.
    #[arg(long, default_value_t = 60.0)]
    pub duration_s: f64,
    /// One process per node (as ros2 launch runs them) instead of all in this one.
    #[arg(long)]
    pub processes: bool,
    /// Where the run's files go (database, logs, report, plot). Default: runs/<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The Prometheus endpoint (host:port; port 0 picks one; '' for none).
    #[arg(long)]
    pub metrics_bind: Option<String>,
    /// Where the node executables are (--processes). Default: next to this one.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// No progress bar (plain log lines instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Record every cncpick topic (sim/truth included, camera images not)
    /// into a rosbag2 bag in this new folder, to replay or score offline
    /// (`cncpick bag score`).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// With --record: the camera's images too (about 80 MB/s at 1280×720, 30 fps).
    #[arg(long)]
    pub record_images: bool,
}

/// The message type `--record` leaves out unless asked: images.
pub const IMAGE_TYPE: &str = "sensor_msgs/msg/Image";

type Recording = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<crate::bag::node::RecordSummary>>,
);

/// Starts recording the cell into `dir`; stopped through the sender.
fn start_recording(
    ctx: &r2r::Context,
    dir: &Path,
    cnc_ids: &[String],
    images: bool,
    custom_data: Vec<(String, String)>,
) -> Recording {
    use crate::bag::node::{record, RecordOptions};
    // The topics decisions come from, subscribed before the cell starts.
    let known = [
        ("detections", "cncpick_msgs/msg/DetectionArray"),
        ("tracks", "cncpick_msgs/msg/TrackArray"),
        ("belt/speed", "cncpick_msgs/msg/BeltSpeed"),
        ("objects/events", "cncpick_msgs/msg/ObjectEvent"),
        ("assignments", "cncpick_msgs/msg/Assignment"),
        ("pick_results", "cncpick_msgs/msg/PickResult"),
        ("alerts", "cncpick_msgs/msg/Alert"),
        ("sim/truth", "cncpick_msgs/msg/Truth"),
    ]
    .iter()
    .map(|(t, ty)| (format!("/cell/{t}"), ty.to_string()))
    .chain(cnc_ids.iter().map(|id| {
        (
            format!("/cell/cnc_{id}/status"),
            "cncpick_msgs/msg/CncStatus".to_string(),
        )
    }))
    .collect();
    let opts = RecordOptions {
        output: dir.to_path_buf(),
        known,
        all_cell_topics: true,
        exclude_types: if images {
            Vec::new()
        } else {
            vec![IMAGE_TYPE.to_string()]
        },
        writer: crate::bag::writer::WriterOptions {
            // zstd keeps a run's bag small; with 80 MB/s of images it
            // cannot keep up on two cores beside the cell, so images go
            // uncompressed (as rosbag2 records by default).
            compression: if images {
                crate::bag::writer::Compression::None
            } else {
                crate::bag::writer::Compression::Zstd
            },
            custom_data,
            ..Default::default()
        },
        ..RecordOptions::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let ctx = ctx.clone();
    let task = tokio::spawn(async move {
        record(
            &ctx,
            opts,
            async {
                let _ = rx.await;
            },
            |_, _| {},
        )
        .await
    });
    (tx, task)
}

pub const EXIT_NOT_UP: i32 = 3;
pub const EXIT_INVARIANT: i32 = 4;

fn default_params_file() -> PathBuf {
    let here = PathBuf::from("params/sim.yaml");
    if here.is_file() {
        return here;
    }
    // target/<profile>/cncpick → the repository.
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(Path::to_path_buf))
        .map(|repo| super::spec::default_params_file(&repo))
        .unwrap_or(here)
}

/// The run folder's own params file: in the simulated cell, the PTY links,
/// the CNCs' ports and the database live in the run folder, so runs do not
/// collide and each starts from an empty store.
fn run_params(out: &Path, spec: &CellSpec) -> String {
    let mut y = String::from("# Written by cncpick run: this run's paths (later files win).\n");
    let q = |p: PathBuf| format!("'{}'", p.display().to_string().replace('\'', "''"));
    let links: Vec<String> = spec
        .cnc_ids
        .iter()
        .map(|id| q(out.join(format!("cnc_{id}"))))
        .collect();
    y += &format!(
        "sim:\n  ros__parameters:\n    cnc_pty_links: [{}]\n",
        links.join(", ")
    );
    for id in &spec.cnc_ids {
        y += &format!(
            "cnc_{id}:\n  ros__parameters:\n    port: {}\n",
            q(out.join(format!("cnc_{id}")))
        );
    }
    y += &format!(
        "state_manager:\n  ros__parameters:\n    database_path: {}\n",
        q(out.join("state.sqlite"))
    );
    y
}

struct Observer {
    heard: Arc<Mutex<Heard>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    node: RunningNode,
}

impl Observer {
    fn start(ctx: &r2r::Context, sim: bool, t0: f64) -> anyhow::Result<Observer> {
        let node = RunningNode::start(ctx, "run_observer", "/cell")?;
        let heard: Arc<Mutex<Heard>> = Arc::default();
        let mut tasks = Vec::new();
        let reliable = QosProfile::default().reliable().keep_last(1000);
        let mut n = node.node.lock();
        let events = n.subscribe::<m::ObjectEvent>("objects/events", crate::kit::qos::events())?;
        let picks = n.subscribe::<m::PickResult>("pick_results", reliable.clone())?;
        let alerts = n.subscribe::<m::Alert>(ALERTS_TOPIC, reliable.clone())?;
        // The pipeline, for each object's trace (report::traces).
        let detections = n.subscribe::<m::DetectionArray>("detections", reliable.clone())?;
        let tracks = n.subscribe::<m::TrackArray>("tracks", reliable.clone())?;
        let assignments = n.subscribe::<m::Assignment>("assignments", reliable.clone())?;
        let truth = if sim {
            Some(n.subscribe::<m::Truth>("sim/truth", reliable)?)
        } else {
            None
        };
        drop(n);
        tasks.push(keep(&heard, events, Heard::event));
        tasks.push(keep(&heard, picks, Heard::pick));
        tasks.push(keep(&heard, alerts, move |h, a| {
            h.alert(a, wall_now_s() - t0)
        }));
        tasks.push(keep(&heard, detections, |h, d| {
            h.detections(d, wall_now_s())
        }));
        tasks.push(keep(&heard, tracks, |h, t| h.tracks(t, wall_now_s())));
        tasks.push(keep(&heard, assignments, |h, a| {
            h.assignment(a, wall_now_s())
        }));
        if let Some(truth) = truth {
            tasks.push(keep(&heard, truth, Heard::truth));
        }
        Ok(Observer { heard, tasks, node })
    }

    async fn stop(self) -> Heard {
        crate::kit::app::stop_tasks(self.tasks).await;
        self.node.stop();
        let h = lock(&self.heard).clone();
        h
    }
}

/// Files what `stream` brings into `heard`, with `file`.
fn keep<T: Send + 'static>(
    heard: &Arc<Mutex<Heard>>,
    mut stream: impl futures::Stream<Item = T> + Unpin + Send + 'static,
    file: impl Fn(&mut Heard, T) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let h = heard.clone();
    tokio::spawn(async move {
        while let Some(x) = stream.next().await {
            file(&mut lock(&h), x);
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Hosted {
    InProcess(Vec<ServedNode>),
    Processes(Arc<Processes>),
}

/// Runs the main job; returns the process exit code.
pub fn main(args: RunArgs) -> i32 {
    main_with(args, None)
}

/// Runs a chaos run; returns the process exit code.
pub fn chaos_main(args: ChaosArgs) -> i32 {
    let run = args.run.clone();
    main_with(run, Some(args))
}

fn main_with(mut args: RunArgs, chaos: Option<ChaosArgs>) -> i32 {
    if std::env::var_os("RUST_LOG").is_none() {
        crate::kit::app::init_tracing_at(Some("warn"));
    }
    // A chaos run kills processes: the cell runs one process per node.
    args.processes |= chaos.is_some();
    let profiles = match prepare(&mut args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cncpick run: error: {e:#}");
            return 1;
        }
    };
    match crate::kit::app::run(|ctx| async move { run(ctx, args, chaos, profiles).await }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cncpick run: error: {e:#}");
            1
        }
    }
}

/// Before this process joins DDS: checks the duration, makes the run's
/// folder (`a.out` becomes its full path) and, for a cell of processes,
/// writes their Fast DDS profiles there and takes the one for what this
/// process carries: images if it records them, else UDP only, so that no
/// node killed mid-message can stop the manager (params/fastdds-control.xml).
fn prepare(a: &mut RunArgs) -> anyhow::Result<Option<DdsProfiles>> {
    anyhow::ensure!(
        a.duration_s.is_finite() && a.duration_s > 0.0,
        "--duration-s must be a positive number of seconds, got {}",
        a.duration_s
    );
    let out = a.out.clone().unwrap_or_else(|| {
        let t = wall_now_s() as u64;
        PathBuf::from("runs").join(format!("run-{t}"))
    });
    std::fs::create_dir_all(&out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let out = out.canonicalize()?;
    a.out = Some(out.clone());
    if !a.processes {
        return Ok(None);
    }
    let profiles = dds_profiles_in(&out)?;
    if let Some(p) = &profiles {
        // Recording images, it takes frames; else only the manager's traffic.
        p.apply_here(a.record.is_some() && a.record_images);
    }
    Ok(profiles)
}

async fn run(
    ctx: r2r::Context,
    a: RunArgs,
    chaos: Option<ChaosArgs>,
    profiles: Option<DdsProfiles>,
) -> anyhow::Result<i32> {
    let files = if a.params_file.is_empty() {
        vec![default_params_file()]
    } else {
        a.params_file.clone()
    };
    let out = a
        .out
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no run folder: prepare() makes it"))?;
    let first = CellArgs::new(files.clone(), &a.param)?;
    let spec0 = match check(&first) {
        Ok(s) => s,
        Err(errors) => return Ok(config_errors(&errors)),
    };
    let mut params = a.param.clone();
    let mut plan = Vec::new();
    if let Some(c) = &chaos {
        let extra;
        (plan, extra) = chaos::prepare(c, &spec0, a.duration_s)?;
        params.extend(extra);
        println!(
            "cncpick: chaos: {} faults (seed {}) between {} s and {} s: {}",
            plan.len(),
            c.seed,
            c.warmup_s,
            a.duration_s - c.drain_s,
            plan.iter()
                .map(|f| f.kind.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let mut all_files = files.clone();
    if spec0.sim {
        let p = out.join("run.yaml");
        std::fs::write(&p, run_params(&out, &spec0))?;
        all_files.push(p);
    }
    let args = CellArgs::new(all_files, &params)?;
    let spec = match check(&args) {
        Ok(s) => s,
        Err(errors) => return Ok(config_errors(&errors)),
    };
    let mut mp: ManagerParams = args.load("manager")?;
    mp.node_names = spec.node_names();
    mp.cnc_ids = spec.cnc_ids.clone();
    let mut lanes = mp.lanes;
    if spec.sim {
        let sim: crate::sim::params::SimParams = args.load("sim")?;
        lanes = sim.lanes;
        mp.lanes = sim.lanes;
        mp.belt_length_m = sim.belt_length_m;
    }
    if let Some(b) = &a.metrics_bind {
        mp.metrics_bind = b.clone();
    }
    println!(
        "cncpick: the {} cell from {}: {} nodes ({}), {} s, files in {}",
        if spec.sim { "simulated" } else { "real" },
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        spec.nodes.len(),
        if a.processes {
            "one process each"
        } else {
            "all in this process"
        },
        a.duration_s,
        out.display()
    );

    // What earlier runs' killed processes left in /dev/shm.
    crate::kit::shm::sweep_dead("cncpick run: starting");
    let hosted = if a.processes {
        let bin_dir = match &a.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let mut p = Processes::new(
            &bin_dir,
            &out.join("logs"),
            &out.join("pids.json"),
            args.clone(),
            &spec.nodes,
        );
        if let Some(profiles) = profiles {
            p = p.with_dds_profiles(profiles);
        }
        let p = Arc::new(p);
        p.start_all()?;
        Hosted::Processes(p)
    } else {
        let mut served = Vec::new();
        for n in &spec.nodes {
            served.push(serve(&ctx, n, &args)?);
        }
        Hosted::InProcess(served)
    };
    let supervisor: Option<Arc<dyn Supervisor>> = match &hosted {
        Hosted::Processes(p) => Some(p.clone() as Arc<dyn Supervisor>),
        Hosted::InProcess(_) => None,
    };
    let manager = Manager::start(&ctx, mp.clone(), supervisor)?;
    if let Some(port) = manager.metrics_port() {
        println!("cncpick: Prometheus metrics on http://127.0.0.1:{port}/metrics");
        std::fs::write(out.join("metrics_port"), port.to_string())?;
    }
    let t0 = wall_now_s();
    let observer = Observer::start(&ctx, spec.sim, t0)?;
    let sim_view_m = if spec.sim {
        let sim: crate::sim::params::SimParams = args.load("sim")?;
        (
            sim.camera_x_min_m,
            sim.camera_x_min_m + sim.camera_width_px as f64 * sim.camera_m_per_px,
        )
    } else {
        (0.0, 0.0)
    };
    let mut shell = match &chaos {
        Some(c) => {
            let mut travel = std::collections::BTreeMap::new();
            for id in &spec.cnc_ids {
                let p: crate::motion::params::MotionParams = args.load(&format!("cnc_{id}"))?;
                travel.insert(id.clone(), [p.travel_mm[0], p.travel_mm[1], p.travel_mm[2]]);
            }
            let watched: Vec<String> = spec.node_names();
            Some(ChaosShell::start(
                &ctx,
                &watched,
                &travel,
                plan.clone(),
                c.seed,
                sim_view_m,
            )?)
        }
        None => None,
    };
    let recording = match &a.record {
        Some(dir) => {
            let mut custom = vec![
                (
                    "cncpick_params".to_string(),
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                ),
                ("lanes".to_string(), lanes.to_string()),
            ];
            if spec.sim {
                let sim: crate::sim::params::SimParams = args.load("sim")?;
                custom.push(("sim_seed".to_string(), sim.seed.to_string()));
            }
            Some(start_recording(
                &ctx,
                dir,
                &spec.cnc_ids,
                a.record_images,
                custom,
            ))
        }
        None => None,
    };

    let bar = progress_bar(a.duration_s, a.no_progress);
    bar.set_message("bringing the cell up");
    let up = manager.startup().await;
    let mut code = 0;
    let mut start_s = wall_now_s();
    match &up {
        Err(e) => {
            bar.finish_and_clear();
            eprintln!("cncpick: the cell did not come up: {e:#}");
            code = EXIT_NOT_UP;
        }
        Ok(()) => {
            start_s = wall_now_s();
            println!(
                "cncpick: the cell is up ({:.1} s); running for {} s",
                start_s - t0,
                a.duration_s
            );
            std::fs::write(out.join("up"), format!("{start_s}\n"))?;
            if let (Some(shell), Hosted::Processes(p)) = (shell.as_mut(), &hosted) {
                shell.inject(start_s, p.clone())?;
            }
            let stop = crate::kit::app::shutdown_signal();
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = &mut stop => {
                        bar.println("cncpick: interrupted: stopping the cell");
                        break;
                    }
                    _ = tick.tick() => {}
                }
                let ran_s = wall_now_s() - start_s;
                let k = manager.kpis();
                bar.set_position(ran_s.min(a.duration_s) as u64);
                bar.set_message(format!(
                    "picked {} missed {} dropped {} bypassed {} | success {:.2} | {:.0} objects/min | busy {:.0}%",
                    k.picked, k.missed, k.dropped, k.bypassed, k.pick_success_rate,
                    k.objects_per_min, k.utilisation * 100.0
                ));
                if ran_s >= a.duration_s {
                    break;
                }
            }
            bar.finish_and_clear();
        }
    }
    let end_s = wall_now_s();
    // Taking the cell down and the report end in bounded time, when the
    // run ends by itself too (a stop signal has bounded it already).
    crate::kit::app::bound_the_stop(
        "cncpick: taking the cell down",
        crate::kit::app::stop_bound(),
    );
    if let Some(shell) = &shell {
        shell.freeze(end_s);
    }
    let restarts = manager
        .nodes()
        .into_iter()
        .filter(|n| n.restarts > 0)
        .map(|n| (n.name, n.restarts))
        .collect();
    if let Err(e) = manager.shutdown().await {
        eprintln!("cncpick: taking the cell down: {e:#}");
    }
    let heard = observer.stop().await;
    let chaos_report = match shell {
        Some(shell) => {
            // Memory from a tenth of the run on (caches and queues fill first).
            let warm_s = chaos
                .as_ref()
                .map_or(0.0, |c| c.warmup_s.max(a.duration_s / 10.0));
            Some(
                shell
                    .finish(&heard, start_s, end_s, warm_s, sim_view_m)
                    .await,
            )
        }
        None => None,
    };
    if let (Some((stop, task)), Some(dir)) = (recording, &a.record) {
        let _ = stop.send(());
        match task.await {
            Ok(Ok(s)) => println!(
                "cncpick: recorded {} messages on {} topics into {} ({} dropped)",
                s.messages,
                s.info.topics.len(),
                dir.display(),
                s.dropped
            ),
            Ok(Err(e)) => eprintln!("cncpick: recording into {}: {e:#}", dir.display()),
            Err(e) => eprintln!("cncpick: the recorder stopped: {e}"),
        }
    }
    manager.stop().await;
    match hosted {
        Hosted::InProcess(served) => {
            for n in served.into_iter().rev() {
                n.stop().await;
            }
        }
        Hosted::Processes(p) => p.stop_all(Duration::from_secs(10)),
    }
    if code != 0 {
        return Ok(code);
    }
    let mut report = Report::of(
        &heard,
        end_s - start_s,
        end_s,
        lanes.clamp(1, 64) as u8,
        30.0,
        spec.sim,
    );
    report.restarts = restarts;
    let text = report.text();
    println!("{text}");
    std::fs::write(out.join("report.txt"), &text)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        out.join("plot.html"),
        plot_html(
            &heard,
            start_s,
            end_s - start_s,
            lanes.clamp(1, 64) as u8,
            5.0,
        ),
    )?;
    std::fs::write(
        out.join("traces.csv"),
        super::report::traces_csv(&super::report::traces(&heard)),
    )?;
    println!(
        "cncpick: report.txt, report.json, traces.csv and plot.html in {}",
        out.display()
    );
    if let Some(c) = &chaos_report {
        let text = c.text();
        println!("{text}");
        std::fs::write(out.join("chaos.txt"), &text)?;
        std::fs::write(out.join("chaos.json"), serde_json::to_string_pretty(c)?)?;
        if !c.holds() {
            eprintln!(
                "cncpick: chaos: an invariant broke, or the cell did not recover (see chaos.txt)"
            );
            return Ok(EXIT_INVARIANT);
        }
    }
    if !report.invariants_hold() {
        eprintln!("cncpick: an invariant broke (see the report)");
        return Ok(EXIT_INVARIANT);
    }
    Ok(0)
}

fn config_errors(errors: &[crate::kit::params::ParamError]) -> i32 {
    for e in errors {
        eprintln!("cncpick: {e}");
    }
    2
}

fn progress_bar(duration_s: f64, hidden: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::new(duration_s.ceil() as u64);
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos:>4}/{len} s [{bar:24}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `cncpick check-config`: checks every node's parameters in `files` (with
/// overrides and the environment) and prints the graph they describe.
pub fn check_config(files: Vec<PathBuf>, params: &[String], json: bool) -> i32 {
    let files = if files.is_empty() {
        vec![default_params_file()]
    } else {
        files
    };
    let args = match CellArgs::new(files, params) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cncpick: {e:#}");
            return 2;
        }
    };
    match check(&args) {
        Ok(spec) => {
            if json {
                println!("{}", serde_json::to_string(&spec).unwrap_or_default());
            } else {
                println!(
                    "config ok: {} nodes in bring-up order: {}",
                    spec.nodes.len(),
                    spec.node_names().join(", ")
                );
            }
            0
        }
        Err(errors) => config_errors(&errors),
    }
}

/// What a bag of a run heard: object events, pick results, alerts and sim
/// truth, as the live observer files them. Messages that do not decode
/// are counted and named.
pub fn heard_from_bag(bag: &crate::bag::reader::Bag) -> (Heard, Vec<String>) {
    use r2r::WrappedTypesupport;
    let mut heard = Heard::default();
    let mut bad = Vec::new();
    let t0_ns = bag.messages.first().map(|m| m.log_time_ns).unwrap_or(0);
    for (k, msg) in bag.messages.iter().enumerate() {
        let topic = bag.topics[msg.topic].name.as_str();
        let r = match topic {
            "/cell/objects/events" => {
                m::ObjectEvent::from_serialized_bytes(&msg.data).map(|e| heard.event(e))
            }
            "/cell/pick_results" => {
                m::PickResult::from_serialized_bytes(&msg.data).map(|p| heard.pick(p))
            }
            "/cell/alerts" => m::Alert::from_serialized_bytes(&msg.data)
                .map(|a| heard.alert(a, (msg.log_time_ns - t0_ns) as f64 / 1e9)),
            "/cell/sim/truth" => m::Truth::from_serialized_bytes(&msg.data).map(|t| heard.truth(t)),
            _ => Ok(()),
        };
        if let Err(e) = r {
            bad.push(format!("message {k} on {topic}: does not decode: {e}"));
        }
    }
    (heard, bad)
}

/// `cncpick bag score`: the main job's report from a bag of a run
/// (`cncpick run --record`). Exit 0, or 4 if an invariant broke, or 1 if
/// the bag is damaged or holds no run.
pub fn score_bag(path: &Path, json: bool) -> i32 {
    let bag = match crate::bag::node::read_reporting(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cncpick: {e:#}");
            return 1;
        }
    };
    if bag.topic_index("/cell/objects/events").is_none() {
        eprintln!(
            "cncpick: {}: no /cell/objects/events in the bag; not a run",
            path.display()
        );
        return 1;
    }
    let (heard, bad) = heard_from_bag(&bag);
    for b in &bad {
        eprintln!("cncpick: {}: {b}", path.display());
    }
    let lanes: u8 = bag
        .info
        .as_ref()
        .and_then(|i| i.custom_data.iter().find(|(k, _)| k == "lanes"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(4);
    let first = bag.messages.first().map(|m| m.log_time_ns).unwrap_or(0) as f64 / 1e9;
    let last = bag.messages.last().map(|m| m.log_time_ns).unwrap_or(0) as f64 / 1e9;
    let sim = bag.topic_index("/cell/sim/truth").is_some();
    let report = Report::of(&heard, last - first, last, lanes.clamp(1, 64), 30.0, sim);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", report.text());
    }
    if !bag.damage.is_empty() || !bad.is_empty() {
        return 1;
    }
    if report.invariants_hold() {
        0
    } else {
        EXIT_INVARIANT
    }
}
