//! The `state_manager` node: the r2r shell around [`Store`]. One thread owns
//! the store and does every request in turn; a reply goes out only after
//! the store has committed (durably) what it answers, and every accepted
//! transition is then published on `objects/events` (reliable,
//! transient_local) in seq order, after its reply.
//!
//! Services (under `state_manager/`): register_object, transition_object,
//! get_object, list_objects, object_history, begin_epoch.

use super::lifecycle::{after_pick, ObjState};
use super::params::StateParams;
use super::snapshot;
use super::store::{
    Answer, Event, Filter, Record, Recovered, Refusal, Registration, Reported, Seen, Store,
    StoreError, TransitionRequest, Write, Written,
};
use crate::kit::alerts::{Alerts, Latch};
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, LifecyclePublisher, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::Params;
use crate::kit::spin::SharedNode;
use crate::kit::time::{from_duration, to_duration, wall_now};
use crate::kit::trace::trace_id;
use crate::msgs::msg as m;
use crate::msgs::srv::{
    BeginEpoch, GetObject, ListObjects, ObjectHistory, RegisterObject, TransitionObject,
};
use futures::StreamExt;
use r2r::builtin_interfaces::msg::Time;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const EVENTS_TOPIC: &str = "objects/events";
pub const ALERTS_TOPIC: &str = crate::kit::alerts::TOPIC;
pub const REGISTER_SERVICE: &str = "state_manager/register_object";
pub const TRANSITION_SERVICE: &str = "state_manager/transition_object";
pub const GET_SERVICE: &str = "state_manager/get_object";
pub const LIST_SERVICE: &str = "state_manager/list_objects";
pub const HISTORY_SERVICE: &str = "state_manager/object_history";
pub const EPOCH_SERVICE: &str = "state_manager/begin_epoch";
pub const ACCEPTED: &str = "transitions_accepted";
pub const REFUSED: &str = "transitions_refused";
pub const REGISTERED: &str = "objects_registered";
pub const STORE_ERRORS: &str = "store_errors";
pub const RECOVERED: &str = "objects_recovered";
pub const PRUNED: &str = "objects_pruned";
pub const SNAPSHOTS: &str = "snapshots_taken";
/// Service requests handed to the store thread, in all.
pub const REQUESTS: &str = "requests_received";

/// How often the store thread looks for events to publish and for
/// housekeeping when no request comes.
const TICK: Duration = Duration::from_millis(200);
/// Recovery of a large store takes a while; activation waits this long.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

fn ns_of(t: &Time) -> i64 {
    to_duration(t).as_nanos().min(i64::MAX as u128) as i64
}

fn time_of(ns: i64) -> Time {
    from_duration(Duration::from_nanos(ns.max(0) as u64))
}

fn wall_ns() -> i64 {
    ns_of(&wall_now())
}

/// A UUID field, or why it is not one.
pub fn uuid16(field: &str, v: &[u8]) -> Result<[u8; 16], String> {
    v.try_into()
        .map_err(|_| format!("{field} has {} bytes; a UUID has 16", v.len()))
}

fn state_from(field: &str, s: &m::ObjectState) -> Result<ObjState, String> {
    ObjState::from_id(s.id).ok_or_else(|| format!("{field} {} is not an object state", s.id))
}

fn state_msg(s: Option<ObjState>) -> m::ObjectState {
    m::ObjectState {
        id: s.map_or(0, ObjState::id),
    }
}

fn uuid_msg(id: &[u8; 16]) -> r2r::unique_identifier_msgs::msg::UUID {
    r2r::unique_identifier_msgs::msg::UUID { uuid: id.to_vec() }
}

pub fn record_msg(r: &Record) -> m::ObjectRecord {
    let s = &r.seen;
    m::ObjectRecord {
        object_id: uuid_msg(&r.object_id),
        vision_id: s.vision_id.clone(),
        state: state_msg(Some(r.state)),
        cnc_id: r.cnc_id.clone(),
        epoch: r.epoch,
        lane: s.lane,
        class_id: s.class_id.clone(),
        confidence: s.confidence as f32,
        position: r2r::geometry_msgs::msg::Point {
            x: s.x_m,
            y: s.y_m,
            z: 0.0,
        },
        velocity_x_mps: s.velocity_x_mps,
        detected_at: time_of(s.detected_at_ns),
        updated_at: time_of(r.updated_at_ns),
        last_seq: r.last_seq,
    }
}

