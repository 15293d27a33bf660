//! The `scheduler` node: the r2r shell around [`Core`].
//!
//! - In: `tracks` (confirmed tracks only), `cnc_<id>/status` for each of
//!   `cnc_ids`, `objects/events`, and a tick every `tick_period_s`. Each
//!   CNC's model comes from its own parameters (`cnc_<id>/get_parameters`),
//!   asked again every second until it answers.
//! - One task owns the core and takes one input at a time, at the wall
//!   clock's time (the injected clock); with `input_log_path` set, each
//!   input is written there first as a JSON line (the file starts afresh
//!   at each configure, with the core), and [`replay`] of that file gives
//!   the same decisions.
//! - Out: compare-and-set calls to the state manager (bounded, retried
//!   with one request id), `assignments` (Assignment, once the state
//!   manager has said ASSIGNED), the `cnc_<id>/pick` goals (bounded by
//!   `goal_accept_s`; the result awaited until the goal's deadline plus a
//!   margin), and `alerts`. Every failure is logged with the object's trace
//!   id and fed back to the core, which revokes and reassigns.
//!
//! [`replay`]: super::core::replay

use super::core::{Core, Input, Logged, ObjectId, Output, TrackIn};
use super::params::SchedParams;
use crate::kit::alerts::{alert, Alerts};
use crate::kit::breaker::BreakerConfig;
use crate::kit::call::{send_goal, Caller, SERVER_WAIT};
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, LifecyclePublisher, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::{read_remote_only, Params};
use crate::kit::retry::{Backoff, DeadLetters, RetryPolicy};
use crate::kit::spin::SharedNode;
use crate::kit::time::{from_seconds, seconds, wall_now, wall_now_s};
use crate::kit::trace::trace_id;
use crate::motion::params::{MotionParams, MODEL_PARAMS};
use crate::msgs::action::PickObject;
use crate::msgs::msg as m;
use crate::msgs::srv::TransitionObject;
use crate::state::lifecycle::ObjState;
use futures::StreamExt;
use r2r::rcl_interfaces::srv::GetParameters;
use r2r::QosProfile;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

pub const TRACKS_TOPIC: &str = "tracks";
pub const EVENTS_TOPIC: &str = "objects/events";
/// The alert naming a CNC (in its `node`) still Active in an epoch the
/// state manager refuses; the manager re-activates that CNC.
pub const EPOCH_STALE_ALERT: &str = "cnc_epoch_stale";
pub const ASSIGNMENTS_TOPIC: &str = "assignments";
pub const ALERTS_TOPIC: &str = crate::kit::alerts::TOPIC;
pub const ASSIGNED: &str = "assigned";
pub const REVOKED: &str = "revoked";
pub const GOALS: &str = "goals";
pub const GOALS_REFUSED: &str = "goals_refused";
pub const FINISHED: &str = "bypassed_or_missed";
pub const CALL_FAILED: &str = "state_calls_failed";
/// How long after its deadline a goal's result is still waited for, s.
const RESULT_MARGIN_S: f64 = 15.0;

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn uuid_msg(id: &ObjectId) -> r2r::unique_identifier_msgs::msg::UUID {
    r2r::unique_identifier_msgs::msg::UUID { uuid: id.to_vec() }
}

/// A TrackArray as the core takes it: confirmed tracks with a 16-byte id
/// and a finite position (the rest are counted and dropped).
pub fn tracks_input(msg: &m::TrackArray) -> (Input, usize) {
    let mut bad = 0;
    let tracks = msg
        .tracks
        .iter()
        .filter(|t| t.status == m::Track::STATUS_CONFIRMED as u8)
        .filter_map(|t| {
            let id = <ObjectId>::try_from(t.object_id.uuid.as_slice()).ok();
            let ok = id.is_some() && t.position.x.is_finite() && t.position.y.is_finite();
            if !ok {
                bad += 1;
            }
            Some(TrackIn {
                id: id.filter(|_| ok)?,
                x_m: t.position.x,
                y_m: t.position.y,
                class: t.class_id.clone(),
                confidence: t.confidence as f64,
            })
        })
        .collect();
    let belt_mps = if msg.belt_speed_mps.is_finite() {
        msg.belt_speed_mps
    } else {
        0.0
    };
    (
        Input::Tracks {
            stamp_s: seconds(&msg.header.stamp),
            belt_mps,
            tracks,
        },
        bad,
    )
}

