//! Parameters: loading from ros__parameters files, the environment and the
//! command line, with errors naming the source and the key; and dynamic
//! updates applied whole or refused.

use cncpick::example::params::ExampleParams;
use cncpick::kit::params::{load, NodeParams, Params, RosArgs};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;

const FQN: &str = "/cell/kit_example";

/// A params file holding `text`, removed when dropped.
fn write(tag: &str, text: &str) -> tempfile::TempPath {
    let f = tempfile::Builder::new()
        .prefix(&format!("cncpick-params-{tag}-"))
        .suffix(".yaml")
        .tempfile()
        .unwrap();
    std::fs::write(f.path(), text).unwrap();
    f.into_temp_path()
}

fn args(list: &[&str]) -> RosArgs {
    let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    RosArgs::parse(&v).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_file(
    text: &str,
    tag: &str,
) -> (
    tempfile::TempPath,
    Result<ExampleParams, cncpick::kit::params::ParamError>,
) {
    let f = write(tag, text);
    let a = args(&["x", "--ros-args", "--params-file", f.to_str().unwrap()]);
    let r = load::<ExampleParams>(FQN, &a, no_env);
    (f, r)
}

#[test]
fn with_nothing_given_the_defaults_hold() {
    let p: ExampleParams = load(FQN, &args(&["x"]), no_env).unwrap();
    assert_eq!(p, ExampleParams::default());
}

#[test]
fn the_node_section_of_a_shared_file_applies_and_the_most_specific_wins() {
    let (_, r) = load_file(
        "/**:\n  ros__parameters:\n    heartbeat_period_s: 2.0\n    tick_period_s: 0.5\n\
         /cell/kit_example:\n  ros__parameters:\n    heartbeat_period_s: 0.25\n\
         /cell/other_node:\n  ros__parameters:\n    something_else: 7\n",
        "shared",
    );
    let p = r.unwrap();
    assert_eq!((p.heartbeat_period_s, p.tick_period_s), (0.25, 0.5));
}

#[test]
fn an_integer_is_accepted_for_a_floating_point_parameter() {
    let (_, r) = load_file(
        "kit_example:\n  ros__parameters:\n    heartbeat_period_s: 3\n",
        "int",
    );
    assert_eq!(r.unwrap().heartbeat_period_s, 3.0);
}

#[test]
fn a_wrong_type_is_refused_naming_the_file_and_key() {
    let (f, r) = load_file(
        "kit_example:\n  ros__parameters:\n    heartbeat_period_s: fast\n",
        "type",
    );
    let e = r.unwrap_err();
    assert_eq!(e.origin, f.display().to_string());
    assert_eq!(e.key, "heartbeat_period_s");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: parameter heartbeat_period_s: \"fast\" is not a number",
            f.display()
        )
    );
}

#[test]
fn an_out_of_range_value_is_refused_naming_the_file_and_key() {
    let (f, r) = load_file(
        "kit_example:\n  ros__parameters:\n    tick_period_s: 0.0\n",
        "range",
    );
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: parameter tick_period_s: 0.0 is outside its range [0.001, 10]",
            f.display()
        )
    );
}

#[test]
fn an_unknown_key_is_refused_naming_the_file_and_key() {
    let (f, r) = load_file(
        "kit_example:\n  ros__parameters:\n    heartbeat_s: 1.0\n",
        "unknown",
    );
    let e = r.unwrap_err();
    assert_eq!(
        (e.origin, e.key.as_str()),
        (f.display().to_string(), "heartbeat_s")
    );
    assert!(e.problem.starts_with("unknown parameter"), "{}", e.problem);
}

#[test]
fn a_value_outside_its_choices_is_refused() {
    let (_, r) = load_file(
        "kit_example:\n  ros__parameters:\n    fail_mode: sometimes\n",
        "choice",
    );
    assert_eq!(
        r.unwrap_err().problem,
        "\"sometimes\" is not one of failure, error"
    );
}

#[test]
fn a_broken_yaml_file_is_refused_naming_the_file() {
    let (f, r) = load_file("kit_example:\n  ros__parameters: [unclosed\n", "syntax");
    let e = r.unwrap_err();
    assert_eq!(e.origin, f.display().to_string());
    assert!(e.problem.starts_with("not valid YAML"), "{}", e.problem);
}

