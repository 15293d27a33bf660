//! Where the cell's nodes run: all in this process (one context, so frames
//! pass without copies), or one process per node, started from the same
//! executables `ros2 launch` starts, with the same arguments. The process
//! table is the manager's [`Supervisor`]: it reports exits and respawns.

use super::participant_ids::{write_numbered_profile, ParticipantIds};
use super::spec::{CellArgs, NodeSpec, NAMESPACE};
use super::tied::spawn_tied;
use crate::kit::lifecycle::Callbacks;
use crate::kit::node::{KitParams, NodeContext, ServedNode};
use crate::kit::shm::{sweep_dead, sweep_dead_at_end};
use crate::manager::node::Supervisor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Starts node `spec` in this process on `ctx`, unconfigured.
pub fn serve(ctx: &r2r::Context, spec: &NodeSpec, args: &CellArgs) -> anyhow::Result<ServedNode> {
    fn s<P: KitParams, C: Callbacks>(
        ctx: &r2r::Context,
        name: &str,
        args: &CellArgs,
        make: impl FnOnce(&NodeContext<P>) -> anyhow::Result<C>,
    ) -> anyhow::Result<ServedNode> {
        let p: P = args.load(name)?;
        ServedNode::start(ctx, name, NAMESPACE, p, make)
    }
    let n = spec.name.as_str();
    match spec.executable.as_str() {
        "sim" => s(ctx, n, args, |c| Ok(crate::sim::node::SimNode::new(c))),
        "state_manager" => s(ctx, n, args, |c| Ok(crate::state::node::StateNode::new(c))),
        "camera" => s(ctx, n, args, |c| {
            Ok(crate::camera::node::CameraNode::new(c))
        }),
        "detector" => s(ctx, n, args, |c| {
            Ok(crate::detector::node::DetectorNode::new(c))
        }),
        "tracker" => s(ctx, n, args, |c| {
            Ok(crate::tracker::node::TrackerNode::new(c))
        }),
        "cnc" => s(ctx, n, args, |c| {
            Ok(crate::motion::node::MotionNode::new(c))
        }),
        "scheduler" => s(ctx, n, args, |c| Ok(crate::sched::node::SchedNode::new(c))),
        other => anyhow::bail!("{n}: no executable {other:?}"),
    }
}

/// The variable Fast DDS (2.x, as in Jazzy) reads its default profiles from.
pub const DDS_PROFILE_ENV: &str = "FASTRTPS_DEFAULT_PROFILES_FILE";

/// The transports a cell of one process per node uses (params/fastdds.xml):
/// a shared-memory segment that holds camera frames.
pub const DDS_PROFILE: &str = include_str!("../../params/fastdds.xml");

/// Writes [`DDS_PROFILE`] into `dir` for the processes of a cell, unless
/// the environment names a profile of its own (which they then inherit).
pub fn dds_profile_in(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if std::env::var_os(DDS_PROFILE_ENV).is_some_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    let path = dir.join("fastdds.xml");
    std::fs::write(&path, DDS_PROFILE).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(path))
}

struct Proc {
    child: Child,
    exit_reported: bool,
    starts: u32,
}

/// One process per node: `<bin_dir>/<executable> --ros-args ...`, each
/// one's output in `<log_dir>/<name>.log`.
pub struct Processes {
    pids_path: PathBuf,
    bin_dir: PathBuf,
    /// The Fast DDS profile every process is started with, if any.
    dds_profile: Option<PathBuf>,
    /// The participant numbers of restarted processes (with a profile).
    participant_ids: Mutex<ParticipantIds>,
    log_dir: PathBuf,
    args: CellArgs,
    specs: BTreeMap<String, NodeSpec>,
    table: Mutex<BTreeMap<String, Proc>>,
}