/// An ObjectEvent as the core takes it (None: not a 16-byte object id).
pub fn event_input(e: &m::ObjectEvent) -> Option<Input> {
    Some(Input::Event {
        id: <ObjectId>::try_from(e.object_id.uuid.as_slice()).ok()?,
        state: e.to_state.id,
        cnc: e.cnc_id.clone(),
        epoch: e.epoch,
        stamp_ns: i64::from(e.header.stamp.sec) * 1_000_000_000 + i64::from(e.header.stamp.nanosec),
        seq: e.seq,
    })
}

/// CNC `cnc`'s status as the core takes it.
pub fn status_input(cnc: &str, s: &m::CncStatus) -> Input {
    Input::Status {
        cnc: cnc.to_string(),
        active: s.lifecycle_state == crate::kit::lifecycle::State::Active.id(),
        epoch: s.epoch,
        at_mm: [0, 1, 2].map(|k| s.position_machine_mm.get(k).copied().unwrap_or(0.0)),
        current: <[u8; 16]>::try_from(s.current_object.uuid.as_slice())
            .ok()
            .filter(|id| s.busy && *id != [0; 16]),
    }
}

/// A CNC's pick action client, and whether its last goal was accepted (the
/// next then skips the wait for the server: `kit::call::send_goal`).
type GoalClient = (r2r::ActionClient<PickObject::Action>, AtomicBool);

/// What the shell's tasks share.
#[derive(Clone)]
struct Shell {
    tx: UnboundedSender<Input>,
    transition: Arc<Caller<TransitionObject::Service>>,
    actions: Arc<BTreeMap<String, GoalClient>>,
    /// In mutexes: r2r's publishers are Send, not Sync.
    assignments: Arc<Mutex<LifecyclePublisher<m::Assignment>>>,
    alerts: Alerts,
    counters: Counters,
    p: SchedParams,
}

impl Shell {
    fn alert(&self, severity: u8, name: &str, id: &ObjectId, message: String) {
        self.alerts.raise(severity, name, Some(id), message);
    }

    /// `cnc_epoch_stale`, naming the CNC's node (as the manager's alerts
    /// name the node they concern): the manager re-activates it.
    fn epoch_stale_alert(&self, cnc: &str, message: String) {
        self.alerts.publish(&alert(
            m::Alert::ERROR as u8,
            EPOCH_STALE_ALERT,
            &format!("cnc_{cnc}"),
            None,
            message,
        ));
    }

    /// A compare-and-set in the state manager: Some(its answer), or None
    /// if no answer came (every attempt bounded).
    async fn transition(
        &self,
        id: &ObjectId,
        (from, to): (ObjState, ObjState),
        cnc: &str,
        epoch: u64,
        reason: &str,
    ) -> Option<TransitionObject::Response> {
        let r = self
            .transition
            .call(|rid| {
                let mut r = TransitionObject::Request {
                    request_id: rid.into(),
                    actor: "scheduler".into(),
                    cnc_id: cnc.into(),
                    epoch,
                    reason: reason.into(),
                    stamp: wall_now(),
                    ..Default::default()
                };
                r.object_id = uuid_msg(id);
                r.expected_state.id = from.id();
                r.new_state.id = to.id();
                r
            })
            .await;
        match r {
            Ok(a) => Some(a),
            Err(e) => {
                self.counters.add(CALL_FAILED, 1);
                self.counters.add(crate::kit::health::ERRORS, 1);
                tracing::error!(trace_id = %trace_id(id), "{from} → {to}: {e}");
                self.alert(
                    m::Alert::ERROR as u8,
                    "state_call_failed",
                    id,
                    format!("{from} → {to} of {}: {e}", trace_id(id)),
                );
                None
            }
        }
    }

