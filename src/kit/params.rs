//! Typed, validated node parameters.
//!
//! A node's parameters are one serde struct plus a table of [`Spec`]s
//! (description, range, choices). Values come, later ones winning, from the
//! defaults, the `ros__parameters` YAML files `ros2 launch` passes
//! (`--params-file`), the environment (`CNCPICK_PARAM_<NODE>__<NAME>`), and
//! `-p name:=value` on the command line. Every value is checked by name,
//! type and range, and an error names where it came from and the key.
//! Once running, the same checks guard `ros2 param set`: an update is
//! applied whole or refused with the old value kept.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One parameter's description and limits.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub description: &'static str,
    /// Inclusive numeric range.
    pub range: Option<(f64, f64)>,
    /// Allowed values of a string parameter; empty means any.
    pub choices: &'static [&'static str],
    /// Refused by dynamic updates (set at start-up only).
    pub read_only: bool,
}

impl Spec {
    pub const fn new(name: &'static str, description: &'static str) -> Spec {
        Spec {
            name,
            description,
            range: None,
            choices: &[],
            read_only: false,
        }
    }
    pub const fn range(mut self, min: f64, max: f64) -> Spec {
        self.range = Some((min, max));
        self
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Spec {
        self.choices = choices;
        self
    }
    pub const fn read_only(mut self) -> Spec {
        self.read_only = true;
        self
    }
}

/// A node's parameter struct. Field names are the parameter names and carry
/// their unit (`_s`, `_m`, `_mps`, ...).
pub trait NodeParams:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static
{
    fn specs() -> &'static [Spec];
    /// Rules across parameters; the message names the parameters involved.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: parameter {key}: {problem}")]
pub struct ParamError {
    /// A file path, "command line", an environment variable, or "set_parameters".
    pub origin: String,
    pub key: String,
    pub problem: String,
}

/// For parallel-list parameters (one entry per class, per CNC, ...): all
/// the lists in `lists` have the length of the first, which is returned.
pub fn same_lengths(lists: &[(&str, usize)]) -> Result<usize, String> {
    let (first, n) = lists[0];
    for (name, len) in &lists[1..] {
        if *len != n {
            return Err(format!(
                "{name} has {len} entries but {first} has {n}: give one per entry of {first}"
            ));
        }
    }
    Ok(n)
}

fn err(origin: &str, key: &str, problem: impl Into<String>) -> ParamError {
    ParamError {
        origin: origin.into(),
        key: key.into(),
        problem: problem.into(),
    }
}

fn spec_of<P: NodeParams>(key: &str) -> Option<&'static Spec> {
    P::specs().iter().find(|s| s.name == key)
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Returns `current` with `key` set to `value`, or why not. Checks the
/// name, the type (through serde), the range or choices, and the
/// cross-parameter rules; `current` is never modified.
pub fn set_one<P: NodeParams>(
    current: &P,
    key: &str,
    value: Value,
    origin: &str,
) -> Result<P, ParamError> {
    let next = apply_one(current, key, value, origin)?;
    next.validate()
        .map_err(|problem| err(origin, key, problem))?;
    Ok(next)
}

/// [`set_one`] without the cross-parameter rules, which [`load`] checks
/// once every source is applied (a file may change `lanes` and `lane_bias`
/// together).
fn apply_one<P: NodeParams>(
    current: &P,
    key: &str,
    value: Value,
    origin: &str,
) -> Result<P, ParamError> {
    let spec = spec_of::<P>(key).ok_or_else(|| {
        let known: Vec<&str> = P::specs().iter().map(|s| s.name).collect();
        err(
            origin,
            key,
            format!("unknown parameter (this node has: {})", known.join(", ")),
        )
    })?;
    let mut map = match serde_json::to_value(current) {
        Ok(Value::Object(m)) => m,
        _ => return Err(err(origin, key, "parameter struct is not a map")),
    };
    let expected = map.get(key).map(type_name).unwrap_or("a value");
    // An integer is a fine value for a floating-point parameter.
    let value = match (&map.get(key), value) {
        (Some(Value::Number(old)), Value::Number(n)) if old.is_f64() => {
            n.as_f64().map(Value::from).unwrap_or(Value::Number(n))
        }
        (_, v) => v,
    };
    let shown = describe(&value);
    map.insert(key.to_string(), value.clone());
    let next: P = serde_json::from_value(Value::Object(map))
        .map_err(|_| err(origin, key, format!("{shown} is not {expected}")))?;
    if let Some((lo, hi)) = spec.range {
        // A list's range applies to each of its entries.
        let numbers: Vec<(Option<usize>, f64)> = match &value {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_f64().map(|x| (Some(i), x)))
                .collect(),
            v => v.as_f64().map(|x| (None, x)).into_iter().collect(),
        };
        for (i, x) in numbers {
            if !(lo..=hi).contains(&x) {
                let what = match i {
                    Some(i) => format!("entry {i} ({x})"),
                    None => shown.clone(),
                };
                return Err(err(
                    origin,
                    key,
                    format!("{what} is outside its range [{lo}, {hi}]"),
                ));
            }
        }
    }
    if !spec.choices.is_empty() {
        if let Some(s) = value.as_str() {
            if !spec.choices.contains(&s) {
                return Err(err(
                    origin,
                    key,
                    format!("{shown} is not one of {}", spec.choices.join(", ")),
                ));
            }
        }
    }
    Ok(next)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
        Value::Null => "null",
    }
}