pub fn event_msg(e: &Event, vision_id: &str) -> m::ObjectEvent {
    let mut out = m::ObjectEvent {
        seq: e.seq,
        object_id: uuid_msg(&e.object_id),
        vision_id: vision_id.into(),
        from_state: state_msg(e.from),
        to_state: state_msg(Some(e.to)),
        actor: e.actor.clone(),
        cnc_id: e.cnc_id.clone(),
        epoch: e.epoch,
        reason: e.reason.clone(),
        belt_position_m: e.belt_position_m,
        ..Default::default()
    };
    out.header.stamp = time_of(e.at_ns);
    out.header.frame_id = "belt".into();
    out
}

/// A TransitionObject request as the store takes it, or why it cannot be.
pub fn transition_request(r: &TransitionObject::Request) -> Result<TransitionRequest, String> {
    Ok(TransitionRequest {
        request_id: r.request_id.clone(),
        object_id: uuid16("object_id", &r.object_id.uuid)?,
        expected: state_from("expected_state", &r.expected_state)?,
        new: state_from("new_state", &r.new_state)?,
        actor: r.actor.clone(),
        cnc_id: r.cnc_id.clone(),
        epoch: r.epoch,
        reason: r.reason.clone(),
        belt_position_m: r.belt_position_m,
    })
}

/// A RegisterObject request as the store takes it, or why it cannot be.
/// An unset `detected_at` is taken as `now_ns`.
pub fn registration(r: &RegisterObject::Request, now_ns: i64) -> Result<Registration, String> {
    let finite = [r.position.x, r.position.y, r.velocity_x_mps];
    if finite.iter().any(|v| !v.is_finite()) {
        return Err("position or velocity_x_mps is not a finite number".into());
    }
    Ok(Registration {
        request_id: r.request_id.clone(),
        object_id: uuid16("object_id", &r.object_id.uuid)?,
        actor: r.actor.clone(),
        object: Seen {
            vision_id: r.vision_id.clone(),
            lane: r.lane,
            class_id: r.class_id.clone(),
            confidence: r.confidence as f64,
            x_m: r.position.x,
            y_m: r.position.y,
            velocity_x_mps: r.velocity_x_mps,
            detected_at_ns: match ns_of(&r.detected_at) {
                0 => now_ns,
                ns => ns,
            },
        },
    })
}

enum Command {
    Register(
        RegisterObject::Request,
        oneshot::Sender<RegisterObject::Response>,
    ),
    Transition(
        TransitionObject::Request,
        oneshot::Sender<TransitionObject::Response>,
    ),
    Get(GetObject::Request, oneshot::Sender<GetObject::Response>),
    List(ListObjects::Request, oneshot::Sender<ListObjects::Response>),
    History(
        ObjectHistory::Request,
        oneshot::Sender<ObjectHistory::Response>,
    ),
    Epoch(BeginEpoch::Request, oneshot::Sender<BeginEpoch::Response>),
    /// Recovery on activation, before any request is served.
    Recover(mpsc::SyncSender<Result<Recovered, String>>),
}

impl Command {
    /// A registration or a transition: taken with those queued behind it
    /// in one commit ([`Keeper::write`]).
    fn writes(&self) -> bool {
        matches!(self, Command::Register(..) | Command::Transition(..))
    }
}

/// The answer to a write the store answered as another kind (it does not).
const MISMATCH: &str = "internal error: the store answered another kind of write";

/// A write of a group, waiting for the group's commit to be answered.
enum Waiting {
    Register([u8; 16], oneshot::Sender<RegisterObject::Response>),
    Transition(
        TransitionRequest,
        oneshot::Sender<TransitionObject::Response>,
    ),
}

/// The most writes taken into one commit: those that queued while the
/// last one committed (an fsync; far longer than a write's own work when
/// the disk is busy), so a backlog costs one sync, not one each.
const GROUP_MAX: usize = 64;

/// Requests a service hands on to the store thread before the first of
/// them is answered; more wait in the service's queue.
const IN_FLIGHT: usize = GROUP_MAX;

/// The store thread's queue; its depth is the node's `queue_depth` (on
/// /diagnostics): a store that stalls shows it growing.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Command>,
    counters: Counters,
}

impl Queue {
    /// Hands `c` to the store thread; false once that has stopped.
    fn send(&self, c: Command) -> bool {
        let request = !matches!(c, Command::Recover(_));
        // Counted before it can be taken, so the depth is never short.
        self.counters.add(crate::kit::health::QUEUE_DEPTH, 1);
        if self.tx.send(c).is_err() {
            self.counters.sub(crate::kit::health::QUEUE_DEPTH, 1);
            return false;
        }
        if request {
            self.counters.add(REQUESTS, 1);
        }
        true
    }
}

/// Transitions the state manager makes itself are logged each with its
/// trace id up to this many at a time; all of them are in the audit trail
/// and on objects/events.
const LOGGED: usize = 100;

/// How an answer's error starts when the store could not do the work (a
/// full disk, an I/O error): nothing was changed, and the same request may
/// succeed later. Any other refusal is final.
pub const STORE_UNAVAILABLE: &str = "store unavailable: ";

