//! A supervisor killed outright (SIGKILL, as the OOM killer kills) takes
//! its node processes with it (cell/tied.rs), and a node it respawned from
//! a thread that then ended is not taken before it.

mod common;

use cncpick::cell::host::Processes;
use cncpick::cell::spec::{CellArgs, NodeSpec};
use cncpick::kit::testing::DomainLease;
use cncpick::manager::node::Supervisor;
use common::Killed;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the supervisor's side keeps its files (set by the test for it).
const DIR_ENV: &str = "CNCPICK_TIED_TEST_DIR";

/// The supervisor's side, run only by the test below, in a process of its
/// own: a process table of two nodes, one respawned from a thread that then
/// ends (as from a tokio worker), then waiting to be killed.
#[test]
#[ignore = "run by a_killed_supervisors_nodes_end_with_it, in a process of its own"]
fn supervisor() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("set by the test that runs this"));
    let exe = Path::new(env!("CARGO_BIN_EXE_kit_example"));
    let spec = |name: &str| NodeSpec {
        name: name.into(),
        executable: "kit_example".into(),
    };
    let p = Arc::new(Processes::new(
        exe.parent().unwrap(),
        &dir.join("logs"),
        &dir.join("pids.json"),
        CellArgs::new(vec![], &[]).unwrap(),
        &[spec("first"), spec("respawned")],
    ));
    p.start_all().unwrap();
    let q = p.clone();
    std::thread::spawn(move || assert!(q.respawn("respawned").unwrap()))
        .join()
        .unwrap();
    std::fs::write(dir.join("ready"), "").unwrap();
    // Killed long before this; if not, it stops its nodes as it goes.
    std::thread::sleep(Duration::from_secs(120));
}

/// Whether process `pid` still runs (a zombie has ended).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

#[test]
fn a_killed_supervisors_nodes_end_with_it() {
    let lease = DomainLease::acquire().unwrap();
    let dir = std::env::temp_dir().join(format!("cncpick-tied-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut supervisor = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "supervisor", "--ignored", "--nocapture"])
            .env(DIR_ENV, &dir)
            .env("ROS_DOMAIN_ID", lease.id.to_string())
            .env_remove("FASTRTPS_DEFAULT_PROFILES_FILE")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the supervisor did not start its nodes within 30 s"
        );
        assert!(
            supervisor.0.try_wait().unwrap().is_none(),
            "the supervisor ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids: BTreeMap<String, u32> =
        serde_json::from_slice(&std::fs::read(dir.join("pids.json")).unwrap()).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // A second after the respawning thread ended, its node still runs.
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<bool> = pids.values().map(|&p| runs(p)).collect();

    supervisor.0.kill().unwrap();
    supervisor.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.values().any(|&p| runs(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<(&String, &u32)> = pids.iter().filter(|(_, &p)| runs(p)).collect();
    for (_, &pid) in &left {
        // SAFETY: kill(2) of a node process this test's supervisor started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        before,
        [true, true],
        "{pids:?}: a node ended with the supervisor alive"
    );
    assert!(
        left.is_empty(),
        "{left:?} still ran 10 s after their supervisor was killed"
    );
}
