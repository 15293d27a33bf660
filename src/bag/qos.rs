//! Offered QoS profiles as rosbag2 keeps them: per topic, a list of the
//! publishers' profiles, stored in metadata.yaml (version 8: one YAML string
//! of a list, policies as numbers) and in each MCAP channel's
//! `offered_qos_profiles` metadata.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One publisher's profile. Policies are rmw's numbers (0 is the system
/// default): history 1 keep_last, 2 keep_all; reliability 1 reliable,
/// 2 best_effort; durability 1 transient_local, 2 volatile; liveliness 1
/// automatic, 3 manual_by_topic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Qos {
    pub history: u8,
    pub depth: u64,
    pub reliability: u8,
    pub durability: u8,
    pub deadline_ns: u64,
    pub lifespan_ns: u64,
    pub liveliness: u8,
    pub liveliness_lease_duration_ns: u64,
    pub avoid_ros_namespace_conventions: bool,
}

/// rmw's "infinite" duration, as rosbag2 writes it.
const INFINITE_NS: u64 = 9_223_372_036_854_775_807;

impl Default for Qos {
    /// Reliable, volatile, keep last 10: the ROS default.
    fn default() -> Self {
        Qos {
            history: 1,
            depth: 10,
            reliability: 1,
            durability: 2,
            deadline_ns: INFINITE_NS,
            lifespan_ns: INFINITE_NS,
            liveliness: 1,
            liveliness_lease_duration_ns: INFINITE_NS,
            avoid_ros_namespace_conventions: false,
        }
    }
}

fn dur_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .min(INFINITE_NS)
}

fn dur_json(ns: u64) -> Value {
    json!({"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000})
}

fn dur_from(v: &Value) -> u64 {
    let sec = v.get("sec").and_then(Value::as_u64).unwrap_or(0);
    let nsec = v.get("nsec").and_then(Value::as_u64).unwrap_or(0);
    sec.saturating_mul(1_000_000_000)
        .saturating_add(nsec)
        .min(INFINITE_NS)
}

impl Qos {
    pub fn from_r2r(q: &r2r::QosProfile) -> Qos {
        use r2r::qos::{
            DurabilityPolicy as D, HistoryPolicy as H, LivelinessPolicy as L,
            ReliabilityPolicy as R,
        };
        Qos {
            history: match q.history {
                H::SystemDefault => 0,
                H::KeepLast => 1,
                H::KeepAll => 2,
                _ => 3,
            },
            depth: q.depth as u64,
            reliability: match q.reliability {
                R::SystemDefault => 0,
                R::Reliable => 1,
                R::BestEffort => 2,
                R::BestAvailable => 4,
                _ => 3,
            },
            durability: match q.durability {
                D::SystemDefault => 0,
                D::TransientLocal => 1,
                D::Volatile => 2,
                D::BestAvailable => 4,
                _ => 3,
            },
            deadline_ns: dur_ns(q.deadline),
            lifespan_ns: dur_ns(q.lifespan),
            liveliness: match q.liveliness {
                L::SystemDefault => 0,
                L::Automatic => 1,
                L::ManualByNode => 2,
                L::ManualByTopic => 3,
                L::BestAvailable => 5,
                _ => 4,
            },
            liveliness_lease_duration_ns: dur_ns(q.liveliness_lease_duration),
            avoid_ros_namespace_conventions: q.avoid_ros_namespace_conventions,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "history": self.history,
            "depth": self.depth,
            "reliability": self.reliability,
            "durability": self.durability,
            "deadline": dur_json(self.deadline_ns),
            "lifespan": dur_json(self.lifespan_ns),
            "liveliness": self.liveliness,
            "liveliness_lease_duration": dur_json(self.liveliness_lease_duration_ns),
            "avoid_ros_namespace_conventions": self.avoid_ros_namespace_conventions,
        })
    }

    /// From version 8's numbers or version 9's names.
    pub fn from_json(v: &Value) -> Qos {
        let d = Qos::default();
        let policy = |key: &str, names: &[(&str, u8)], default: u8| -> u8 {
            match v.get(key) {
                Some(Value::Number(n)) => n.as_u64().map(|n| n.min(255) as u8).unwrap_or(default),
                Some(Value::String(s)) => names
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(s))
                    .map(|x| x.1)
                    .unwrap_or(default),
                _ => default,
            }
        };
        Qos {
            history: policy(
                "history",
                &[("system_default", 0), ("keep_last", 1), ("keep_all", 2)],
                d.history,
            ),
            depth: v.get("depth").and_then(Value::as_u64).unwrap_or(d.depth),
            reliability: policy(
                "reliability",
                &[
                    ("system_default", 0),
                    ("reliable", 1),
                    ("best_effort", 2),
                    ("best_available", 4),
                ],
                d.reliability,
            ),
            durability: policy(
                "durability",
                &[
                    ("system_default", 0),
                    ("transient_local", 1),
                    ("volatile", 2),
                    ("best_available", 4),
                ],
                d.durability,
            ),
            deadline_ns: v.get("deadline").map(dur_from).unwrap_or(d.deadline_ns),
            lifespan_ns: v.get("lifespan").map(dur_from).unwrap_or(d.lifespan_ns),
            liveliness: policy(
                "liveliness",
                &[
                    ("system_default", 0),
                    ("automatic", 1),
                    ("manual_by_topic", 3),
                ],
                d.liveliness,
            ),
            liveliness_lease_duration_ns: v
                .get("liveliness_lease_duration")
                .map(dur_from)
                .unwrap_or(d.liveliness_lease_duration_ns),
            avoid_ros_namespace_conventions: v
                .get("avoid_ros_namespace_conventions")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// Profiles as version 8 stores them: one YAML text of a list ("" for none).
pub fn dump(profiles: &[Qos]) -> String {
    if profiles.is_empty() {
        return String::new();
    }
    let list = Value::Array(profiles.iter().map(Qos::to_json).collect());
    crate::bag::metadata::to_yaml(&list)
}

/// Profiles from a version 8 string or a version 9 list.
pub fn parse(v: &Value) -> Result<Vec<Qos>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) => {
            let docs = yaml_rust2::YamlLoader::load_from_str(s)
                .map_err(|e| format!("offered_qos_profiles is not YAML: {e}"))?;
            match docs.first() {
                Some(y) => parse(&crate::kit::params::yaml_to_json(y)),
                None => Ok(Vec::new()),
            }
        }
        Value::Array(a) => Ok(a.iter().map(Qos::from_json).collect()),
        other => Err(format!(
            "offered_qos_profiles is neither a list nor a string: {other}"
        )),
    }
}

/// The profile to subscribe or publish with, given what the publishers
/// offered (rosbag2's rule): reliable and transient_local only if every
/// publisher is; depth the largest offered, at least `min_depth`.
pub fn adapted(offered: &[Qos], min_depth: usize) -> r2r::QosProfile {
    let all = |f: &dyn Fn(&Qos) -> bool| !offered.is_empty() && offered.iter().all(f);
    let mut q = r2r::QosProfile::default().keep_last(
        offered
            .iter()
            .map(|q| q.depth as usize)
            .max()
            .unwrap_or(0)
            .clamp(min_depth, min_depth.max(10_000)),
    );
    q = if offered.is_empty() || all(&|q| q.reliability == 1) {
        q.reliable()
    } else {
        q.best_effort()
    };
    if all(&|q| q.durability == 1) {
        q = q.transient_local();
    } else {
        q = q.volatile();
    }
    q
}