#[test]
fn a_missing_file_is_refused_naming_it() {
    let a = args(&["x", "--ros-args", "--params-file", "/nonexistent/cell.yaml"]);
    let e = load::<ExampleParams>(FQN, &a, no_env).unwrap_err();
    assert_eq!(e.origin, "/nonexistent/cell.yaml");
}

#[test]
fn the_environment_overrides_the_file_and_the_command_line_overrides_both() {
    let f = write(
        "layers",
        "kit_example:\n  ros__parameters:\n    heartbeat_period_s: 2.0\n    tick_period_s: 0.5\n",
    );
    let env: HashMap<&str, &str> = [
        ("CNCPICK_PARAM_KIT_EXAMPLE__HEARTBEAT_PERIOD_S", "4.0"),
        ("CNCPICK_PARAM_KIT_EXAMPLE__TICK_PERIOD_S", "0.25"),
    ]
    .into();
    let a = args(&[
        "x",
        "--ros-args",
        "--params-file",
        f.to_str().unwrap(),
        "-p",
        "tick_period_s:=0.125",
        "--",
    ]);
    let p: ExampleParams = load(FQN, &a, |k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!((p.heartbeat_period_s, p.tick_period_s), (4.0, 0.125));
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let e = load::<ExampleParams>(FQN, &args(&["x"]), |k| {
        (k == "CNCPICK_PARAM_KIT_EXAMPLE__HEARTBEAT_PERIOD_S").then(|| "-1".to_string())
    })
    .unwrap_err();
    assert_eq!(
        e.origin,
        "environment variable CNCPICK_PARAM_KIT_EXAMPLE__HEARTBEAT_PERIOD_S"
    );
}

#[test]
fn ros2_launch_arguments_rename_the_node_and_pass_files() {
    let a = args(&[
        "exe",
        "--own-flag",
        "--ros-args",
        "-r",
        "__node:=picker_1",
        "-r",
        "__ns:=/cell",
        "--params-file",
        "/tmp/p.yaml",
        "-p",
        "a:=1",
        "--log-level",
        "debug",
        "--",
    ]);
    assert_eq!(a.node_name.as_deref(), Some("picker_1"));
    assert_eq!(a.namespace.as_deref(), Some("/cell"));
    assert_eq!(a.params_files, vec![PathBuf::from("/tmp/p.yaml")]);
    assert_eq!(a.overrides, vec![("a".to_string(), "1".to_string())]);
    assert_eq!(a.log_level.as_deref(), Some("debug"));
}

#[test]
fn a_refused_update_keeps_the_old_value_and_notifies_no_one() {
    let params = Params::new(ExampleParams::default());
    let mut rx = params.subscribe();
    rx.mark_unchanged();
    let e = params
        .update("heartbeat_period_s", json!(0.0), "set_parameters")
        .unwrap_err();
    assert!(e.problem.contains("outside its range"), "{e}");
    assert_eq!(params.get().heartbeat_period_s, 1.0);
    assert!(!rx.has_changed().unwrap());
    let e = params
        .update("heartbeat_period_s", json!("1.0"), "set_parameters")
        .unwrap_err();
    assert_eq!(e.problem, "\"1.0\" is not a number");
    // A cross-parameter rule refuses an update that is fine on its own:
    // ticks of 5 s are more than 100 heartbeats of 0.01 s.
    params
        .update("tick_period_s", json!(5.0), "set_parameters")
        .unwrap();
    let e = params
        .update("heartbeat_period_s", json!(0.01), "set_parameters")
        .unwrap_err();
    assert!(e.problem.contains("more than 100 heartbeats"), "{e}");
    assert_eq!(params.get().heartbeat_period_s, 1.0);
}

#[test]
fn an_accepted_update_is_seen_whole_by_subscribers() {
    let params = Params::new(ExampleParams::default());
    let mut rx = params.subscribe();
    rx.mark_unchanged();
    params
        .update("tick_period_s", json!(0.5), "set_parameters")
        .unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().tick_period_s, 0.5);
    assert_eq!(params.get().tick_period_s, 0.5);
}

#[test]
fn every_spec_names_a_field_and_every_field_has_a_spec() {
    let fields: Vec<String> = serde_json::to_value(ExampleParams::default())
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut specs: Vec<String> = ExampleParams::specs()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let mut f = fields.clone();
    f.sort();
    specs.sort();
    assert_eq!(f, specs);
}
