//! The interop probe: an r2r node that publishes every cncpick_msgs message
//! type from a fixture, serves a service and an action, and reports what it
//! receives as JSON lines on stdout. Tests drive it from rclpy, a ROS client
//! independent of ours, to check that both ends agree on every field.

use crate::kit::spin::SharedNode;
use crate::msgs::{action::PickObject, msg, srv::GetObject};
use anyhow::{bail, Context as _};
use futures::StreamExt;
use r2r::QosProfile;
use serde_json::{json, Value};
use std::any::Any;
use std::io::Write;
use tokio::task::JoinHandle;

/// Latched QoS so subscribers that join later still get each sample.
pub fn latched_qos() -> QosProfile {
    QosProfile::default().reliable().transient_local().keep_last(1)
}

/// Writes one JSON line to stdout, flushed, so a driving test sees it at once.
pub fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
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
                    let m: msg::$t = serde_json::from_value(value.clone())
                        .with_context(|| format!("fixture messages.{ty} does not fit cncpick_msgs/msg/{ty}"))?;
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
        let mut n = node.lock().unwrap_or_else(|e| e.into_inner());
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

        let mut detections =
            n.subscribe::<msg::DetectionArray>(&format!("{prefix}/in/DetectionArray"), latched_qos())?;
        tasks.push(tokio::spawn(async move {
            while let Some(m) = detections.next().await {
                emit(json!({"event": "received", "type": "DetectionArray", "msg": m}));
            }
        }));

        let response: GetObject::Response = serde_json::from_value(
            fixture["services"]["GetObject"]["response"].clone(),
        )
        .context("fixture services.GetObject.response does not fit GetObject.Response")?;
        let mut requests = n.create_service::<GetObject::Service>(
            &format!("{prefix}/get_object"),
            QosProfile::services_default(),
        )?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = requests.next().await {
                emit(json!({"event": "request", "service": "GetObject", "request": req.message}));
                if let Err(e) = req.respond(response.clone()) {
                    emit(json!({"event": "error", "what": format!("responding: {e}")}));
                }
            }
        }));

        let action = &fixture["actions"]["PickObject"];
        let feedback: PickObject::Feedback = serde_json::from_value(action["feedback"].clone())
            .context("fixture actions.PickObject.feedback does not fit")?;
        let result: PickObject::Result = serde_json::from_value(action["result"].clone())
            .context("fixture actions.PickObject.result does not fit")?;
        let mut goals = n.create_action_server::<PickObject::Action>(&format!("{prefix}/pick"))?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = goals.next().await {
                emit(json!({"event": "goal", "action": "PickObject", "goal": req.goal}));
                match req.accept() {
                    Ok((goal, _cancel)) => {
                        let sent = goal
                            .publish_feedback(feedback.clone())
                            .and_then(|_| goal.succeed(result.clone()));
                        if let Err(e) = sent {
                            emit(json!({"event": "error", "what": format!("finishing goal: {e}")}));
                        }
                    }
                    Err(e) => emit(json!({"event": "error", "what": format!("accepting goal: {e}")})),
                }
            }
        }));

        Ok(Probe {
            _publishers: publishers,
            tasks,
        })
    }

    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
