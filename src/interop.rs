//! The interop probe: an r2r node that publishes every cncpick_msgs message
//! type from a fixture, serves a service and an action, and reports what it
//! receives as JSON lines on stdout. Tests drive it from rclpy, a ROS client
//! independent of ours, to check that both ends agree on every field.

use crate::kit::spin::SharedNode;
use crate::msgs::{action::PickObject, msg, srv};
use anyhow::{bail, Context as _};
use futures::StreamExt;
use r2r::QosProfile;
use serde_json::{json, Value};
use std::any::Any;
use std::io::Write;
use tokio::task::JoinHandle;

/// Latched QoS so subscribers that join later still get each sample.
pub fn latched_qos() -> QosProfile {
    QosProfile::default()
        .reliable()
        .transient_local()
        .keep_last(1)
}

/// Writes one JSON line to stdout, flushed, so a driving test sees it at once.
pub fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Parses `value` as `T`, strictly: r2r's serde fills missing fields with
/// defaults and ignores unknown ones, so the parsed message must serialize
/// back to exactly `value`. The error names `what` and the first differing field.
pub fn parse_exact<T>(what: &str, value: &Value) -> anyhow::Result<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let parsed: T = serde_json::from_value(value.clone()).with_context(|| what.to_string())?;
    let back = serde_json::to_value(&parsed)?;
    if let Some(diff) = first_difference(value, &back, String::new()) {
        bail!("{what}: {diff}");
    }
    Ok(parsed)
}

fn first_difference(given: &Value, parsed: &Value, path: String) -> Option<String> {
    match (given, parsed) {
        (Value::Object(g), Value::Object(p)) => {
            let at = |k: &str| {
                if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                }
            };
            if let Some(k) = p.keys().find(|k| !g.contains_key(*k)) {
                return Some(format!("field {} is missing", at(k)));
            }
            if let Some(k) = g.keys().find(|k| !p.contains_key(*k)) {
                return Some(format!("there is no field {}", at(k)));
            }
            g.iter()
                .find_map(|(k, gv)| first_difference(gv, &p[k], at(k)))
        }
        (Value::Array(g), Value::Array(p)) if g.len() == p.len() => g
            .iter()
            .zip(p)
            .enumerate()
            .find_map(|(i, (gv, pv))| first_difference(gv, pv, format!("{path}[{i}]"))),
        (Value::Number(g), Value::Number(p)) if g.as_f64() == p.as_f64() => None,
        (g, p) if g == p => None,
        (g, p) => Some(format!("field {path} is {g}, which reads back as {p}")),
    }
}

/// Publishes `value` as message type `ty` (a cncpick_msgs/msg name) on
/// `topic`, returning the publisher, which must stay alive to serve late joiners.
fn publish_typed(
    node: &mut r2r::Node,
    ty: &str,
    topic: &str,
    value: &Value,
) -> anyhow::Result<Box<dyn Any + Send>> {
    macro_rules! dispatch {
        ($($t:ident),* $(,)?) => {
            match ty {
                $(stringify!($t) => {
                    let m: msg::$t = parse_exact(&format!("fixture messages.{ty} (cncpick_msgs/msg/{ty})"), value)?;
                    let p = node.create_publisher::<msg::$t>(topic, latched_qos())?;
                    p.publish(&m)?;
                    Ok(Box::new(p))
                })*
                other => bail!("fixture names an unknown message type {other:?}"),
            }
        };
    }
    dispatch!(
        Alert,
        Assignment,
        BeltSpeed,
        CellMetrics,
        CncMetrics,
        CncStatus,
        Detection,
        DetectionArray,
        Heartbeat,
        LaneMetrics,
        NodeMetrics,
        ObjectEvent,
        ObjectRecord,
        ObjectState,
        PickOutcome,
        PickResult,
        Track,
        TrackArray,
        Truth,
        TruthEvent,
        TruthObject,
    )
}

/// Serves service type `ty` (a cncpick_msgs/srv name) on `name`, answering
/// every request with the fixture's response and reporting the request.
fn serve_typed(
    node: &mut r2r::Node,
    ty: &str,
    name: &str,
    spec: &Value,
) -> anyhow::Result<JoinHandle<()>> {
    macro_rules! dispatch {
        ($($t:ident),* $(,)?) => {
            match ty {
                $(stringify!($t) => {
                    let response: srv::$t::Response =
                        parse_exact(&format!("fixture services.{ty}.response"), &spec["response"])?;
                    let mut requests = node.create_service::<srv::$t::Service>(name, QosProfile::services_default())?;
                    Ok(tokio::spawn(async move {
                        while let Some(req) = requests.next().await {
                            emit(json!({"event": "request", "service": stringify!($t), "request": req.message}));
                            if let Err(e) = req.respond(response.clone()) {
                                emit(json!({"event": "error", "what": format!("responding: {e}")}));
                            }
                        }
                    }))
                })*
                other => bail!("fixture names an unknown service type {other:?}"),
            }
        };
    }
    dispatch!(
        BeginEpoch,
        GetObject,
        ListObjects,
        ObjectHistory,
        RegisterObject,
        TransitionObject
    )
}