/// The ROS arguments a node was started with (`--ros-args ... [--]`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RosArgs {
    pub node_name: Option<String>,
    pub namespace: Option<String>,
    pub params_files: Vec<PathBuf>,
    /// `-p name:=value`, the value in YAML syntax.
    pub overrides: Vec<(String, String)>,
    pub log_level: Option<String>,
}

impl RosArgs {
    pub fn parse(args: &[String]) -> Result<RosArgs, String> {
        let mut out = RosArgs::default();
        let mut in_ros = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--ros-args" => in_ros = true,
                "--" if in_ros => in_ros = false,
                _ if !in_ros => {}
                "--params-file" => {
                    let f = it.next().ok_or("--params-file needs a file")?;
                    out.params_files.push(PathBuf::from(f));
                }
                "-p" | "--param" => {
                    let kv = it.next().ok_or("-p needs name:=value")?;
                    let (k, v) = kv
                        .split_once(":=")
                        .ok_or_else(|| format!("-p {kv}: expected name:=value"))?;
                    out.overrides.push((k.to_string(), v.to_string()));
                }
                "-r" | "--remap" => {
                    let kv = it.next().ok_or("-r needs from:=to")?;
                    if let Some(n) = kv.strip_prefix("__node:=") {
                        out.node_name = Some(n.to_string());
                    } else if let Some(ns) = kv.strip_prefix("__ns:=") {
                        out.namespace = Some(ns.to_string());
                    }
                }
                "--log-level" => {
                    out.log_level = Some(it.next().ok_or("--log-level needs a level")?.clone());
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Parses a scalar written in YAML syntax (`-p` values, environment values).
fn yaml_scalar(text: &str) -> Value {
    match yaml_rust2::YamlLoader::load_from_str(text) {
        Ok(docs) if docs.len() == 1 => yaml_to_json(&docs[0]),
        _ => Value::String(text.to_string()),
    }
}

pub fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    other => yaml_to_json(other).to_string(),
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

/// Nested maps under ros__parameters name parameters with dots (`a.b`).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The parameters a `ros__parameters` file gives node `fqn` (e.g.
/// `/cell/kit_example`), in file order: `/**` first, then `/**/name`, then
/// the node's own sections, so the most specific wins.
pub fn file_entries(path: &Path, fqn: &str) -> Result<Vec<(String, Value)>, ParamError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(&origin, "-", format!("cannot read: {e}")))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| err(&origin, "-", format!("not valid YAML: {e}")))?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    let Value::Object(top) = yaml_to_json(doc) else {
        return Err(err(
            &origin,
            "-",
            "the top level must map node names to ros__parameters",
        ));
    };
    let name = fqn.rsplit('/').next().unwrap_or(fqn);
    let rank = |k: &str| -> Option<u8> {
        match k {
            "/**" => Some(0),
            _ if k == format!("/**/{name}") => Some(1),
            _ if k == name || k == fqn || k == fqn.trim_start_matches('/') => Some(2),
            _ => None,
        }
    };
    let mut sections: Vec<(u8, &String, &Value)> = top
        .iter()
        .filter_map(|(k, v)| rank(k).map(|r| (r, k, v)))
        .collect();
    sections.sort_by_key(|(r, _, _)| *r);
    let mut out = Vec::new();
    for (_, k, v) in sections {
        let params = v
            .get("ros__parameters")
            .ok_or_else(|| err(&origin, k, "section has no ros__parameters"))?;
        flatten("", params, &mut out);
    }
    Ok(out)
}

/// Environment overrides: `CNCPICK_PARAM_<NODE>__<NAME>` (upper case), e.g.
/// `CNCPICK_PARAM_KIT_EXAMPLE__HEARTBEAT_PERIOD_S=0.5`.
pub fn env_entries<P: NodeParams>(
    node_name: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String, Value)> {
    P::specs()
        .iter()
        .filter_map(|s| {
            let name = format!(
                "CNCPICK_PARAM_{}__{}",
                node_name.to_uppercase(),
                s.name.to_uppercase().replace('.', "_")
            );
            var(&name).map(|v| (name, s.name.to_string(), yaml_scalar(&v)))
        })
        .collect()
}

