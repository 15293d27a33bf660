//! The sweep of a dead process's Fast DDS shared memory, against real node
//! processes on the cell's DDS profile: a killed one's files go, a live
//! one's stay; and a port a killed process left half made stops hanging
//! the processes that open it once the manager marks it.

use cncpick::kit::shm::{sweep, SHM_DIR};
use cncpick::kit::testing::DomainLease;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The segment lock files (`fastrtps_<16 hex>_el`) process `pid` has
/// open: its participants' segments, whose locks it holds while it lives.
fn segment_locks_of(pid: u32) -> BTreeSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| Some(t.strip_prefix(SHM_DIR).ok()?.to_str()?.to_string()))
        .filter(|n| n.starts_with("fastrtps_") && n.ends_with("_el") && !n.contains("port"))
        .collect()
}

/// Waits (30 s at most) until process `pid` holds a segment lock.
fn wait_for_segment(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while segment_locks_of(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "process {pid} opened no Fast DDS segment in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `exe` in `domain` on the cell's DDS profile, its output discarded.
fn in_domain(exe: &str, domain: &str) -> Command {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("params/fastdds.xml");
    let mut c = Command::new(exe);
    c.env("ROS_DOMAIN_ID", domain)
        .env("FASTRTPS_DEFAULT_PROFILES_FILE", profile)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn start_node(domain: &str) -> Child {
    in_domain(env!("CARGO_BIN_EXE_demo_registry"), domain)
        .spawn()
        .unwrap()
}

fn held(lock: &str) -> bool {
    let f = std::fs::File::open(Path::new(SHM_DIR).join(lock)).unwrap();
    f.try_lock().is_err()
}

#[test]
fn a_killed_nodes_shared_memory_is_swept_and_a_live_ones_stays() {
    let lease = DomainLease::acquire().unwrap();
    let domain = lease.id.to_string();

    let mut dead = start_node(&domain);
    let mut live = start_node(&domain);
    wait_for_segment(dead.id());
    wait_for_segment(live.id());
    let dead_locks = segment_locks_of(dead.id());
    let live_locks = segment_locks_of(live.id());
    for l in dead_locks.iter().chain(&live_locks) {
        assert!(held(l), "{l} not held by its live process");
    }

    dead.kill().unwrap();
    dead.wait().unwrap();
    // Killed: Fast DDS could not remove its files, and nobody holds them.
    for l in &dead_locks {
        assert!(
            Path::new(SHM_DIR).join(l).exists(),
            "{l} went with the process"
        );
        assert!(!held(l), "{l} still held after its process died");
    }

    // 1 s of settling: another test's process may be starting now.
    let settle = Duration::from_secs(1);
    std::thread::sleep(settle);
    let swept = sweep(Path::new(SHM_DIR), settle);
    for l in &dead_locks {
        let segment = l.trim_end_matches("_el");
        assert!(swept.removed.contains(l), "{l} not swept: {swept:?}");
        assert!(!Path::new(SHM_DIR).join(l).exists());
        assert!(!Path::new(SHM_DIR).join(segment).exists());
    }
    for l in &live_locks {
        let segment = l.trim_end_matches("_el");
        assert!(!swept.removed.contains(l), "{l} of a live process swept");
        assert!(Path::new(SHM_DIR).join(segment).exists());
    }
    assert!(live.try_wait().unwrap().is_none(), "the live node died");
    assert!(live_locks.is_subset(&segment_locks_of(live.id())));

    // Stopped as ros2 launch stops it, it removes its own.
    Command::new("kill")
        .args(["-TERM", &live.id().to_string()])
        .status()
        .unwrap();
    assert!(live.wait().unwrap().success());
    for l in &live_locks {
        assert!(
            !Path::new(SHM_DIR).join(l).exists(),
            "{l} left after a clean exit"
        );
    }
}

/// Whether process `pid` listens on a Fast DDS shared-memory port (it has
/// a `dds.shm.<port>` thread).
fn listens_on_shm(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .any(|c| c.starts_with("dds.shm.") && !c.starts_with("dds.shm.wdog"))
        })
        .unwrap_or(false)
}

/// Stops `child` as a supervisor does (SIGTERM), so that it removes its
/// own shared memory; kills it only if it will not stop within 10 s.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) with a pid this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_port_left_half_made_hangs_its_openers_until_the_manager_marks_it_and_their_stop_is_bounded() {
    use cncpick::kit::app::{FORCED_EXIT, STOP_BOUND_ENV};
    use cncpick::kit::shm::HALF_MADE;
    let lease = DomainLease::acquire().unwrap();
    let domain = lease.id;
    // The port the domain's first participant listens on for user data
    // (RTPS's well-known ports: 7400 + 250 d + 11), left as a creator killed
    // halfway leaves it: boost.interprocess's state 1, "initializing".
    let name = format!("fastrtps_port{}", 7411 + 250 * domain);
    let port = Path::new(SHM_DIR).join(&name);
    let mut bytes = vec![0u8; 4096];
    bytes[..4].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&port, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&port).unwrap();
    f.set_modified(std::time::SystemTime::now() - 2 * HALF_MADE)
        .unwrap();
    let log = |tag: &str| {
        std::env::temp_dir().join(format!("cncpick-halfmade-{tag}-{}.log", std::process::id()))
    };

    // A node stuck there at its start is told to stop: it cannot stop
    // cleanly, and ends once its stop bound (2 s here) has passed.
    let mut stuck_node = in_domain(env!("CARGO_BIN_EXE_kit_example"), &domain.to_string())
        .env(STOP_BOUND_ENV, "2")
        .stderr(std::fs::File::create(log("bounded")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let stuck_at_start = !listens_on_shm(stuck_node.id());
    // SAFETY: kill(2) with a pid this test started.
    unsafe { libc::kill(stuck_node.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ended = None;
    while ended.is_none() && Instant::now() < deadline {
        ended = stuck_node.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = stuck_node.kill();
    let _ = stuck_node.wait();
    let bounded_said = std::fs::read_to_string(log("bounded")).unwrap_or_default();

    // Another stuck there goes on once the manager, as under ros2 launch
    // (no supervisor of its own), finds the port and marks it.
    let mut node = start_node(&domain.to_string());
    std::thread::sleep(Duration::from_secs(3));
    let stuck = !listens_on_shm(node.id());
    let mut manager = in_domain(env!("CARGO_BIN_EXE_manager"), &domain.to_string())
        .args(["--ros-args", "-p", "metrics_bind:=127.0.0.1:0"])
        .stderr(std::fs::File::create(log("manager")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !listens_on_shm(node.id()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let up = listens_on_shm(node.id());
    stop(&mut node);
    stop(&mut manager);
    let said = std::fs::read_to_string(log("manager")).unwrap_or_default();
    for tag in ["bounded", "manager"] {
        let _ = std::fs::remove_file(log(tag));
    }
    let _ = std::fs::remove_file(&port);
    let _ = std::fs::remove_file(Path::new(SHM_DIR).join(format!("sem.{name}_mutex")));

    assert!(
        stuck_at_start,
        "the first node did not wait on the half-made port"
    );
    assert_eq!(
        ended.map(|s| s.code()),
        Some(Some(FORCED_EXIT)),
        "the stuck node, told to stop, did not end by its bound; it said:\n{bounded_said}"
    );
    assert!(
        bounded_said.contains("not stopped within 2s"),
        "{bounded_said}"
    );
    assert!(stuck, "the node did not wait on the half-made port");
    assert!(
        up,
        "the node did not go on within 20 s of the manager's start; the manager said:\n{said}"
    );
    assert!(
        said.lines().any(|l| l.contains("dds_port_unstuck")
            && l.contains("marked corrupted")
            && l.contains(&name)),
        "the manager did not raise an alert naming {name} as marked:\n{said}"
    );
}