/// Everything the probe runs; dropping it after `stop` releases the handles.
pub struct Probe {
    _publishers: Vec<Box<dyn Any + Send>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Probe {
    /// `prefix` is the topic prefix, e.g. `interop`.
    pub fn start(node: &SharedNode, fixture: &Value, prefix: &str) -> anyhow::Result<Probe> {
        let messages = fixture["messages"]
            .as_object()
            .context("fixture has no \"messages\" object")?;
        let mut n = node.lock();
        let mut publishers = Vec::new();
        for (ty, value) in messages {
            publishers.push(publish_typed(
                &mut n,
                ty,
                &format!("{prefix}/out/{ty}"),
                value,
            )?);
        }

        let mut tasks = Vec::new();

        let mut detections = n.subscribe::<msg::DetectionArray>(
            &format!("{prefix}/in/DetectionArray"),
            latched_qos(),
        )?;
        tasks.push(tokio::spawn(async move {
            while let Some(m) = detections.next().await {
                emit(json!({"event": "received", "type": "DetectionArray", "msg": m}));
            }
        }));

        let services = fixture["services"]
            .as_object()
            .context("fixture has no \"services\" object")?;
        for (ty, spec) in services {
            tasks.push(serve_typed(
                &mut n,
                ty,
                &format!("{prefix}/srv/{ty}"),
                spec,
            )?);
        }

        let action = &fixture["actions"]["PickObject"];
        let feedback: PickObject::Feedback =
            parse_exact("fixture actions.PickObject.feedback", &action["feedback"])?;
        let result: PickObject::Result =
            parse_exact("fixture actions.PickObject.result", &action["result"])?;
        let mut goals = n.create_action_server::<PickObject::Action>(&format!("{prefix}/pick"))?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = goals.next().await {
                emit(json!({"event": "goal", "action": "PickObject", "goal": req.goal}));
                match req.accept() {
                    Ok((mut goal, _cancel)) => {
                        let sent = goal
                            .publish_feedback(feedback.clone())
                            .and_then(|_| goal.succeed(result.clone()));
                        if let Err(e) = sent {
                            emit(json!({"event": "error", "what": format!("finishing goal: {e}")}));
                        }
                    }
                    Err(e) => {
                        emit(json!({"event": "error", "what": format!("accepting goal: {e}")}))
                    }
                }
            }
        }));

        Ok(Probe {
            _publishers: publishers,
            tasks,
        })
    }

    pub async fn stop(self) {
        crate::kit::app::stop_tasks(self.tasks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn belt_speed() -> Value {
        json!({"header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "belt"},
               "speed_mps": 0.25, "stddev_mps": 0.5, "source": 1, "stopped": false})
    }

    #[test]
    fn an_exact_message_parses() {
        let m: msg::BeltSpeed = parse_exact("x", &belt_speed()).unwrap();
        assert_eq!(
            (m.speed_mps, m.source, m.header.stamp.nanosec),
            (0.25, 1, 2)
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut v = belt_speed();
        v.as_object_mut().unwrap().remove("stddev_mps");
        let e = parse_exact::<msg::BeltSpeed>("fixture messages.BeltSpeed", &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "fixture messages.BeltSpeed: field stddev_mps is missing"
        );
    }

    #[test]
    fn an_unknown_nested_field_is_named() {
        let mut v = belt_speed();
        v["header"]["stamp"]["seconds"] = json!(3);
        let e = parse_exact::<msg::BeltSpeed>("m", &v).unwrap_err();
        assert_eq!(e.to_string(), "m: there is no field header.stamp.seconds");
    }

    #[test]
    fn a_value_out_of_range_for_its_type_is_refused() {
        let mut v = belt_speed();
        v["source"] = json!(300);
        let e = parse_exact::<msg::BeltSpeed>("m", &v).unwrap_err();
        assert!(format!("{e:#}").contains("300"), "{e:#}");
    }
}