/// Raised (CRITICAL) at the first write a full disk refuses, and
/// [`DISK_OK_ALERT`] (INFO, with how many were refused) at the next write
/// that succeeds.
pub const DISK_FULL_ALERT: &str = "state_disk_full";
pub const DISK_OK_ALERT: &str = "state_disk_ok";

/// The thread that owns the store.
struct Keeper {
    store: Store,
    params: Params<StateParams>,
    gate: ActiveGate,
    events: LifecyclePublisher<m::ObjectEvent>,
    alerts: Alerts,
    counters: Counters,
    /// The last seq committed, and the last published: events committed
    /// while the node is not active (recovery's, or the latest ones again
    /// after a restart) go out in seq order once it is.
    committed_seq: u64,
    published_seq: u64,
    publish_failing: bool,
    /// Set when the node goes away: the thread stops between requests.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    next_prune_ns: i64,
    prune_more: bool,
    /// The `size_limit_mb` in effect (a parameter update applies between requests).
    size_limit_mb: f64,
    next_expire_ns: i64,
    /// Writes refused for a full disk since the last that succeeded: the
    /// first raises `state_disk_full`, the next write that succeeds
    /// `state_disk_ok` with the count.
    disk_full: Latch,
}

impl Keeper {
    /// Publishes `e` and everything committed before it not yet published,
    /// in seq order (a repeated request's remembered answer is not
    /// published again).
    fn publish(&mut self, e: &Event) {
        self.committed_seq = self.committed_seq.max(e.seq);
        if e.seq == self.published_seq + 1 && self.gate.is_open() {
            // The usual case: the next one in order, already in hand.
            self.send(e);
        }
        self.catch_up();
    }

    /// Publishes one event; false if it did not go out (tried again later,
    /// in order).
    fn send(&mut self, e: &Event) -> bool {
        let vision_id = self
            .store
            .get(&e.object_id)
            .ok()
            .flatten()
            .map(|r| r.seen.vision_id)
            .unwrap_or_default();
        match self.events.publish(&event_msg(e, &vision_id)) {
            Ok(true) => {
                self.published_seq = e.seq;
                self.publish_failing = false;
                true
            }
            Ok(false) => false,
            Err(err) => {
                // Said once until it works again.
                if !self.publish_failing {
                    tracing::error!(seq = e.seq, "state_manager: publishing an event: {err}");
                }
                self.publish_failing = true;
                false
            }
        }
    }

