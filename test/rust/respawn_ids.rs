//! A node process the supervisor restarts gets a Fast DDS participant
//! number of its own (cell::participant_ids), so it does not listen at the
//! ports where its peers still hold the participant of the killed one.
//! That it is then found and brought back is test_cell.py's kill test.
//! Under `ros2 launch`, `cncpick with-participant-id` does the same for
//! the command launch starts again (cell/launch_ids.rs).

mod common;

use cncpick::cell::host::{Processes, DDS_PROFILE};
use cncpick::cell::participant_ids::IDS;
use cncpick::cell::spec::{CellArgs, NodeSpec};
use cncpick::kit::testing::DomainLease;
use cncpick::manager::node::Supervisor;
use common::Killed;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The UDP ports the sockets of process `pid` are bound to.
fn udp_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// The metatraffic unicast port of participant `id` in `domain` (RTPS's
/// well-known ports: 7400 + 250 d + 10 + 2 id).
fn metatraffic_port(domain: u32, id: u8) -> u16 {
    (7410 + 250 * domain + 2 * u32::from(id)) as u16
}

/// The unicast ports of `domain` (RTPS's well-known ports) that the
/// process `pid_of()` names is bound to, once it has bound its
/// participant's (within 20 s).
fn unicast_ports_once_up(pid_of: impl Fn() -> Option<u32>, domain: u32) -> (u32, BTreeSet<u16>) {
    let unicast = metatraffic_port(domain, 0)..metatraffic_port(domain, 120);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = pid_of() {
            let ports: BTreeSet<u16> = udp_ports(pid)
                .into_iter()
                .filter(|p| unicast.contains(p))
                .collect();
            if ports.len() >= 2 {
                return (pid, ports);
            }
        }
        assert!(Instant::now() < deadline, "no UDP ports within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ports_once_up(p: &Processes, node: &str, domain: u32) -> (u32, BTreeSet<u16>) {
    unicast_ports_once_up(|| p.pids().get(node).copied(), domain)
}

fn kill_and_wait(p: &Processes, node: &str) {
    assert!(p.kill(node).is_some(), "{node} was not running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exited().contains(&node.to_string()) {
        assert!(
            Instant::now() < deadline,
            "{node}: no exit seen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The restart's `profile` names number `id`, and the process listens at
/// that number's ports (no other participant of this domain holds them),
/// and at none of the ports a killed one of this node listened at (`seen`,
/// to which its `ports` are added).
fn check_restart(
    profile: &Path,
    id: u8,
    domain: u32,
    ports: BTreeSet<u16>,
    seen: &mut Vec<BTreeSet<u16>>,
) {
    let written = std::fs::read_to_string(profile).expect("the restart's profile");
    assert!(written.contains(&format!("<participantID>{id}</participantID>")));
    assert!(
        ports.contains(&metatraffic_port(domain, id)),
        "participant {id}: ports {ports:?}"
    );
    for old in seen.iter() {
        assert!(ports.is_disjoint(old), "{ports:?} against {old:?}");
    }
    seen.push(ports);
}

#[test]
fn each_restart_listens_at_the_ports_of_a_participant_number_nobody_held_lately() {
    let lease = DomainLease::acquire().unwrap();
    let domain = lease.id;
    std::env::set_var("ROS_DOMAIN_ID", domain.to_string());
    std::env::remove_var("FASTRTPS_DEFAULT_PROFILES_FILE");
    let dir = std::env::temp_dir().join(format!("cncpick-respawn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("fastdds.xml");
    std::fs::write(&profile, DDS_PROFILE).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_kit_example"));
    let node = "respawned";
    let p = Processes::new(
        exe.parent().unwrap(),
        &dir.join("logs"),
        &dir.join("pids.json"),
        CellArgs::new(vec![], &[]).unwrap(),
        &[NodeSpec {
            name: node.into(),
            executable: "kit_example".into(),
        }],
    )
    .with_dds_profile(&profile);
    p.start_all().unwrap();
    let (first_pid, first) = ports_once_up(&p, node, domain);

    let mut seen = vec![first];
    for id in [*IDS.start(), *IDS.start() + 1] {
        kill_and_wait(&p, node);
        assert!(p.respawn(node).unwrap());
        let (pid, ports) = ports_once_up(&p, node, domain);
        assert_ne!(pid, first_pid);
        let profile = dir.join(format!("fastdds-participant-{id}.xml"));
        check_restart(&profile, id, domain, ports, &mut seen);
    }
    p.stop_all(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn under_launch_a_restarted_command_listens_at_the_ports_of_a_number_of_its_own() {
    let lease = DomainLease::acquire().unwrap();
    let domain = lease.id;
    let dir = std::env::temp_dir().join(format!("cncpick-launch-ids-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("fastdds.xml");
    std::fs::write(&profile, DDS_PROFILE).unwrap();
    let state = dir.join("ids");
    let exe = env!("CARGO_BIN_EXE_kit_example");
    // What launch runs, again at every respawn: the same command line and
    // environment.
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cncpick"))
            .args(["with-participant-id", "--node", "respawned", "--state-dir"])
            .arg(&state)
            .args(["--", exe, "--ros-args", "-r", "__node:=respawned"])
            .env("ROS_DOMAIN_ID", domain.to_string())
            .env("FASTRTPS_DEFAULT_PROFILES_FILE", &profile)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = Killed(start());
    let (pid, first) = unicast_ports_once_up(|| Some(child.0.id()), domain);
    // The command became the node: launch signals the pid it started.
    let running = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(running.ends_with("kit_example"), "{running:?}");
    // A first start is numbered by Fast DDS, not from the restarts' range.
    for id in IDS {
        assert!(!first.contains(&metatraffic_port(domain, id)), "{first:?}");
    }
    let mut seen = vec![first];
    for id in [*IDS.start(), *IDS.start() + 1] {
        child.stop();
        child = Killed(start());
        let (_, ports) = unicast_ports_once_up(|| Some(child.0.id()), domain);
        let profile = state.join(format!("respawned-participant-{id}.xml"));
        check_restart(&profile, id, domain, ports, &mut seen);
    }
    child.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
