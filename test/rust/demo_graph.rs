//! The demo graph over real DDS: two r2r nodes exchanging cncpick_msgs, in
//! one process (`cncpick demo`) and as two processes.

use cncpick::kit::testing::DomainLease;
use std::process::{Command, Stdio};

fn field(report: &str, name: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in report:\n{report}"));
    line[name.len()..].trim().parse().unwrap()
}

#[test]
fn cncpick_run_reports_every_object_answered_once() {
    let lease = DomainLease::acquire().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cncpick"))
        .args([
            "demo",
            "--frames",
            "30",
            "--rate-hz",
            "50",
            "--objects-per-frame",
            "3",
        ])
        .env("ROS_DOMAIN_ID", lease.id.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&stdout, "frames published:"), 30);
    assert_eq!(field(&stdout, "objects announced:"), 90);
    assert_eq!(field(&stdout, "object events received:"), 90);
    assert_eq!(field(&stdout, "lost:"), 0);
    assert_eq!(field(&stdout, "duplicates:"), 0);
}

#[test]
fn source_and_registry_in_separate_processes_exchange_messages() {
    let lease = DomainLease::acquire().unwrap();
    let domain = lease.id.to_string();
    let mut registry = Command::new(env!("CARGO_BIN_EXE_demo_registry"))
        .env("ROS_DOMAIN_ID", &domain)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo_source"))
        .args([
            "--frames",
            "20",
            "--rate-hz",
            "40",
            "--objects-per-frame",
            "1",
        ])
        .env("ROS_DOMAIN_ID", &domain)
        .output()
        .unwrap();
    // Stop the registry the way ros2 launch does, and expect a clean exit.
    Command::new("kill")
        .args(["-TERM", &registry.id().to_string()])
        .status()
        .unwrap();
    let status = registry.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&stdout, "object events received:"), 20);
    assert_eq!(field(&stdout, "lost:"), 0);
    assert!(status.success(), "registry exit: {status:?}");
}

#[test]
fn a_bad_rate_is_refused_naming_the_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_cncpick"))
        .args(["demo", "--rate-hz", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--rate-hz"), "{stderr}");
}