    /// Publishes, from the store, what was committed but not yet published.
    fn catch_up(&mut self) {
        while self.published_seq < self.committed_seq && self.gate.is_open() && !self.stopping() {
            let batch = match self.store.events_after(self.published_seq, 1000) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => {
                    self.published_seq = self.committed_seq;
                    return;
                }
                Err(e) => {
                    self.store_failed(&e, None);
                    return;
                }
            };
            for e in &batch {
                if !self.send(e) {
                    return;
                }
            }
        }
    }

    /// One request taken from the [`Queue`].
    fn taken(&self) {
        self.counters.sub(crate::kit::health::QUEUE_DEPTH, 1);
    }

    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Acquire)
    }

    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        // A request taken from the queue behind a group of writes.
        let mut next: Option<Command> = None;
        while !self.stopping() {
            let wait = if self.prune_more {
                Duration::ZERO
            } else {
                TICK
            };
            let got = match next.take() {
                Some(c) => Ok(c),
                None => rx.recv_timeout(wait).inspect(|_| self.taken()),
            };
            match got {
                Ok(c) => {
                    let t0 = std::time::Instant::now();
                    // A cap changed since the last request applies to this one.
                    self.apply_size_limit();
                    if c.writes() {
                        let mut group = vec![c];
                        while group.len() < GROUP_MAX {
                            let Ok(c) = rx.try_recv() else { break };
                            self.taken();
                            if !c.writes() {
                                next = Some(c);
                                break;
                            }
                            group.push(c);
                        }
                        self.write(group);
                    } else {
                        self.handle(c);
                    }
                    self.counters.set(
                        crate::kit::health::LATENCY_US,
                        t0.elapsed().as_micros() as u64,
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.catch_up();
            self.apply_size_limit();
            // Between requests, busy or not (they are due by time, not idleness).
            self.expire(wall_ns());
            self.housekeeping(wall_ns());
        }
    }

    /// Transitions the state manager made itself (recovery, a new epoch,
    /// expiry): published in seq order with what follows, the first
    /// [`LOGGED`] each logged with its trace id and `why`.
    fn settled(&mut self, events: &[Event], why: &str) {
        for (k, e) in events.iter().enumerate() {
            self.committed_seq = self.committed_seq.max(e.seq);
            if k >= LOGGED {
                continue;
            }
            tracing::warn!(
                trace_id = %trace_id(&e.object_id),
                "state_manager: {} -> {}: {}{why}",
                e.from.map_or("-", ObjState::label),
                e.to,
                e.reason
            );
        }
    }

    /// A new `size_limit_mb` (a parameter update) takes effect between
    /// requests: a cap below what is in use leaves the store full at once,
    /// as a full disk would; 0 lifts it.
    fn apply_size_limit(&mut self) {
        let want = self.params.get().size_limit_mb;
        if want == self.size_limit_mb {
            return;
        }
        self.size_limit_mb = want;
        match self.store.limit_size((want * 1e6) as u64) {
            Ok(bytes) => tracing::warn!(
                "state_manager: size_limit_mb is now {want} (the cap in effect: {bytes} bytes)"
            ),
            Err(e) => {
                self.store_failed(&e, None);
            }
        }
    }

    /// Expiry ([`Store::expire`]), at most once a second, while active
    /// (recovery settles everything on activation).
    fn expire(&mut self, now_ns: i64) {
        let p = self.params.get();
        if p.expire_after_s <= 0.0 || now_ns < self.next_expire_ns || !self.gate.is_open() {
            return;
        }
        self.next_expire_ns = now_ns + 1_000_000_000;
        match self.store.expire(
            now_ns,
            (p.expire_after_s * 1e9) as i64,
            p.reach_end_x_m,
            "state_manager",
        ) {
            Ok(events) => {
                self.settled(&events, "");
                let expired: Vec<&Event> =
                    events.iter().filter(|e| e.to == ObjState::Missed).collect();
                if let Some(first) = expired.first() {
                    self.alerts.raise(
                        m::Alert::WARNING as u8,
                        "object_expired",
                        Some(&first.object_id),
                        format!(
                            "{} object(s) left the cell open and unchanged for {} s: MISSED",
                            expired.len(),
                            p.expire_after_s
                        ),
                    );
                }
                self.catch_up();
            }
            Err(e) => {
                self.store_failed(&e, None);
            }
        }
    }

    /// Retention, one batch at a time, between requests.
    fn housekeeping(&mut self, now_ns: i64) {
        if now_ns < self.next_prune_ns && !self.prune_more {
            return;
        }
        let p = self.params.get();
        if p.retention_days <= 0.0 {
            self.next_prune_ns = now_ns + (p.prune_period_s * 1e9) as i64;
            return;
        }
        let before_ns = now_ns - (p.retention_days * 86_400e9) as i64;
        match self.store.prune(before_ns, p.prune_batch as usize) {
            Ok(done) => {
                self.prune_more = done.more;
                if done.objects > 0 || done.requests > 0 {
                    self.counters.add(PRUNED, done.objects as u64);
                    tracing::debug!(?done, "state_manager: retention");
                }
            }
            Err(e) => {
                self.prune_more = false;
                self.store_failed(&e, None);
            }
        }
        if !self.prune_more {
            self.next_prune_ns = now_ns + (p.prune_period_s * 1e9) as i64;
        }
    }

    /// A pick's outcome a CNC reported with its new epoch that the store
    /// did not record (it holds something else): logged and raised as
    /// the CNC's own unrecorded outcomes are.
    fn outcome_unrecorded(&self, cnc_id: &str, r: &Reported, holds: Option<ObjState>) {
        let message = format!(
            "CNC {cnc_id}'s pick of {} in epoch {} ended {}, which the state manager did not \
             record: {}",
            trace_id(&r.object_id),
            r.epoch,
            r.to,
            holds.map_or("there is no such object".into(), |h| format!(
                "it holds {h}"
            )),
        );
        tracing::error!(trace_id = %trace_id(&r.object_id), "state_manager: {message}");
        self.alerts.raise(
            m::Alert::ERROR as u8,
            crate::kit::alerts::PICK_OUTCOME_UNRECORDED,
            Some(&r.object_id),
            message,
        );
    }

    /// Counts, logs and raises a store failure; the answer's error for it
    /// (starting [`STORE_UNAVAILABLE`]: the request may be tried again).
    /// A full disk is raised once until a write succeeds again
    /// ([`Keeper::wrote`]), not once per refused write.
    fn store_failed(&mut self, e: &StoreError, object: Option<&[u8; 16]>) -> String {
        self.counters.add(STORE_ERRORS, 1);
        self.counters.add(crate::kit::health::ERRORS, 1);
        let msg = e.to_string();
        tracing::error!(
            trace_id = %object.map(|o| trace_id(o)).unwrap_or_default(),
            "state_manager: {msg}"
        );
        let raised = if matches!(e, StoreError::DiskFull { .. }) {
            self.disk_full.occurred().then(|| {
                (
                    DISK_FULL_ALERT,
                    format!("{msg}; writes are refused until there is room (one alert)"),
                )
            })
        } else {
            Some(("state_store_error", msg.clone()))
        };
        if let Some((name, message)) = raised {
            self.alerts
                .raise(m::Alert::CRITICAL as u8, name, object, message);
        }
        format!("{STORE_UNAVAILABLE}{msg}")
    }

    /// A write succeeded: a full disk, if one was raised, has room again.
    fn wrote(&mut self) {
        if let Some(refused) = self.disk_full.cleared() {
            tracing::warn!(
                "state_manager: writes succeed again ({refused} refused for a full disk)"
            );
            self.alerts.raise(
                m::Alert::INFO as u8,
                DISK_OK_ALERT,
                None,
                format!("writes succeed again: {refused} were refused while the disk was full"),
            );
        }
    }

    /// Registrations and transitions, in one commit ([`Store::write_group`]):
    /// each answered once the group is durable, as it would be alone; then
    /// the accepted ones' events, in seq order.
    fn write(&mut self, group: Vec<Command>) {
        let mut writes = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        for c in group {
            self.counters.add(crate::kit::health::MESSAGES, 1);
            match c {
                Command::Register(req, reply) => {
                    let now_ns = wall_ns();
                    match registration(&req, now_ns) {
                        Err(error) => {
                            let _ = reply.send(RegisterObject::Response {
                                error,
                                ..Default::default()
                            });
                        }
                        Ok(r) => {
                            waiting.push(Waiting::Register(r.object_id, reply));
                            writes.push(Write::Register(r, now_ns));
                        }
                    }
                }
                Command::Transition(req, reply) => match transition_request(&req) {
                    Err(error) => {
                        let _ = reply.send(TransitionObject::Response {
                            error,
                            ..Default::default()
                        });
                    }
                    Ok(t) => {
                        let at = match ns_of(&req.stamp) {
                            0 => wall_ns(),
                            ns => ns,
                        };
                        writes.push(Write::Transition(t.clone(), at));
                        waiting.push(Waiting::Transition(t, reply));
                    }
                },
                other => self.handle(other),
            }
        }
        let answers = if writes.is_empty() {
            Vec::new()
        } else {
            self.store.write_group(&writes)
        };
        let mut events = Vec::new();
        // The answers first: they wait on the commit, not on the events (an
        // answer and an event reach a subscriber in no set order in any
        // case: two writers).
        for (w, answer) in waiting.into_iter().zip(answers) {
            match (w, answer) {
                (Waiting::Register(id, reply), answer) => {
                    let mut out = RegisterObject::Response::default();
                    match answer {
                        Ok(Written::Registered(done)) => {
                            out.accepted = true;
                            out.created = done.created;
                            out.object = record_msg(&done.record);
                            if done.event.is_some() {
                                self.counters.add(REGISTERED, 1);
                            }
                            events.extend(done.event);
                        }
                        // Not given: write_group answers each write in kind.
                        Ok(Written::Transitioned(_)) => out.error = MISMATCH.into(),
                        Err(e) => out.error = self.store_failed(&e, Some(&id)),
                    }
                    let _ = reply.send(out);
                }
                (Waiting::Transition(t, reply), answer) => {
                    let mut out = TransitionObject::Response::default();
                    match answer {
                        Ok(Written::Transitioned(Answer::Accepted(e))) => {
                            self.counters.add(ACCEPTED, 1);
                            out.accepted = true;
                            out.current_state = state_msg(Some(e.to));
                            out.seq = e.seq;
                            events.push(e);
                        }
                        Ok(Written::Transitioned(Answer::Refused(r))) => {
                            self.counters.add(REFUSED, 1);
                            out.current_state = state_msg(r.current());
                            out.error = r.describe(&t);
                            if r == Refusal::UnknownObject {
                                out.error = format!("{}: {}", trace_id(&t.object_id), out.error);
                            }
                        }
                        Ok(Written::Registered(_)) => out.error = MISMATCH.into(),
                        Err(e) => out.error = self.store_failed(&e, Some(&t.object_id)),
                    }
                    let _ = reply.send(out);
                }
            }
        }
        if !events.is_empty() {
            self.wrote();
        }
        for e in &events {
            self.publish(e);
        }
    }

    fn handle(&mut self, c: Command) {
        match c {
            c @ (Command::Register(..) | Command::Transition(..)) => self.write(vec![c]),
            Command::Get(req, reply) => {
                let mut out = GetObject::Response::default();
                match uuid16("object_id", &req.object_id.uuid) {
                    Err(e) => out.error = e,
                    Ok(id) => match self.store.get(&id) {
                        Ok(Some(r)) => {
                            out.found = true;
                            out.object = record_msg(&r);
                        }
                        Ok(None) => out.error = format!("{}: no such object", trace_id(&id)),
                        Err(e) => out.error = self.store_failed(&e, Some(&id)),
                    },
                }
                let _ = reply.send(out);
            }
            Command::List(req, reply) => {
                let mut out = ListObjects::Response::default();
                let states: Result<Vec<ObjState>, String> = req
                    .states
                    .iter()
                    .map(|&s| {
                        ObjState::from_id(s).ok_or(format!("states: {s} is not an object state"))
                    })
                    .collect();
                let lane = match req.lane {
                    -1 => Ok(None),
                    l if (0..=255).contains(&l) => Ok(Some(l as u8)),
                    l => Err(format!("lane {l}: use 0..255, or -1 for any")),
                };
                match (states, lane) {
                    (Err(e), _) | (_, Err(e)) => out.error = e,
                    (Ok(states), Ok(lane)) => {
                        let f = Filter {
                            states,
                            lane,
                            detected_after_ns: Some(ns_of(&req.detected_after)).filter(|&n| n > 0),
                            detected_before_ns: Some(ns_of(&req.detected_before))
                                .filter(|&n| n > 0),
                            limit: match req.limit {
                                0 => self.params.get().list_limit as usize,
                                n => n as usize,
                            },
                        };
                        match self.store.list(&f) {
                            Ok((objects, truncated)) => {
                                out.objects = objects.iter().map(record_msg).collect();
                                out.truncated = truncated;
                            }
                            Err(e) => out.error = self.store_failed(&e, None),
                        }
                    }
                }
                let _ = reply.send(out);
            }
            Command::History(req, reply) => {
                let mut out = ObjectHistory::Response::default();
                match uuid16("object_id", &req.object_id.uuid) {
                    Err(e) => out.error = e,
                    Ok(id) => match (self.store.history(&id), self.store.get(&id)) {
                        (Ok(h), Ok(Some(r))) => {
                            out.found = true;
                            out.transitions =
                                h.iter().map(|e| event_msg(e, &r.seen.vision_id)).collect();
                        }
                        (Ok(_), Ok(None)) => {
                            out.error = format!("{}: no such object", trace_id(&id))
                        }
                        (Err(e), _) | (_, Err(e)) => out.error = self.store_failed(&e, Some(&id)),
                    },
                }
                let _ = reply.send(out);
            }
            Command::Recover(reply) => {
                let p = self.params.get();
                let answer = self
                    .store
                    .recover(wall_ns(), p.reach_end_x_m, "state_manager")
                    .map_err(|e| self.store_failed(&e, None));
                if let Ok(r) = &answer {
                    if r.events.len() > LOGGED {
                        tracing::warn!(
                            "state_manager: recovery made {} transitions; the first {LOGGED} follow",
                            r.events.len()
                        );
                    }
                    self.settled(&r.events, "");
                    self.counters.add(RECOVERED, r.open as u64);
                    tracing::info!(
                        open = r.open,
                        kept = r.kept,
                        in_flight = r.in_flight,
                        transitions = r.events.len(),
                        epochs = ?r.epochs,
                        "state_manager: recovered"
                    );
                }
                let _ = reply.send(answer);
            }
            Command::Epoch(req, reply) => {
                let mut out = BeginEpoch::Response::default();
                match reported(&req) {
                    Err(e) => out.error = e,
                    Ok(reported) => {
                        let p = self.params.get();
                        let begun = self.store.begin_epoch(
                            &req.cnc_id,
                            wall_ns(),
                            p.reach_end_x_m,
                            "state_manager",
                            &reported,
                        );
                        match begun {
                            Ok(b) => {
                                tracing::info!(cnc = %req.cnc_id, epoch = b.epoch, actor = %req.actor, reported = reported.len(), settled = b.events.len(), "new epoch");
                                let why = format!(" (CNC {} began epoch {})", req.cnc_id, b.epoch);
                                self.settled(&b.events, &why);
                                for (r, holds) in &b.unrecorded {
                                    self.outcome_unrecorded(&req.cnc_id, r, *holds);
                                }
                                out.accepted = true;
                                out.epoch = b.epoch;
                            }
                            Err(e) => out.error = self.store_failed(&e, None),
                        }
                    }
                }
                let _ = reply.send(out);
            }
        }
    }
}

/// A BeginEpoch request's reported outcomes, checked: a clear error naming
/// the field for a malformed one (the epoch is then not begun).
fn reported(req: &BeginEpoch::Request) -> Result<Vec<Reported>, String> {
    if req.cnc_id.is_empty() {
        return Err("cnc_id is empty".into());
    }
    req.unrecorded
        .iter()
        .enumerate()
        .map(|(k, pr)| {
            let object_id = uuid16(&format!("unrecorded[{k}].object_id"), &pr.object_id.uuid)?;
            let to = after_pick(pr.outcome.value).ok_or_else(|| {
                format!(
                    "unrecorded[{k}].outcome {} is not a PickOutcome",
                    pr.outcome.value
                )
            })?;
            if pr.cnc_id != req.cnc_id {
                return Err(format!(
                    "unrecorded[{k}].cnc_id {:?} is not the caller's {:?}",
                    pr.cnc_id, req.cnc_id
                ));
            }
            Ok(Reported {
                object_id,
                epoch: pr.epoch,
                to,
                reason: pr.error.clone(),
                actor: if req.actor.is_empty() {
                    format!("cnc_{}", req.cnc_id)
                } else {
                    req.actor.clone()
                },
            })
        })
        .collect()
}

pub struct StateNode {
    node: SharedNode,
    gate: ActiveGate,
    params: Params<StateParams>,
    counters: Counters,
    commands: Option<Queue>,
    keeper: Option<std::thread::JoinHandle<()>>,
    snapshots: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

macro_rules! serve {
    ($self:ident, $n:ident, $tx:ident, $service:ident, $name:expr, $variant:ident) => {{
        let mut requests =
            $n.create_service::<$service::Service>($name, crate::kit::qos::busy_service())?;
        let tx = $tx.clone();
        // Up to IN_FLIGHT requests handed on before the first is answered,
        // so that those queued behind a commit can share the next one.
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        $self.tasks.push(tokio::spawn(async move {
            while let Some(req) = requests.next().await {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let (reply, answer) = oneshot::channel();
                if !tx.send(Command::$variant(req.message.clone(), reply)) {
                    return;
                }
                tokio::spawn(async move {
                    if let Ok(resp) = answer.await {
                        crate::kit::call::reply(req, $name, resp);
                    }
                    drop(permit);
                });
            }
        }));
    }};
}

impl StateNode {
    pub fn new(c: &NodeContext<StateParams>) -> Self {
        StateNode {
            node: c.node.clone(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            counters: c.counters.clone(),
            commands: None,
            keeper: None,
            snapshots: None,
            stop: Default::default(),
            tasks: Vec::new(),
        }
    }

    fn stop_services(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    fn close(&mut self) {
        self.stop_services();
        // The store thread stops after the request it is doing; what is
        // queued gets no answer (callers time out and send it again).
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.commands = None;
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        self.stop.store(false, std::sync::atomic::Ordering::Release);
        if let Some((stop, t)) = self.snapshots.take() {
            drop(stop);
            let _ = t.join();
        }
    }
}

impl Drop for StateNode {
    /// On shutdown (SIGTERM) with no cleanup transition first.
    fn drop(&mut self) {
        self.close();
    }
}

impl Steps for StateNode {
    /// Opens the store and starts its thread (the publishers stay closed
    /// until the node is active).
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let mut store = Store::open(std::path::Path::new(&p.database_path))?;
        store.limit_size((p.size_limit_mb * 1e6) as u64)?;
        let mut n = self.node.lock();
        let events = LifecyclePublisher::new(
            n.create_publisher(EVENTS_TOPIC, crate::kit::qos::events())?,
            self.gate.clone(),
        );
        let alerts = Alerts::new(&mut n, "state_manager", self.gate.clone())?;
        drop(n);
        let (tx, rx) = mpsc::channel::<Command>();
        let queue = Queue {
            tx,
            counters: self.counters.clone(),
        };
        let committed_seq = store.last_seq()?;
        if p.snapshot_period_s > 0.0 {
            self.snapshots = Some(snapshot_thread(
                store.path().to_path_buf(),
                &p,
                alerts.clone(),
                self.counters.clone(),
            )?);
        }
        let mut keeper = Keeper {
            committed_seq,
            published_seq: committed_seq.saturating_sub(p.republish_events as u64),
            publish_failing: false,
            stop: self.stop.clone(),
            store,
            params: self.params.clone(),
            gate: self.gate.clone(),
            events,
            alerts,
            counters: self.counters.clone(),
            next_prune_ns: 0,
            prune_more: false,
            size_limit_mb: p.size_limit_mb,
            next_expire_ns: 0,
            disk_full: Latch::default(),
        };
        self.keeper = Some(
            std::thread::Builder::new()
                .name("state-store".into())
                .spawn(move || keeper.run(rx))?,
        );
        self.commands = Some(queue);
        Ok(())
    }
    fn activate(&mut self) -> anyhow::Result<()> {
        let tx = self
            .commands
            .clone()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        // Recovery commits before the first request is taken.
        let (reply, answer) = mpsc::sync_channel(1);
        anyhow::ensure!(
            tx.send(Command::Recover(reply)),
            "the store thread has stopped"
        );
        match answer.recv_timeout(RECOVERY_TIMEOUT) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("recovery failed: {e}"),
            Err(_) => anyhow::bail!("recovery gave no answer within {RECOVERY_TIMEOUT:?}"),
        }
        let mut n = self.node.lock();
        serve!(self, n, tx, RegisterObject, REGISTER_SERVICE, Register);
        serve!(
            self,
            n,
            tx,
            TransitionObject,
            TRANSITION_SERVICE,
            Transition
        );
        serve!(self, n, tx, GetObject, GET_SERVICE, Get);
        serve!(self, n, tx, ListObjects, LIST_SERVICE, List);
        serve!(self, n, tx, ObjectHistory, HISTORY_SERVICE, History);
        serve!(self, n, tx, BeginEpoch, EPOCH_SERVICE, Epoch);
        Ok(())
    }
    fn deactivate(&mut self) -> anyhow::Result<()> {
        self.stop_services();
        Ok(())
    }
    fn release(&mut self) {
        self.close();
    }
}

/// Takes a snapshot every `snapshot_period_s` until `stop` is dropped.
fn snapshot_thread(
    db: std::path::PathBuf,
    p: &StateParams,
    alerts: Alerts,
    counters: Counters,
) -> std::io::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let (dir, keep) = (p.snapshot_folder(), p.snapshot_keep as usize);
    let period = Duration::from_secs_f64(p.snapshot_period_s);
    let t = std::thread::Builder::new()
        .name("state-snapshots".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                match snapshot::take(&db, &dir, keep) {
                    Ok(Some(s)) => {
                        counters.add(SNAPSHOTS, 1);
                        tracing::info!(path = %s.path.display(), last_seq = s.last_seq, bytes = s.bytes, "state_manager: snapshot");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!("state_manager: snapshot: {e}");
                        alerts.raise(
                            m::Alert::WARNING as u8,
                            "state_snapshot_failed",
                            None,
                            e.to_string(),
                        );
                    }
                }
            }
        })?;
    Ok((stop, t))
}