/// Loads node `fqn`'s parameters from defaults, files, environment and
/// command line, in that order.
pub fn load<P: NodeParams>(
    fqn: &str,
    args: &RosArgs,
    var: impl Fn(&str) -> Option<String>,
) -> Result<P, ParamError> {
    let mut p = P::default();
    let mut sources: Vec<(String, String)> = Vec::new();
    for file in &args.params_files {
        let origin = file.display().to_string();
        for (k, v) in file_entries(file, fqn)? {
            p = apply_one(&p, &k, v, &origin)?;
            sources.push((origin.clone(), k));
        }
    }
    let name = fqn.rsplit('/').next().unwrap_or(fqn);
    for (var_name, k, v) in env_entries::<P>(name, &var) {
        let origin = format!("environment variable {var_name}");
        p = apply_one(&p, &k, v, &origin)?;
        sources.push((origin, k));
    }
    for (k, v) in &args.overrides {
        p = apply_one(&p, k, yaml_scalar(v), "command line (-p)")?;
        sources.push(("command line (-p)".into(), k.clone()));
    }
    p.validate().map_err(|problem| {
        // Blame the last source that set a parameter the rule names.
        let (origin, key) = sources
            .iter()
            .rev()
            .find(|(_, k)| problem.contains(k.as_str()))
            .cloned()
            .unwrap_or_else(|| {
                let mut origins: Vec<&str> = sources.iter().map(|(o, _)| o.as_str()).collect();
                origins.dedup();
                let origin = if origins.is_empty() {
                    "the defaults".to_string()
                } else {
                    origins.join(" + ")
                };
                (origin, "(a rule across parameters)".into())
            });
        err(&origin, &key, problem)
    })?;
    Ok(p)
}

fn to_ros(v: &Value) -> r2r::ParameterValue {
    use r2r::ParameterValue as P;
    match v {
        Value::Bool(b) => P::Bool(*b),
        Value::Number(n) if n.is_f64() => P::Double(n.as_f64().unwrap_or_default()),
        Value::Number(n) => n.as_i64().map(P::Integer).unwrap_or(P::NotSet),
        Value::String(s) => P::String(s.clone()),
        Value::Array(a) if a.iter().all(Value::is_string) => P::StringArray(
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
        ),
        Value::Array(a) if a.iter().all(|x| x.is_i64()) => {
            P::IntegerArray(a.iter().filter_map(Value::as_i64).collect())
        }
        Value::Array(a) if a.iter().all(Value::is_number) => {
            P::DoubleArray(a.iter().filter_map(Value::as_f64).collect())
        }
        Value::Array(a) if a.iter().all(Value::is_boolean) => {
            P::BoolArray(a.iter().filter_map(Value::as_bool).collect())
        }
        _ => P::NotSet,
    }
}

fn from_ros(v: &r2r::ParameterValue) -> Value {
    use r2r::ParameterValue as P;
    match v {
        P::NotSet => Value::Null,
        P::Bool(b) => Value::Bool(*b),
        P::Integer(i) => Value::from(*i),
        P::Double(d) => Value::from(*d),
        P::String(s) => Value::String(s.clone()),
        P::BoolArray(a) => Value::from(a.clone()),
        P::ByteArray(a) => Value::from(a.clone()),
        P::IntegerArray(a) => Value::from(a.clone()),
        P::DoubleArray(a) => Value::from(a.clone()),
        P::StringArray(a) => Value::from(a.clone()),
    }
}

/// The live parameters of a running node, shared by its tasks. Updates
/// arrive through `ros2 param set` and are applied whole or not at all.
#[derive(Clone)]
pub struct Params<P: NodeParams> {
    current: Arc<Mutex<P>>,
    changed: tokio::sync::watch::Sender<P>,
}

impl<P: NodeParams> Params<P> {
    pub fn new(initial: P) -> Self {
        let (changed, _) = tokio::sync::watch::channel(initial.clone());
        Params {
            current: Arc::new(Mutex::new(initial)),
            changed,
        }
    }

    /// A consistent snapshot of every parameter.
    pub fn get(&self) -> P {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notified with the new snapshot after each accepted update.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<P> {
        self.changed.subscribe()
    }

    /// Applies one update, or refuses it and keeps the old value.
    pub fn update(&self, key: &str, value: Value, origin: &str) -> Result<(), ParamError> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if spec_of::<P>(key).is_some_and(|s| s.read_only) {
            return Err(err(origin, key, "is read-only while the node runs"));
        }
        let next = set_one(&*cur, key, value, origin)?;
        *cur = next.clone();
        drop(cur);
        self.changed.send_replace(next);
        Ok(())
    }

