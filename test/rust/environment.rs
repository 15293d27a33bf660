//! A broken ROS environment is explained, not met with a linker or
//! `symbol lookup error`: both in the check itself and in real executables.

mod common;

use cncpick::kit::env::check_with;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn overlay_with_msgs(dir: &Path) {
    let marker = dir.join("share/ament_index/resource_index/packages");
    std::fs::create_dir_all(&marker).unwrap();
    std::fs::write(marker.join("cncpick_msgs"), "").unwrap();
}

fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |k| m.get(k).cloned()
}

fn temp_dir(tag: &str) -> common::Scratch {
    common::temp_dir("env", tag)
}

#[test]
fn a_sourced_overlay_with_the_right_distro_passes() {
    let ov = temp_dir("ok");
    overlay_with_msgs(&ov);
    let r = check_with(lookup(&[
        ("ROS_DISTRO", "jazzy".into()),
        (
            "AMENT_PREFIX_PATH",
            format!("/nonexistent:{}", ov.display()),
        ),
    ]));
    assert_eq!(r, Ok(()));
}

#[test]
fn a_wrong_distro_is_named_with_the_expected_one() {
    let ov = temp_dir("distro");
    overlay_with_msgs(&ov);
    let e = check_with(lookup(&[
        ("ROS_DISTRO", "humble".into()),
        ("AMENT_PREFIX_PATH", ov.display().to_string()),
    ]))
    .unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(
        e.0[0].contains("\"humble\"") && e.0[0].contains("\"jazzy\""),
        "{e}"
    );
}

#[test]
fn a_missing_overlay_names_the_package_and_the_fix() {
    let venv_only = temp_dir("noov");
    let e = check_with(lookup(&[
        ("ROS_DISTRO", "jazzy".into()),
        ("AMENT_PREFIX_PATH", venv_only.display().to_string()),
    ]))
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cncpick_msgs"), "{text}");
    assert!(
        text.contains("./cncpick") && text.contains("source"),
        "{text}"
    );
}

#[test]
fn nothing_sourced_reports_every_problem_at_once() {
    let e = check_with(lookup(&[])).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(e.0[0].contains("ROS_DISTRO is not set"), "{e}");
    assert!(e.0[1].contains("AMENT_PREFIX_PATH is not set"), "{e}");
}

/// Runs a real executable with a broken environment; it must exit with 2 and
/// explain itself on stderr.
fn run_broken(exe: &str, args: &[&str], edit: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    edit(&mut cmd);
    let out = cmd.output().expect("the executable runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("symbol lookup error"), "{stderr}");
    assert!(stderr.contains("To fix it"), "{stderr}");
    stderr
}

#[test]
fn a_node_started_with_the_wrong_distro_says_what_to_run() {
    let stderr = run_broken(env!("CARGO_BIN_EXE_demo_registry"), &[], |c| {
        c.env("ROS_DISTRO", "humble");
    });
    assert!(stderr.contains("\"humble\""), "{stderr}");
}

#[test]
fn a_node_started_without_the_overlay_says_what_to_run() {
    let venv = std::env::var("CNCPICK_VENV").expect("tests run with the cncpick env sourced");
    let stderr = run_broken(env!("CARGO_BIN_EXE_demo_source"), &[], |c| {
        c.env("AMENT_PREFIX_PATH", &venv);
    });
    assert!(stderr.contains("cncpick_msgs"), "{stderr}");
}

#[test]
fn a_shell_with_nothing_sourced_gets_an_explanation_not_a_loader_error() {
    let stderr = run_broken(env!("CARGO_BIN_EXE_cncpick"), &["check-env"], |c| {
        c.env_clear().env("PATH", "/usr/bin:/bin");
    });
    assert!(stderr.contains("ROS_DISTRO is not set"), "{stderr}");
}

#[test]
fn a_domain_id_that_is_not_a_number_or_too_high_is_refused() {
    let ov = temp_dir("domain");
    overlay_with_msgs(&ov);
    for bad in ["not-leased", "233", "-1"] {
        let e = check_with(lookup(&[
            ("ROS_DISTRO", "jazzy".into()),
            ("AMENT_PREFIX_PATH", ov.display().to_string()),
            ("ROS_DOMAIN_ID", bad.into()),
        ]))
        .unwrap_err();
        assert!(
            e.0[0].contains(&format!("\"{bad}\"")) && e.0[0].contains("232"),
            "{e}"
        );
    }
}

#[test]
fn a_node_started_on_an_impossible_domain_explains_instead_of_panicking() {
    let stderr = run_broken(env!("CARGO_BIN_EXE_demo_registry"), &[], |c| {
        c.env("ROS_DOMAIN_ID", "300");
    });
    assert!(stderr.contains("ROS_DOMAIN_ID is \"300\""), "{stderr}");
}
