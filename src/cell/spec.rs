//! The cell's node graph, read from its params files: which nodes run, with
//! which executable, in which bring-up order. `launch/cell.launch.py` reads
//! the same files the same way (test/python/test_launch.py checks that they
//! agree), so `ros2 launch` and `./cncpick run` start the same graph.
//!
//! - The CNCs are the scheduler's `cnc_ids`: one `cnc_<id>` node each.
//! - The simulated cell (`sim` node) runs when a file has a `sim` section.
//! - Bring-up order (architecture.md): state_manager (after sim), then
//!   camera, detector, tracker, then the CNCs, then the scheduler.

use crate::kit::node::KitParams;
use crate::kit::params::{load, ParamError, RosArgs};
use crate::manager::params::ManagerParams;
use crate::sched::params::SchedParams;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const NAMESPACE: &str = "/cell";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// Node name in /cell.
    pub name: String,
    /// The executable (one per kind of node; `cnc` serves every cnc_<id>).
    pub executable: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellSpec {
    pub params_files: Vec<PathBuf>,
    pub sim: bool,
    pub cnc_ids: Vec<String>,
    /// In bring-up order.
    pub nodes: Vec<NodeSpec>,
}

/// Whether any of `files` has a section for the `sim` node itself (not a
/// `/**` section every node reads); launch/cell.launch.py asks the same.
fn has_sim_section(files: &[PathBuf]) -> Result<bool, ParamError> {
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| ParamError {
            origin: f.display().to_string(),
            key: "-".into(),
            problem: format!("cannot read: {e}"),
        })?;
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| ParamError {
            origin: f.display().to_string(),
            key: "-".into(),
            problem: format!("not valid YAML: {e}"),
        })?;
        let Some(top) = docs.first().and_then(|d| d.as_hash()) else {
            continue;
        };
        if top
            .keys()
            .filter_map(|k| k.as_str())
            .any(|k| matches!(k, "sim" | "cell/sim" | "/cell/sim" | "/**/sim"))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl CellSpec {
    /// The graph `files` describe, with `overrides` (`node.key:=value`,
    /// applied as a `-p` to that node) and the environment.
    pub fn from_files(files: &[PathBuf], args: &CellArgs) -> Result<CellSpec, ParamError> {
        let sched: SchedParams = args.load("scheduler")?;
        let sim = has_sim_section(files)?;
        let mut names: Vec<(&str, String)> = Vec::new();
        if sim {
            names.push(("sim", "sim".into()));
        }
        names.push(("state_manager", "state_manager".into()));
        for n in ["camera", "detector", "tracker"] {
            names.push((n, n.into()));
        }
        for id in &sched.cnc_ids {
            names.push(("cnc", format!("cnc_{id}")));
        }
        names.push(("scheduler", "scheduler".into()));
        Ok(CellSpec {
            params_files: files.to_vec(),
            sim,
            cnc_ids: sched.cnc_ids,
            nodes: names
                .into_iter()
                .map(|(exe, name)| NodeSpec {
                    name,
                    executable: exe.into(),
                })
                .collect(),
        })
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

/// How every node of the cell gets its parameters: the params files in
/// order, then `CNCPICK_PARAM_<NODE>__<NAME>` variables, then overrides.
#[derive(Debug, Clone, Default)]
pub struct CellArgs {
    pub params_files: Vec<PathBuf>,
    /// (node, key, value) from `node.key:=value`.
    pub overrides: Vec<(String, String, String)>,
}

impl CellArgs {
    pub fn new(params_files: Vec<PathBuf>, overrides: &[String]) -> anyhow::Result<CellArgs> {
        let overrides = overrides
            .iter()
            .map(|o| {
                let (lhs, v) = o
                    .split_once(":=")
                    .ok_or_else(|| anyhow::anyhow!("-p {o:?}: write node.name:=value"))?;
                let (node, key) = lhs.split_once('.').ok_or_else(|| {
                    anyhow::anyhow!("-p {o:?}: name the node, e.g. scheduler.policy:=greedy")
                })?;
                Ok((node.to_string(), key.to_string(), v.to_string()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for f in &params_files {
            anyhow::ensure!(f.is_file(), "{}: no such params file", f.display());
        }
        Ok(CellArgs {
            params_files,
            overrides,
        })
    }

    /// The ROS arguments node `name` gets.
    pub fn ros_args(&self, name: &str) -> RosArgs {
        RosArgs {
            params_files: self.params_files.clone(),
            overrides: self
                .overrides
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect(),
            ..RosArgs::default()
        }
    }

    /// Node `name`'s parameters, validated.
    pub fn load<P: crate::kit::params::NodeParams>(&self, name: &str) -> Result<P, ParamError> {
        load(&format!("{NAMESPACE}/{name}"), &self.ros_args(name), |k| {
            std::env::var(k).ok()
        })
    }

    /// The `-p` arguments for node `name`'s process.
    pub fn command_line(&self, name: &str) -> Vec<String> {
        let mut out = vec![
            "--ros-args".to_string(),
            "-r".into(),
            format!("__node:={name}"),
            "-r".into(),
            format!("__ns:={NAMESPACE}"),
        ];
        for f in &self.params_files {
            out.push("--params-file".into());
            out.push(f.display().to_string());
        }
        for (n, k, v) in &self.overrides {
            if n == name {
                out.push("-p".into());
                out.push(format!("{k}:={v}"));
            }
        }
        out
    }
}

/// Loads one node's parameters by executable, for checking.
fn check_one(args: &CellArgs, spec: &NodeSpec) -> Result<(), ParamError> {
    fn l<P: KitParams>(args: &CellArgs, name: &str) -> Result<(), ParamError> {
        args.load::<P>(name).map(|_| ())
    }
    let n = spec.name.as_str();
    match spec.executable.as_str() {
        "sim" => l::<crate::sim::params::SimParams>(args, n),
        "state_manager" => l::<crate::state::params::StateParams>(args, n),
        "camera" => l::<crate::camera::params::CameraParams>(args, n),
        "detector" => l::<crate::detector::params::DetectorParams>(args, n),
        "tracker" => l::<crate::tracker::params::TrackerParams>(args, n),
        "cnc" => l::<crate::motion::params::MotionParams>(args, n),
        "scheduler" => l::<SchedParams>(args, n),
        other => Err(ParamError {
            origin: "the cell graph".into(),
            key: n.into(),
            problem: format!("no executable {other:?}"),
        }),
    }
}

/// Checks every node's parameters (and the manager's) and the rules across
/// nodes: each problem names its file or source and key.
pub fn check(args: &CellArgs) -> Result<CellSpec, Vec<ParamError>> {
    let spec = CellSpec::from_files(&args.params_files, args).map_err(|e| vec![e])?;
    let mut errors: Vec<ParamError> = spec
        .nodes
        .iter()
        .filter_map(|n| check_one(args, n).err())
        .collect();
    if let Err(e) = args.load::<ManagerParams>("manager") {
        errors.push(e);
    }
    if errors.is_empty() {
        errors.extend(cross_checks(args, &spec));
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

/// Rules across nodes: each CNC node's id matches its name, the manager
/// gives a homing CNC time to home, and in the simulated cell, each CNC's
/// port and geometry match the sim's.
fn cross_checks(args: &CellArgs, spec: &CellSpec) -> Vec<ParamError> {
    use crate::motion::params::MotionParams;
    let origin = args
        .params_files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let err = |key: String, problem: String| ParamError {
        origin: origin.clone(),
        key,
        problem,
    };
    let mut out = Vec::new();
    let sim: Option<crate::sim::params::SimParams> =
        spec.sim.then(|| args.load("sim").ok()).flatten();
    let manager: Option<crate::manager::params::ManagerParams> = args.load("manager").ok();
    for (i, id) in spec.cnc_ids.iter().enumerate() {
        let name = format!("cnc_{id}");
        let Ok(p) = args.load::<MotionParams>(&name) else {
            continue;
        };
        // A CNC that homes is configuring for up to homing_timeout_s: the
        // manager must not take that for a node stuck out of Active.
        if let Some(m) = manager
            .as_ref()
            .filter(|m| p.homing && m.recover_grace_s < p.homing_timeout_s)
        {
            out.push(err(
                "manager.recover_grace_s".into(),
                format!(
                    "is {} s, shorter than {name}.homing_timeout_s ({} s): the manager would \
                     reconfigure a CNC in the middle of homing; make it longer",
                    m.recover_grace_s, p.homing_timeout_s
                ),
            ));
        }
        if &p.cnc_id != id {
            out.push(err(
                format!("{name}.cnc_id"),
                format!("is {:?}, but the node is {name}", p.cnc_id),
            ));
        }
        let Some(sim) = &sim else { continue };
        let Some(j) = sim.cnc_ids.iter().position(|c| c == id) else {
            out.push(err(
                "sim.cnc_ids".into(),
                format!("has no CNC {id:?}, which scheduler.cnc_ids names (index {i})"),
            ));
            continue;
        };
        let want = crate::sim::graph::motion_params(sim, j);
        for (key, a, b) in [
            ("port", p.port.clone(), want.port.clone()),
            (
                "origin",
                format!("{:?}", (p.origin_x_m, p.origin_y_m, p.origin_z_m)),
                format!("{:?}", (want.origin_x_m, want.origin_y_m, want.origin_z_m)),
            ),
            (
                "reach",
                format!("{:?}", (p.reach_x_min_m, p.reach_x_max_m)),
                format!("{:?}", (want.reach_x_min_m, want.reach_x_max_m)),
            ),
            (
                "bins",
                format!("{:?}", (&p.bin_classes, &p.bin_x_m, &p.bin_y_m)),
                format!("{:?}", (&want.bin_classes, &want.bin_x_m, &want.bin_y_m)),
            ),
        ] {
            if a != b {
                out.push(err(
                    format!("{name}.{key}"),
                    format!("is {a}, but the simulated cell has {b}"),
                ));
            }
        }
    }
    out
}

/// The params file shipped for the simulated cell.
pub fn default_params_file(repo: &Path) -> PathBuf {
    repo.join("params").join("sim.yaml")
}
