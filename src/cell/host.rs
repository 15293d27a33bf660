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
use std::ffi::{OsStr, OsString};
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

/// The transports of a cell's processes that frames pass between
/// (params/fastdds.xml): a shared-memory segment that holds camera frames.
pub const DDS_PROFILE: &str = include_str!("../../params/fastdds.xml");

/// The transports of every other process of a cell, the supervisor's
/// included (params/fastdds-control.xml): UDP only, so that a peer killed
/// mid-message cannot stop it (the file says how that happens).
pub const DDS_CONTROL_PROFILE: &str = include_str!("../../params/fastdds-control.xml");

/// The variable rmw_fastrtps reads its discovery range from.
pub const DISCOVERY_RANGE_ENV: &str = "ROS_AUTOMATIC_DISCOVERY_RANGE";

/// The range under which rmw_fastrtps adds shared memory to every
/// participant, and which [`DDS_CONTROL_PROFILE`] does over UDP alone.
pub const LOCALHOST_RANGE: &str = "LOCALHOST";

/// The range that leaves transports and discovery to the profile.
pub const PROFILE_RANGE: &str = "SYSTEM_DEFAULT";

/// The executables that publish or take camera frames.
pub const FRAME_EXECUTABLES: [&str; 3] = ["sim", "camera", "detector"];

/// The Fast DDS set-up of a cell's processes, by what they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdsProfiles {
    /// For [`FRAME_EXECUTABLES`]: [`DDS_PROFILE`].
    pub frames: PathBuf,
    /// For the others: [`DDS_CONTROL_PROFILE`], when the discovery range
    /// is [`LOCALHOST_RANGE`]; under another range they get `frames`.
    pub control: Option<PathBuf>,
    /// The discovery range of the environment, which frame processes keep.
    pub range: Option<OsString>,
}

impl DdsProfiles {
    /// One profile for every process, in the environment's discovery range.
    pub fn same(path: &Path) -> Self {
        DdsProfiles {
            frames: path.to_path_buf(),
            control: None,
            range: std::env::var_os(DISCOVERY_RANGE_ENV),
        }
    }

    /// The profile and discovery range (none: the variable unset) of a
    /// process that does or does not carry frames.
    fn env(&self, frames: bool) -> (&Path, Option<&OsStr>) {
        match self.control.as_deref() {
            Some(control) if !frames => (control, Some(OsStr::new(PROFILE_RANGE))),
            _ => (&self.frames, self.range.as_deref()),
        }
    }

    /// The profile a process of `executable` starts with.
    pub fn for_executable(&self, executable: &str) -> &Path {
        self.env(FRAME_EXECUTABLES.contains(&executable)).0
    }

    /// The discovery range a process of `executable` starts with (none:
    /// the variable unset).
    pub fn range_for(&self, executable: &str) -> Option<&OsStr> {
        self.env(FRAME_EXECUTABLES.contains(&executable)).1
    }

    /// Sets this process up as one that does or does not carry frames;
    /// call before it creates its ROS context, while it runs one thread.
    pub fn apply_here(&self, frames: bool) {
        let (profile, range) = self.env(frames);
        std::env::set_var(DDS_PROFILE_ENV, profile);
        match range {
            Some(r) => std::env::set_var(DISCOVERY_RANGE_ENV, r),
            None => std::env::remove_var(DISCOVERY_RANGE_ENV),
        }
    }
}