impl Processes {
    /// The processes' ids are kept in `pids_path` (JSON, node → pid),
    /// rewritten at every (re)start.
    pub fn new(
        bin_dir: &Path,
        log_dir: &Path,
        pids_path: &Path,
        args: CellArgs,
        nodes: &[NodeSpec],
    ) -> Self {
        Processes {
            pids_path: pids_path.to_path_buf(),
            bin_dir: bin_dir.to_path_buf(),
            dds_profile: None,
            participant_ids: Mutex::default(),
            log_dir: log_dir.to_path_buf(),
            args,
            specs: nodes.iter().map(|n| (n.name.clone(), n.clone())).collect(),
            table: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts every process with the Fast DDS profile at `path`
    /// (FASTRTPS_DEFAULT_PROFILES_FILE).
    pub fn with_dds_profile(mut self, path: &Path) -> Self {
        self.dds_profile = Some(path.to_path_buf());
        self
    }

    /// The profile for a restarted process of `node`: the cell's profile
    /// with a participant number its peers do not still hold for a dead
    /// process (see [`super::participant_ids`]), written beside it; the
    /// cell's profile itself when it cannot take a number.
    fn restart_profile(&self, node: &str) -> Option<PathBuf> {
        let profile = self.dds_profile.as_ref()?;
        let id = self
            .participant_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(node, Instant::now());
        let numbered = id.and_then(|id| {
            let path = profile.with_file_name(format!("fastdds-participant-{id}.xml"));
            match write_numbered_profile(profile, id, &path) {
                Ok(written) => written.then_some((id, path)),
                Err(e) => {
                    tracing::warn!(node, "{e:#}; restarting it without a number of its own");
                    None
                }
            }
        });
        match numbered {
            Some((id, path)) => {
                tracing::info!(
                    node,
                    participant_id = id,
                    "restarting it as Fast DDS participant {id}"
                );
                Some(path)
            }
            None => Some(profile.clone()),
        }
    }

    fn spawn_one(&self, spec: &NodeSpec, dds_profile: Option<&Path>) -> anyhow::Result<Child> {
        let exe = self.bin_dir.join(&spec.executable);
        anyhow::ensure!(
            exe.is_file(),
            "{}: no such executable (build with cargo build --bins)",
            exe.display()
        );
        std::fs::create_dir_all(&self.log_dir)?;
        let log_path = self.log_dir.join(format!("{}.log", spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", log_path.display()))?;
        let mut command = Command::new(&exe);
        if let Some(profile) = dds_profile {
            command.env(DDS_PROFILE_ENV, profile);
        }
        command
            .args(self.args.command_line(&spec.name))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Ends with this process, however it ends (cell/tied.rs).
        spawn_tied(command).map_err(|e| anyhow::anyhow!("starting {}: {e}", exe.display()))
    }

    /// Starts every node's process.
    pub fn start_all(&self) -> anyhow::Result<()> {
        sweep_dead("before starting the cell's processes");
        for spec in self.specs.values() {
            let child = self.spawn_one(spec, self.dds_profile.as_deref())?;
            let mut table = self.lock();
            table.insert(
                spec.name.clone(),
                Proc {
                    child,
                    exit_reported: false,
                    starts: 1,
                },
            );
            self.write_pids(&table);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Proc>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_pids(&self, table: &BTreeMap<String, Proc>) {
        let pids: BTreeMap<&str, u32> = table
            .iter()
            .map(|(n, p)| (n.as_str(), p.child.id()))
            .collect();
        let text = serde_json::to_string_pretty(&pids).unwrap_or_default();
        if let Err(e) = std::fs::write(&self.pids_path, text) {
            tracing::warn!("{}: {e}", self.pids_path.display());
        }
    }

    /// How many times each node's process was started.
    pub fn starts(&self) -> BTreeMap<String, u32> {
        self.lock()
            .iter()
            .map(|(n, p)| (n.clone(), p.starts))
            .collect()
    }

    /// Each running node's pid.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.lock()
            .iter_mut()
            .filter_map(|(n, p)| {
                matches!(p.child.try_wait(), Ok(None)).then(|| (n.clone(), p.child.id()))
            })
            .collect()
    }

    /// Kills node `name`'s process with SIGKILL, as a crash would (the
    /// manager finds it exited and restarts it); its pid, if it runs.
    pub fn kill(&self, name: &str) -> Option<u32> {
        let mut table = self.lock();
        let p = table.get_mut(name)?;
        if !matches!(p.child.try_wait(), Ok(None)) {
            return None;
        }
        let pid = p.child.id();
        let _ = p.child.kill();
        Some(pid)
    }

    /// Stops every process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(&self, grace: Duration) {
        let mut table = self.lock();
        for p in table.values_mut() {
            terminate(&mut p.child);
        }
        let deadline = Instant::now() + grace;
        for (name, p) in table.iter_mut() {
            if !wait_until(&mut p.child, deadline) {
                tracing::warn!(node = %name, "did not stop within {grace:?} of SIGTERM: killed");
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        drop(table);
        sweep_dead_at_end("after stopping the cell's processes");
    }
}

fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Supervisor for Processes {
    fn exited(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in self.lock().iter_mut() {
            if p.exit_reported {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                tracing::warn!(node = %name, "process exited: {status}");
                p.exit_reported = true;
                out.push(name.clone());
            }
        }
        if !out.is_empty() {
            // A process that was killed left its Fast DDS shared memory
            // behind (64 MB a segment); nobody else will remove it.
            sweep_dead(&format!("after {} exited", out.join(", ")));
        }
        out
    }

    fn respawn(&self, node: &str) -> anyhow::Result<bool> {
        let Some(spec) = self.specs.get(node).cloned() else {
            return Ok(false);
        };
        let mut table = self.lock();
        if let Some(p) = table.get_mut(node) {
            terminate(&mut p.child);
            if !wait_until(&mut p.child, Instant::now() + Duration::from_secs(5)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        let profile = self.restart_profile(node);
        let child = self.spawn_one(&spec, profile.as_deref())?;
        let starts = table.get(node).map_or(0, |p| p.starts) + 1;
        table.insert(
            node.to_string(),
            Proc {
                child,
                exit_reported: false,
                starts,
            },
        );
        self.write_pids(&table);
        Ok(true)
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(10));
    }
}