/// The state manager's `main`.
pub fn main() {
    node::main::<StateParams, _, _>("state_manager", "/cell", |c| Ok(StateNode::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_requests_are_refused_naming_the_field() {
        assert_eq!(
            uuid16("object_id", &[1; 15]).unwrap_err(),
            "object_id has 15 bytes; a UUID has 16"
        );
        let mut t = TransitionObject::Request::default();
        t.object_id.uuid = vec![7; 16];
        t.expected_state.id = 1;
        t.new_state.id = 9;
        assert_eq!(
            transition_request(&t).unwrap_err(),
            "new_state 9 is not an object state"
        );
        let mut r = RegisterObject::Request::default();
        r.object_id.uuid = vec![7; 16];
        r.position.x = f64::NAN;
        assert!(registration(&r, 1)
            .unwrap_err()
            .contains("not a finite number"));
    }

    #[test]
    fn reported_outcomes_are_checked_naming_the_field() {
        let result = |id: Vec<u8>, cnc: &str, outcome: u8| {
            let mut pr = m::PickResult {
                cnc_id: cnc.into(),
                epoch: 4,
                outcome: m::PickOutcome { value: outcome },
                error: "lost after the grip".into(),
                ..Default::default()
            };
            pr.object_id.uuid = id;
            pr
        };
        let begin = |unrecorded| BeginEpoch::Request {
            cnc_id: "2".into(),
            actor: String::new(),
            unrecorded,
        };
        let ok = reported(&begin(vec![result(vec![7; 16], "2", 1)])).unwrap();
        assert_eq!(
            ok,
            vec![Reported {
                object_id: [7; 16],
                epoch: 4,
                to: ObjState::Dropped,
                reason: "lost after the grip".into(),
                actor: "cnc_2".into(),
            }]
        );
        let refusals = [
            (
                result(vec![7; 5], "2", 0),
                "unrecorded[1].object_id has 5 bytes; a UUID has 16",
            ),
            (
                result(vec![7; 16], "2", 6),
                "unrecorded[1].outcome 6 is not a PickOutcome",
            ),
            (
                result(vec![7; 16], "3", 0),
                "unrecorded[1].cnc_id \"3\" is not the caller's \"2\"",
            ),
        ];
        for (bad, why) in refusals {
            let req = begin(vec![result(vec![1; 16], "2", 0), bad]);
            assert_eq!(reported(&req).unwrap_err(), why);
        }
        let mut nobody = begin(Vec::new());
        nobody.cnc_id.clear();
        assert_eq!(reported(&nobody).unwrap_err(), "cnc_id is empty");
    }
}