/// Writes [`DDS_PROFILE`] (and [`DDS_CONTROL_PROFILE`], when the discovery
/// range is [`LOCALHOST_RANGE`]) into `dir` for the processes of a cell,
/// unless the environment names a profile of its own (which they then all
/// inherit).
pub fn dds_profiles_in(dir: &Path) -> anyhow::Result<Option<DdsProfiles>> {
    if std::env::var_os(DDS_PROFILE_ENV).is_some_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::Ok(path)
    };
    let range = std::env::var_os(DISCOVERY_RANGE_ENV);
    let control = if range.as_deref() == Some(OsStr::new(LOCALHOST_RANGE)) {
        Some(write("fastdds-control.xml", DDS_CONTROL_PROFILE)?)
    } else {
        tracing::warn!(
            "{DISCOVERY_RANGE_ENV} is {range:?}, not {LOCALHOST_RANGE}: every process of the cell \
             uses shared memory, so a process killed mid-message can stop the others, the \
             manager's included (params/fastdds-control.xml is for one computer; RELIABILITY.md §5)"
        );
        None
    };
    Ok(Some(DdsProfiles {
        frames: write("fastdds.xml", DDS_PROFILE)?,
        control,
        range,
    }))
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
    /// The Fast DDS profiles the processes are started with, if any.
    dds_profiles: Option<DdsProfiles>,
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
            dds_profiles: None,
            participant_ids: Mutex::default(),
            log_dir: log_dir.to_path_buf(),
            args,
            specs: nodes.iter().map(|n| (n.name.clone(), n.clone())).collect(),
            table: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts every process with the Fast DDS profile at `path`
    /// (FASTRTPS_DEFAULT_PROFILES_FILE).
    pub fn with_dds_profile(self, path: &Path) -> Self {
        self.with_dds_profiles(DdsProfiles::same(path))
    }

    /// Starts each process with the profile for what it carries.
    pub fn with_dds_profiles(mut self, profiles: DdsProfiles) -> Self {
        self.dds_profiles = Some(profiles);
        self
    }

    /// The profile a first start of `spec`'s process gets.
    fn profile_of(&self, spec: &NodeSpec) -> Option<&Path> {
        Some(self.dds_profiles.as_ref()?.for_executable(&spec.executable))
    }

    /// The profile for a restarted process of `spec`: its profile with a
    /// participant number its peers do not still hold for a dead process
    /// (see [`super::participant_ids`]), written beside it; its profile
    /// itself when it cannot take a number.
    fn restart_profile(&self, spec: &NodeSpec) -> Option<PathBuf> {
        let node = spec.name.as_str();
        let profile = self.profile_of(spec)?;
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
            None => Some(profile.to_path_buf()),
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
            let range = self
                .dds_profiles
                .as_ref()
                .map(|p| p.range_for(&spec.executable));
            match range.flatten() {
                Some(r) => command.env(DISCOVERY_RANGE_ENV, r),
                None => command.env_remove(DISCOVERY_RANGE_ENV),
            };
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
            let child = self.spawn_one(spec, self.profile_of(spec))?;
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
        let profile = self.restart_profile(&spec);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile's XML without its comments.
    fn xml(profile: &str) -> String {
        let mut out = String::new();
        let mut rest = profile;
        while let Some((before, after)) = rest.split_once("<!--") {
            out.push_str(before);
            rest = after.split_once("-->").map_or("", |(_, a)| a);
        }
        out + rest
    }

    fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
        let (_, from) = text.split_once(open).expect(open);
        from.split_once(close).expect(close).0
    }

    #[test]
    fn only_the_processes_frames_pass_between_get_shared_memory() {
        let p = DdsProfiles {
            frames: "frames.xml".into(),
            control: Some("control.xml".into()),
            range: Some(LOCALHOST_RANGE.into()),
        };
        for exe in ["sim", "camera", "detector"] {
            assert_eq!(p.for_executable(exe), Path::new("frames.xml"), "{exe}");
            assert_eq!(p.range_for(exe), Some(OsStr::new("LOCALHOST")), "{exe}");
        }
        for exe in ["state_manager", "tracker", "scheduler", "cnc", "manager"] {
            assert_eq!(p.for_executable(exe), Path::new("control.xml"), "{exe}");
            // rmw_fastrtps adds shared memory under LOCALHOST: not for these.
            assert_eq!(
                p.range_for(exe),
                Some(OsStr::new("SYSTEM_DEFAULT")),
                "{exe}"
            );
        }
        // Under another range, every process as before.
        let subnet = DdsProfiles {
            control: None,
            range: None,
            ..p
        };
        for exe in ["camera", "cnc", "manager"] {
            assert_eq!(subnet.for_executable(exe), Path::new("frames.xml"));
            assert_eq!(subnet.range_for(exe), None);
        }
    }

    #[test]
    fn the_control_profile_does_over_udp_what_localhost_discovery_does() {
        let (frames, control) = (xml(DDS_PROFILE), xml(DDS_CONTROL_PROFILE));
        let used = |x: &str| between(x, "<userTransports>", "</userTransports>").to_string();
        assert!(used(&frames).contains("cncpick_shm") && frames.contains("<type>SHM</type>"));
        assert!(
            !control.contains("SHM") && !control.contains("shm"),
            "{control}"
        );
        assert!(used(&control).contains("cncpick_udp"));
        for x in [&frames, &control] {
            assert!(x.contains("<useBuiltinTransports>false</useBuiltinTransports>"));
        }
        // What rmw_fastrtps sets for LOCALHOST: peers at 127.0.0.1 for
        // participant numbers 0-31 (restarts take 16-31), a unicast
        // discovery locator and so no multicast one.
        assert!(control.contains("<maxInitialPeersRange>32</maxInitialPeersRange>"));
        assert!(*crate::cell::participant_ids::IDS.end() < 32);
        let peers = between(&control, "<initialPeersList>", "</initialPeersList>");
        assert!(peers.contains("<address>127.0.0.1</address>"), "{peers}");
        assert!(control.contains("<metatrafficUnicastLocatorList>"));
        assert!(!control.contains("Multicast"));
        // The same discovery timing: a restarted process is found, and a
        // dead one forgotten, as fast whatever it carries.
        assert_eq!(
            between(&frames, "<discovery_config>", "</discovery_config>"),
            between(&control, "<discovery_config>", "</discovery_config>")
        );
    }

    #[test]
    fn a_cells_profiles_are_written_beside_its_run_unless_the_environment_names_one() {
        let dir = std::env::temp_dir().join(format!("cncpick-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::remove_var(DDS_PROFILE_ENV);
        std::env::set_var(DISCOVERY_RANGE_ENV, LOCALHOST_RANGE);
        let p = dds_profiles_in(&dir).unwrap().expect("written");
        assert_eq!(std::fs::read_to_string(&p.frames).unwrap(), DDS_PROFILE);
        let control = p.control.clone().expect("LOCALHOST: a control profile");
        assert_eq!(
            std::fs::read_to_string(&control).unwrap(),
            DDS_CONTROL_PROFILE
        );
        assert_eq!(p.range.as_deref(), Some(OsStr::new(LOCALHOST_RANGE)));
        // This process set up as the supervisor is.
        p.apply_here(false);
        assert_eq!(std::env::var_os(DDS_PROFILE_ENV), Some(control.into()));
        assert_eq!(std::env::var(DISCOVERY_RANGE_ENV).unwrap(), PROFILE_RANGE);
        // A profile of the environment's own: nothing written.
        assert_eq!(dds_profiles_in(&dir).unwrap(), None);
        std::env::remove_var(DDS_PROFILE_ENV);
        std::env::set_var(DISCOVERY_RANGE_ENV, "SUBNET");
        let subnet = dds_profiles_in(&dir).unwrap().expect("written");
        assert_eq!(subnet.control, None);
        let e = dds_profiles_in(&dir.join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