    /// Declares the parameters on `node`, so `ros2 param list/get/set` work,
    /// and serves updates through [`Params::update`]. The returned future
    /// runs the parameter services; spawn it.
    pub fn declare(
        &self,
        node: &mut r2r::Node,
    ) -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
        let bridge: Arc<Mutex<dyn r2r::RosParams + Send>> =
            Arc::new(Mutex::new(Bridge(self.clone())));
        let (serve, events) = node.make_derived_parameter_handler(bridge)?;
        Ok(async move {
            use futures::StreamExt;
            let drain = events.for_each(|_| async {});
            futures::join!(serve, drain);
        })
    }
}

/// r2r's view of a [`Params`].
struct Bridge<P: NodeParams>(Params<P>);

impl<P: NodeParams> r2r::RosParams for Bridge<P> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        _param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        // Command-line values were already applied and checked by load();
        // what rcl parsed from the same arguments is replaced by ours.
        let current = serde_json::to_value(self.0.get()).unwrap_or(Value::Null);
        for spec in P::specs() {
            let name = if prefix.is_empty() {
                spec.name.to_string()
            } else {
                format!("{prefix}.{}", spec.name)
            };
            params.insert(
                name,
                r2r::Parameter {
                    value: to_ros(&current[spec.name]),
                    description: spec.description,
                },
            );
        }
        Ok(())
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        let current = serde_json::to_value(self.0.get()).unwrap_or(Value::Null);
        match current.get(name) {
            Some(v) => Ok(to_ros(v)),
            None => Err(r2r::Error::InvalidParameterName { name: name.into() }),
        }
    }

    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        self.0
            .update(name, from_ros(value), "set_parameters")
            .map_err(|e| r2r::Error::ParameterValueConv {
                name: name.into(),
                msg: e.problem,
            })
    }

    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        set_one(&self.0.get(), name, from_ros(value), "set_parameters")
            .map(|_| ())
            .map_err(|e| r2r::Error::ParameterValueConv {
                name: name.into(),
                msg: e.problem,
            })
    }
}

/// An `rcl_interfaces/ParameterValue` as a JSON value (NotSet: null).
pub fn value_of_msg(v: &r2r::rcl_interfaces::msg::ParameterValue) -> Value {
    match v.type_ {
        1 => Value::Bool(v.bool_value),
        2 => Value::from(v.integer_value),
        3 => Value::from(v.double_value),
        4 => Value::String(v.string_value.clone()),
        5 => Value::from(v.byte_array_value.clone()),
        6 => Value::from(v.bool_array_value.clone()),
        7 => Value::from(v.integer_array_value.clone()),
        8 => Value::from(v.double_array_value.clone()),
        9 => Value::from(v.string_array_value.clone()),
        _ => Value::Null,
    }
}

/// Another node's parameters, read through its `get_parameters` service
/// (`client`, bounded by `timeout`) and checked as that node checks them:
/// every parameter `P` has, or an error naming the node and the key.
pub async fn read_remote<P: NodeParams>(
    client: &r2r::Client<r2r::rcl_interfaces::srv::GetParameters::Service>,
    node: &str,
    timeout: std::time::Duration,
) -> Result<P, ParamError> {
    let names: Vec<&str> = P::specs().iter().map(|s| s.name).collect();
    read_remote_only(client, node, &names, timeout).await
}

/// As [`read_remote`], asking only for `names` (the rest keep their
/// defaults): what a reader needs, so that a parameter it does not use,
/// added to or missing from that node, changes nothing for it.
pub async fn read_remote_only<P: NodeParams>(
    client: &r2r::Client<r2r::rcl_interfaces::srv::GetParameters::Service>,
    node: &str,
    names: &[&str],
    timeout: std::time::Duration,
) -> Result<P, ParamError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let request = r2r::rcl_interfaces::srv::GetParameters::Request {
        names: names.clone(),
    };
    let service = format!("{node}/get_parameters");
    let answer = crate::kit::call::call(client, &service, &request, timeout)
        .await
        .map_err(|e| err(node, "-", e.to_string()))?;
    if answer.values.len() != names.len() {
        return Err(err(
            node,
            "-",
            format!(
                "asked for {} parameters, got {}",
                names.len(),
                answer.values.len()
            ),
        ));
    }
    let mut p = P::default();
    for (k, v) in names.iter().zip(&answer.values) {
        let v = value_of_msg(v);
        if v.is_null() {
            return Err(err(node, k, "not set on that node"));
        }
        p = apply_one(&p, k, v, node)?;
    }
    p.validate().map_err(|problem| err(node, "-", problem))?;
    Ok(p)
}