    /// Carries out one decision, feeding the answers back to the core.
    fn execute(&self, o: Output) {
        let s = self.clone();
        match o {
            Output::Assign {
                id,
                cnc,
                epoch,
                contact_at_s,
                contact_m,
                seen_at_s,
            } => {
                tokio::spawn(async move {
                    let why = format!("policy {}", s.p.policy);
                    let r = s
                        .transition(
                            &id,
                            (ObjState::Detected, ObjState::Assigned),
                            &cnc,
                            epoch,
                            &why,
                        )
                        .await;
                    let accepted = r.as_ref().map(|a| a.accepted);
                    if let Some(a) = r.as_ref().filter(|a| !a.accepted) {
                        tracing::debug!(trace_id = %trace_id(&id), "assignment refused: {}", a.error);
                        // Refused with the object still DETECTED, as it was
                        // asked: the refusal is the CNC's epoch's.
                        if a.current_state.id == ObjState::Detected.id() {
                            let _ = s.tx.send(Input::EpochRefused {
                                cnc: cnc.clone(),
                                epoch,
                            });
                        }
                    }
                    if accepted == Some(true) {
                        s.counters.add(ASSIGNED, 1);
                        let mut a = m::Assignment {
                            object_id: uuid_msg(&id),
                            cnc_id: cnc,
                            epoch,
                            predicted_pick_time: from_seconds(contact_at_s),
                            policy: s.p.policy.clone(),
                            ..Default::default()
                        };
                        // The time the world was observed (architecture.md):
                        // the exposure of the frame the decision rests on.
                        a.header.stamp = from_seconds(seen_at_s);
                        a.header.frame_id = "belt".into();
                        a.predicted_pick_position.x = contact_m[0];
                        a.predicted_pick_position.y = contact_m[1];
                        a.predicted_pick_position.z = contact_m[2];
                        let _ = lock(&s.assignments).publish(&a);
                    }
                    let _ = s.tx.send(Input::AssignAnswer { id, accepted });
                });
            }
            Output::SendGoal {
                id,
                cnc,
                epoch,
                traj,
                height_m,
                class,
                deadline_s,
            } => {
                tokio::spawn(async move {
                    s.counters.add(GOALS, 1);
                    let trace = trace_id(&id);
                    let Some((client, matched)) = s.actions.get(&cnc) else {
                        let _ = s.tx.send(Input::GoalAnswer {
                            id,
                            accepted: false,
                        });
                        return;
                    };
                    let mut g = PickObject::Goal {
                        object_id: uuid_msg(&id),
                        epoch,
                        class_id: class,
                        deadline: from_seconds(deadline_s),
                        ..Default::default()
                    };
                    g.position.header.stamp = from_seconds(traj.t0_s);
                    g.position.header.frame_id = "belt".into();
                    g.position.point.x = traj.x_m;
                    g.position.point.y = traj.y_m;
                    g.position.point.z = height_m;
                    g.velocity.x = traj.vx_mps;
                    let accept = Duration::from_secs_f64(s.p.goal_accept_s);
                    let action = format!("cnc_{cnc}/pick");
                    match send_goal(client, &action, g, accept, matched).await {
                        Ok((_goal, result, _feedback)) => {
                            let _ = s.tx.send(Input::GoalAnswer { id, accepted: true });
                            let wait = (deadline_s - wall_now_s()).max(0.0) + RESULT_MARGIN_S;
                            match tokio::time::timeout(Duration::from_secs_f64(wait), result).await
                            {
                                Ok(Ok((_, r))) => tracing::debug!(
                                    trace_id = %trace,
                                    "cnc_{cnc}: outcome {} {}",
                                    r.outcome.value,
                                    r.error
                                ),
                                Ok(Err(e)) => {
                                    tracing::warn!(trace_id = %trace, "cnc_{cnc}: no result: {e}")
                                }
                                Err(_) => tracing::warn!(
                                    trace_id = %trace,
                                    "cnc_{cnc}: no result {wait:.1} s on; taken as ended"
                                ),
                            }
                            let _ = s.tx.send(Input::GoalDone { id });
                        }
                        Err(e) => {
                            s.counters.add(GOALS_REFUSED, 1);
                            tracing::warn!(trace_id = %trace, "{action}: goal not accepted: {e}");
                            let _ = s.tx.send(Input::GoalAnswer {
                                id,
                                accepted: false,
                            });
                        }
                    }
                });
            }
            Output::Revoke {
                id,
                cnc,
                epoch,
                why,
            } => {
                tokio::spawn(async move {
                    tracing::warn!(trace_id = %trace_id(&id), "revoking from cnc_{cnc}: {why}");
                    s.counters.add(REVOKED, 1);
                    let r = s
                        .transition(
                            &id,
                            (ObjState::Assigned, ObjState::Detected),
                            &cnc,
                            epoch,
                            &format!("revoked: {why}"),
                        )
                        .await;
                    if let Some(a) = r.filter(|a| !a.accepted) {
                        tracing::debug!(trace_id = %trace_id(&id), "revoke refused: {}", a.error);
                    }
                });
            }
            Output::Finish { id, to, why } => {
                tokio::spawn(async move {
                    let to = ObjState::from_id(to).unwrap_or(ObjState::Missed);
                    tracing::info!(trace_id = %trace_id(&id), "{to}: {why}");
                    let r = s
                        .transition(&id, (ObjState::Detected, to), "", 0, &why)
                        .await;
                    match r {
                        Some(a) if a.accepted => s.counters.add(FINISHED, 1),
                        Some(_) => {}
                        None => {
                            let _ = s.tx.send(Input::FinishFailed { id });
                        }
                    }
                });
            }
            Output::Alert { id, what } => {
                tracing::warn!(trace_id = %trace_id(&id), "{what}");
                s.alert(m::Alert::WARNING as u8, "assignment_failing", &id, what);
            }
            Output::EpochStale {
                cnc,
                epoch,
                since_s,
            } => {
                let what = format!(
                    "cnc_{cnc}: still Active in epoch {epoch}, which the state manager has \
                     refused for {:.1} s (it began a new one); no assignments to it until \
                     it is re-activated",
                    wall_now_s() - since_s
                );
                tracing::error!("{what}");
                s.epoch_stale_alert(&cnc, what);
            }
        }
    }
}

