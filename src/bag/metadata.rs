//! metadata.yaml: what `ros2 bag info` and every rosbag2 reader open
//! first. Written as version 8 (Jazzy reads 8 and earlier), with the MCAP
//! storage id, every topic's type, serialization format, offered QoS and
//! type hash, message counts, duration and the files.

use crate::bag::qos::{self, Qos};
use serde_json::{json, Map, Value};
use std::path::Path;

pub const VERSION: i64 = 8;

/// One topic of a bag.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
    /// `pkg/msg/Type`.
    pub type_name: String,
    pub serialization_format: String,
    pub offered_qos: Vec<Qos>,
    /// `RIHS01_…`, or "" when unknown.
    pub type_hash: String,
    pub message_count: u64,
}

/// One file of a bag.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Relative to the bag's folder.
    pub path: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub message_count: u64,
}

/// A bag's metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BagInfo {
    pub version: i64,
    pub storage_identifier: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub message_count: u64,
    pub topics: Vec<Topic>,
    /// "" or "zstd" (file compression; MCAP chunk compression is the
    /// storage's own and is not named here).
    pub compression_format: String,
    pub compression_mode: String,
    pub files: Vec<File>,
    pub custom_data: Vec<(String, String)>,
    pub ros_distro: String,
}

fn start_json(ns: u64) -> Value {
    json!({ "nanoseconds_since_epoch": ns })
}

fn dur_json(ns: u64) -> Value {
    json!({ "nanoseconds": ns })
}

impl BagInfo {
    pub fn to_json(&self) -> Value {
        let topics: Vec<Value> = self
            .topics
            .iter()
            .map(|t| {
                json!({
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.type_name,
                        "serialization_format": t.serialization_format,
                        "offered_qos_profiles": qos::dump(&t.offered_qos),
                        "type_description_hash": t.type_hash,
                    },
                    "message_count": t.message_count,
                })
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "starting_time": start_json(f.start_ns),
                    "duration": dur_json(f.duration_ns),
                    "message_count": f.message_count,
                })
            })
            .collect();
        let custom: Map<String, Value> = self
            .custom_data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "rosbag2_bagfile_information": {
                "version": self.version,
                "storage_identifier": self.storage_identifier,
                "duration": dur_json(self.duration_ns),
                "starting_time": start_json(self.start_ns),
                "message_count": self.message_count,
                "topics_with_message_count": topics,
                "compression_format": self.compression_format,
                "compression_mode": self.compression_mode,
                "relative_file_paths": self.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
                "files": files,
                "custom_data": if custom.is_empty() { Value::Null } else { Value::Object(custom) },
                "ros_distro": self.ros_distro,
            }
        })
    }

    /// The YAML text of metadata.yaml.
    pub fn to_yaml(&self) -> String {
        to_yaml(&self.to_json())
    }

    /// Parses metadata.yaml's text; errors name the field.
    pub fn parse(text: &str) -> Result<BagInfo, String> {
        let docs =
            yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let doc = docs.first().ok_or("empty")?;
        let root = crate::kit::params::yaml_to_json(doc);
        let info = root
            .get("rosbag2_bagfile_information")
            .ok_or("no rosbag2_bagfile_information")?;
        let u = |v: &Value, path: &[&str]| -> Result<u64, String> {
            let mut x = v;
            for p in path {
                x = x.get(*p).ok_or_else(|| format!("no {}", path.join(".")))?;
            }
            x.as_u64()
                .ok_or_else(|| format!("{} is not a whole number: {x}", path.join(".")))
        };
        let s = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let mut topics = Vec::new();
        for (i, t) in info
            .get("topics_with_message_count")
            .and_then(Value::as_array)
            .ok_or("no topics_with_message_count list")?
            .iter()
            .enumerate()
        {
            let m = t
                .get("topic_metadata")
                .ok_or_else(|| format!("topics_with_message_count[{i}]: no topic_metadata"))?;
            let name = s(m, "name");
            if name.is_empty() {
                return Err(format!(
                    "topics_with_message_count[{i}].topic_metadata: no name"
                ));
            }
            topics.push(Topic {
                type_name: s(m, "type"),
                serialization_format: s(m, "serialization_format"),
                offered_qos: qos::parse(m.get("offered_qos_profiles").unwrap_or(&Value::Null))
                    .map_err(|e| format!("topic {name}: {e}"))?,
                type_hash: s(m, "type_description_hash"),
                message_count: u(t, &["message_count"])
                    .map_err(|e| format!("topics_with_message_count[{i}]: {e}"))?,
                name,
            });
        }
        let mut files = Vec::new();
        if let Some(list) = info.get("files").and_then(Value::as_array) {
            for (i, f) in list.iter().enumerate() {
                let e = |e: String| format!("files[{i}]: {e}");
                files.push(File {
                    path: s(f, "path"),
                    start_ns: u(f, &["starting_time", "nanoseconds_since_epoch"]).map_err(e)?,
                    duration_ns: u(f, &["duration", "nanoseconds"]).map_err(e)?,
                    message_count: u(f, &["message_count"]).map_err(e)?,
                });
            }
        } else if let Some(list) = info.get("relative_file_paths").and_then(Value::as_array) {
            files = list
                .iter()
                .filter_map(Value::as_str)
                .map(|p| File {
                    path: p.to_string(),
                    start_ns: 0,
                    duration_ns: 0,
                    message_count: 0,
                })
                .collect();
        }
        Ok(BagInfo {
            version: info
                .get("version")
                .and_then(Value::as_i64)
                .ok_or("no version")?,
            storage_identifier: s(info, "storage_identifier"),
            start_ns: u(info, &["starting_time", "nanoseconds_since_epoch"])?,
            duration_ns: u(info, &["duration", "nanoseconds"])?,
            message_count: u(info, &["message_count"])?,
            topics,
            compression_format: s(info, "compression_format"),
            compression_mode: s(info, "compression_mode"),
            files,
            custom_data: info
                .get("custom_data")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            ros_distro: s(info, "ros_distro"),
        })
    }

    /// Reads `<bag>/metadata.yaml`; errors name the file.
    pub fn read(bag_dir: &Path) -> Result<BagInfo, String> {
        let path = bag_dir.join("metadata.yaml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        BagInfo::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn json_to_yaml(v: &Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(json_to_yaml).collect()),
        Value::Object(m) => Yaml::Hash(
            m.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), json_to_yaml(v)))
                .collect(),
        ),
    }
}

/// Block-style YAML of a JSON value (key order kept), without the `---`.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    let mut e = yaml_rust2::YamlEmitter::new(&mut out);
    e.multiline_strings(true);
    let _ = e.dump(&json_to_yaml(v));
    out.strip_prefix("---\n").unwrap_or(&out).to_string() + "\n"
}

/// The type's RIHS01 hash from its installed .json description ("" when
/// not found).
pub fn type_hash(prefixes: &[std::path::PathBuf], type_name: &str) -> String {
    let Ok(full) = crate::bag::schema::normalize(type_name) else {
        return String::new();
    };
    let mut parts = full.split('/');
    let (pkg, name) = (parts.next().unwrap_or(""), parts.nth(1).unwrap_or(""));
    for p in prefixes {
        let path = p
            .join("share")
            .join(pkg)
            .join("msg")
            .join(format!("{name}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(h) = v
            .get("type_hashes")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|h| h.get("type_name").and_then(Value::as_str) == Some(&full))
            })
            .and_then(|h| h.get("hash_string"))
            .and_then(Value::as_str)
        {
            return h.to_string();
        }
    }
    String::new()
}