struct Prepared {
    transition: Arc<Caller<TransitionObject::Service>>,
    actions: Arc<BTreeMap<String, GoalClient>>,
    assignments: LifecyclePublisher<m::Assignment>,
    alerts: Alerts,
    param_clients: Vec<(String, Arc<r2r::Client<GetParameters::Service>>)>,
}

pub struct SchedNode {
    node: SharedNode,
    gate: ActiveGate,
    params: Params<SchedParams>,
    counters: Counters,
    namespace: String,
    core: Arc<Mutex<Option<Core>>>,
    /// The input log (`input_log_path`), from configure to cleanup.
    log: Arc<Mutex<Option<std::io::BufWriter<std::fs::File>>>>,
    prepared: Option<Prepared>,
    tasks: Vec<JoinHandle<()>>,
}

impl SchedNode {
    pub fn new(c: &NodeContext<SchedParams>) -> Self {
        SchedNode {
            node: c.node.clone(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            counters: c.counters.clone(),
            namespace: c.namespace(),
            core: Arc::new(Mutex::new(None)),
            log: Arc::new(Mutex::new(None)),
            prepared: None,
            tasks: Vec::new(),
        }
    }

    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Steps for SchedNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let config = p.config().map_err(anyhow::Error::msg)?;
        let mut n = self.node.lock();
        let reliable = QosProfile::default().reliable().keep_last(100);
        let transition = Arc::new(Caller::<TransitionObject::Service>::new(
            &mut n,
            "state_manager/transition_object",
            Duration::from_secs_f64(p.state_call_timeout_s),
            RetryPolicy {
                max_attempts: p.state_call_attempts as u32,
                backoff: Backoff::default(),
            },
            BreakerConfig {
                failure_threshold: 5,
                open_for: Duration::from_secs(5),
            },
            DeadLetters::in_memory(),
            0,
        )?);
        let mut actions = BTreeMap::new();
        let mut param_clients = Vec::new();
        for id in &p.cnc_ids {
            let client = n.create_action_client::<PickObject::Action>(&format!("cnc_{id}/pick"))?;
            actions.insert(id.clone(), (client, AtomicBool::new(false)));
            param_clients.push((
                id.clone(),
                Arc::new(n.create_client::<GetParameters::Service>(
                    &format!("cnc_{id}/get_parameters"),
                    QosProfile::services_default(),
                )?),
            ));
        }
        let assignments = LifecyclePublisher::new(
            n.create_publisher(ASSIGNMENTS_TOPIC, reliable.clone())?,
            self.gate.clone(),
        );
        let alerts = Alerts::new(&mut n, "scheduler", self.gate.clone())?;
        drop(n);
        // A new core, and a new log: a replay starts from a fresh core.
        *lock(&self.log) = if p.input_log_path.is_empty() {
            None
        } else {
            let f = std::fs::File::create(&p.input_log_path)
                .map_err(|e| anyhow::anyhow!("input_log_path {}: {e}", p.input_log_path))?;
            Some(std::io::BufWriter::new(f))
        };
        *lock(&self.core) = Some(Core::new(config));
        self.prepared = Some(Prepared {
            transition,
            actions: Arc::new(actions),
            assignments,
            alerts,
            param_clients,
        });
        Ok(())
    }

    fn activate(&mut self) -> anyhow::Result<()> {
        let prepared = self
            .prepared
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        let p = self.params.get();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        let shell = Shell {
            tx: tx.clone(),
            transition: prepared.transition.clone(),
            actions: prepared.actions.clone(),
            assignments: Arc::new(Mutex::new(prepared.assignments.clone())),
            alerts: prepared.alerts.clone(),
            counters: self.counters.clone(),
            p: p.clone(),
        };
        let mut n = self.node.lock();
        let reliable = QosProfile::default().reliable().keep_last(100);
        let mut tracks = n.subscribe::<m::TrackArray>(TRACKS_TOPIC, reliable.clone())?;
        let mut events = n.subscribe::<m::ObjectEvent>(EVENTS_TOPIC, crate::kit::qos::events())?;
        let mut statuses = Vec::new();
        for id in &p.cnc_ids {
            statuses.push((
                id.clone(),
                n.subscribe::<m::CncStatus>(
                    &format!("cnc_{id}/status"),
                    QosProfile::default().keep_last(10),
                )?,
            ));
        }
        drop(n);
        // Find the store now, not at the first assignment.
        self.tasks
            .push(prepared.transition.await_server_task(SERVER_WAIT));

        // The core: one input at a time.
        {
            let (core, log) = (self.core.clone(), self.log.clone());
            let counters = self.counters.clone();
            let path = p.input_log_path.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(input) = rx.recv().await {
                    let now_s = wall_now_s();
                    let mut log = lock(&log);
                    if let Some(w) = log.as_mut() {
                        let line = Logged {
                            now_s,
                            input: input.clone(),
                        };
                        let ok = serde_json::to_writer(&mut *w, &line).is_ok()
                            && writeln!(w).is_ok()
                            && w.flush().is_ok();
                        if !ok {
                            tracing::error!("input_log_path {path}: write failed; logging stops");
                            *log = None;
                        }
                    }
                    drop(log);
                    let t0 = std::time::Instant::now();
                    let outs = lock(&core)
                        .as_mut()
                        .map(|c| {
                            let outs = c.step(now_s, input);
                            counters.set(crate::kit::health::QUEUE_DEPTH, c.held() as u64);
                            outs
                        })
                        .unwrap_or_default();
                    counters.set(
                        crate::kit::health::LATENCY_US,
                        t0.elapsed().as_micros() as u64,
                    );
                    outs.into_iter().for_each(|o| shell.execute(o));
                }
            }));
        }
        // Tracks.
        {
            let (tx, counters) = (tx.clone(), self.counters.clone());
            self.tasks.push(tokio::spawn(async move {
                while let Some(msg) = tracks.next().await {
                    let (input, bad) = tracks_input(&msg);
                    counters.add(crate::kit::health::MESSAGES, 1);
                    if bad > 0 {
                        counters.add("bad_tracks", bad as u64);
                        tracing::warn!("scheduler: {bad} tracks with a bad id or position dropped");
                    }
                    let _ = tx.send(input);
                }
            }));
        }
        // Object events.
        {
            let tx = tx.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    match event_input(&e) {
                        Some(input) => {
                            let _ = tx.send(input);
                        }
                        None => tracing::warn!(
                            "scheduler: an event with a {}-byte object id",
                            e.object_id.uuid.len()
                        ),
                    }
                }
            }));
        }
        // CNC statuses.
        for (id, mut sub) in statuses {
            let tx = tx.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(s) = sub.next().await {
                    let _ = tx.send(status_input(&id, &s));
                }
            }));
        }
        // CNC models, from each CNC node's parameters.
        let known: Vec<String> = lock(&self.core)
            .as_ref()
            .map(|c| c.models().into_iter().map(String::from).collect())
            .unwrap_or_default();
        for (id, client) in prepared.param_clients.clone() {
            if known.contains(&id) {
                continue;
            }
            let tx = tx.clone();
            let node = format!("{}/cnc_{id}", self.namespace.trim_end_matches('/'));
            let timeout = Duration::from_secs_f64(p.model_timeout_s);
            self.tasks.push(tokio::spawn(async move {
                let mut last = String::new();
                loop {
                    match read_remote_only::<MotionParams>(&client, &node, MODEL_PARAMS, timeout)
                        .await
                    {
                        Ok(params) if params.cnc_id == id => {
                            tracing::info!("scheduler: {node}'s model read from its parameters");
                            let _ = tx.send(Input::Model {
                                params: Box::new(params),
                            });
                            return;
                        }
                        Ok(params) => {
                            let e = format!("{node} says its cnc_id is {:?}", params.cnc_id);
                            if e != last {
                                tracing::error!("scheduler: {e}; not scheduling it");
                                last = e;
                            }
                        }
                        Err(e) => {
                            let e = e.to_string();
                            if e != last {
                                tracing::warn!("scheduler: {node}'s model: {e}; asking again");
                                last = e;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        // Ticks.
        {
            let period = Duration::from_secs_f64(p.tick_period_s);
            self.tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.send(Input::Tick).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(())
    }

    fn deactivate(&mut self) -> anyhow::Result<()> {
        // The core is kept: activating again carries on from it.
        self.stop();
        Ok(())
    }

    fn release(&mut self) {
        self.stop();
        self.prepared = None;
        *lock(&self.core) = None;
        *lock(&self.log) = None;
    }
}

/// The scheduler node's `main`.
pub fn main() {
    node::main::<SchedParams, _, _>("scheduler", "/cell", |c| Ok(SchedNode::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_names_the_object_its_cnc_is_on_only_while_busy_with_a_whole_id() {
        let current = |s: &m::CncStatus| match status_input("1", s) {
            Input::Status { current, .. } => current,
            other => panic!("{other:?}"),
        };
        let mut s = m::CncStatus::default();
        s.current_object.uuid = vec![7; 16];
        assert_eq!(current(&s), None, "not busy");
        s.busy = true;
        assert_eq!(current(&s), Some([7; 16]));
        s.current_object.uuid = vec![7; 15];
        assert_eq!(current(&s), None, "15 bytes");
        s.current_object.uuid = vec![0; 16];
        assert_eq!(current(&s), None, "all zero");
    }
}
