//! The scheduler node's pure core: every input (tracks, CNC statuses and
//! models, object events, the answers of the state manager and the CNCs,
//! clock ticks) is one [`Input`] at a time `now_s` given by the shell (an
//! injected clock; track positions carry their own stamps), and every
//! decision is an [`Output`] the shell carries out. Nothing here reads a
//! clock or draws a random number, so the same inputs give the same
//! outputs: the shell can log its inputs and a replay of the log gives the
//! same assignments ([`replay`]).
//!
//! - The policy ([`Scheduler`]) decides on each TrackArray and each tick
//!   (at most once per `decide_period_s`),
//!   over the objects the state manager has DETECTED and a confirmed track
//!   follows, for the CNCs that are Active, heard from within
//!   `status_timeout_s`, and whose model (their motion params) is known.
//!   A CNC whose epoch the state manager refuses (it began a new one in
//!   the store, which the CNC has not) is out of service too, until its
//!   status shows another epoch; if that has not come within
//!   `epoch_refused_report_s`, the CNC is reported ([`Output::EpochStale`])
//!   for the manager to re-activate it.
//! - The protocol ([`Dispatcher`]) turns decisions into the compare-and-set,
//!   the goal, revocations and alerts.
//! - At every input each CNC's waiting picks are planned again from when
//!   and where it is really free (its pick in flight may run past its
//!   plan), and one it can no longer make is revoked before its goal goes
//!   out, to be planned first on the other CNCs.
//! - An object the CNCs can no longer reach ends: BYPASSED (its class is
//!   binned nowhere; too uncertain to pick; or no active CNC can reach it
//!   in time) or MISSED (it left the last window unpicked while a CNC that
//!   bins it was out of service).

use super::policy::{CncState, Policy, Scheduler};
use super::protocol::{Command, Dispatcher, ObjectNews, Stage, Timeouts};
use super::reach::{CncModel, Obj, Slot};
use crate::kinematics::Trajectory;
use crate::motion::params::MotionParams;
use crate::state::lifecycle::ObjState;
use hashlink::LinkedHashSet;
use nalgebra::Vector3;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type ObjectId = [u8; 16];

/// A confirmed track as the core takes it (from a TrackArray).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackIn {
    pub id: ObjectId,
    pub x_m: f64,
    pub y_m: f64,
    pub class: String,
    pub confidence: f64,
}

/// One input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// The tracks at their stamp (the camera exposure), every object
    /// moving at the belt's speed.
    Tracks {
        stamp_s: f64,
        belt_mps: f64,
        tracks: Vec<TrackIn>,
    },
    /// A CNC's motion params (read from the node): its model.
    Model {
        params: Box<MotionParams>,
    },
    /// A CNC's status.
    Status {
        cnc: String,
        active: bool,
        epoch: u64,
        at_mm: [f64; 3],
        /// The object whose pick it is carrying out, if any (none in logs
        /// written before it was logged).
        #[serde(default)]
        current: Option<ObjectId>,
    },
    /// An object's state, from `objects/events`, with the event's stamp
    /// (when the state manager accepted it, ns) and `seq`; both 0 if
    /// unknown (as in logs written before they were logged).
    Event {
        id: ObjectId,
        state: u8,
        cnc: String,
        epoch: u64,
        #[serde(default)]
        stamp_ns: i64,
        #[serde(default)]
        seq: u64,
    },
    /// The state manager's answer to an Assign (None: no answer in time).
    AssignAnswer {
        id: ObjectId,
        accepted: Option<bool>,
    },
    /// The CNC's answer to a goal (false: refused, or not sent).
    GoalAnswer {
        id: ObjectId,
        accepted: bool,
    },
    /// The goal's result came.
    GoalDone {
        id: ObjectId,
    },
    /// An Finish was not carried out (to try again).
    FinishFailed {
        id: ObjectId,
    },
    /// The state manager refused an Assign to `cnc` in `epoch` for that
    /// epoch (stale, or none): the store has begun another for the CNC.
    EpochRefused {
        cnc: String,
        epoch: u64,
    },
    Tick,
}

/// One decision for the shell to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Compare-and-set DETECTED → ASSIGNED (then publish the Assignment).
    Assign {
        id: ObjectId,
        cnc: String,
        epoch: u64,
        contact_at_s: f64,
        contact_m: [f64; 3],
        /// The exposure of the frame the decision rests on (the stamp of
        /// the tracks that last placed the object): the Assignment's stamp.
        seen_at_s: f64,
    },
    /// The PickObject goal: the object at `traj.t0_s`, give up after
    /// `deadline_s`.
    SendGoal {
        id: ObjectId,
        cnc: String,
        epoch: u64,
        traj: Trajectory,
        height_m: f64,
        class: String,
        deadline_s: f64,
    },
    /// ASSIGNED → DETECTED.
    Revoke {
        id: ObjectId,
        cnc: String,
        epoch: u64,
        why: String,
    },
    /// DETECTED → `to` (BYPASSED or MISSED).
    Finish {
        id: ObjectId,
        to: u8,
        why: String,
    },
    Alert {
        id: ObjectId,
        what: String,
    },
    /// `cnc` is still Active in `epoch`, which the state manager has
    /// refused since `since_s`: it needs re-activating for a new epoch.
    EpochStale {
        cnc: String,
        epoch: u64,
        since_s: f64,
    },
}

/// One line of an input log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    pub now_s: f64,
    pub input: Input,
}

/// The core's settings (the scheduler's params).
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// The CNCs, in the order of `balance_ratios`.
    pub cnc_ids: Vec<String>,
    pub queue_max: usize,
    pub min_confidence: f64,
    /// Object height by class, m.
    pub heights_m: BTreeMap<String, f64>,
    pub timeouts: Timeouts,
    /// A CNC not heard from this long is out of service, s.
    pub status_timeout_s: f64,
    /// Only picks touching within this are committed, s (the rest are
    /// planned again at the next decision).
    pub commit_horizon_s: f64,
    /// Decisions at most this often, s.
    pub decide_period_s: f64,
    /// A CNC whose epoch the state manager has refused this long, while
    /// its status still shows that epoch, is reported stale, s.
    pub epoch_refused_report_s: f64,
}

#[derive(Debug, Clone, Default)]
struct Cnc {
    model: Option<CncModel>,
    active: bool,
    epoch: u64,
    at_mm: [f64; 3],
    heard_at_s: Option<f64>,
    /// Its epoch the state manager refused, since when, and when it was
    /// last reported.
    refused: Option<Refused>,
}

#[derive(Debug, Clone, Copy)]
struct Refused {
    epoch: u64,
    since_s: f64,
    reported_s: Option<f64>,
}

/// A stale epoch is reported again this often while it lasts, s.
const EPOCH_STALE_REPORT_AGAIN_S: f64 = 30.0;

#[derive(Debug, Clone)]
struct Entry {
    key: u64,
    state: Option<ObjState>,
    /// The last track seen of it (predicted on at the belt's speed once
    /// the tracker drops it, so an object the tracker lost still ends).
    track: Option<(TrackIn, Trajectory)>,
    /// In the latest TrackArray: only such objects are assigned.
    tracked: bool,
    /// The CNC (index) and the pick as planned, while held.
    plan: Option<(usize, Slot)>,
    /// A Finish is out for it.
    finishing: bool,
    /// The latest stamp (ns) and seq among the events applied to it.
    last_event: (i64, u64),
}

/// The scheduler's state.
pub struct Core {
    cfg: Config,
    cncs: Vec<Cnc>,
    /// The policy over the CNCs with a model; `known[j]` is its CNC `j`'s
    /// index in `cnc_ids`.
    sched: Option<Scheduler>,
    known: Vec<usize>,
    dispatcher: Dispatcher,
    objects: BTreeMap<ObjectId, Entry>,
    keys: BTreeMap<u64, ObjectId>,
    next_key: u64,
    /// Objects taken from a CNC that left: assigned again at once, whatever
    /// the horizon.
    urgent: std::collections::HashSet<u64>,
    last_decided_s: Option<f64>,
    /// When tracks last came in.
    last_tracks_s: Option<f64>,
    /// Objects forgotten once finished, latest last (at most
    /// [`FINISHED_KEPT`]): a terminal state is final, so any event about
    /// one of them is old news heard again.
    finished: LinkedHashSet<ObjectId>,
}

/// How many forgotten finished objects the core remembers: over an hour
/// of the cell's arrivals, far longer than the events topic's history
/// (`kit::qos::events`, 1000 events) reaches back.
const FINISHED_KEPT: usize = 10_000;

/// Tracks are stale, and ticks decide, after this many decision periods
/// without them.
const TRACKS_STALE_PERIODS: f64 = 2.0;

impl Core {
    pub fn new(cfg: Config) -> Core {
        let cncs = vec![Cnc::default(); cfg.cnc_ids.len()];
        let dispatcher = Dispatcher::new(cfg.timeouts);
        Core {
            cfg,
            cncs,
            sched: None,
            known: Vec::new(),
            dispatcher,
            objects: BTreeMap::new(),
            keys: BTreeMap::new(),
            next_key: 1,
            urgent: Default::default(),
            last_decided_s: None,
            last_tracks_s: None,
            finished: LinkedHashSet::new(),
        }
    }

    /// Objects held (assigned to a CNC, not yet finished).
    pub fn held(&self) -> usize {
        self.dispatcher.holds().count()
    }

    /// The CNCs whose model is known, by id.
    pub fn models(&self) -> Vec<&str> {
        self.known
            .iter()
            .map(|&i| self.cfg.cnc_ids[i].as_str())
            .collect()
    }

    fn entry(&mut self, id: ObjectId) -> &mut Entry {
        let next = &mut self.next_key;
        let keys = &mut self.keys;
        self.objects.entry(id).or_insert_with(|| {
            let key = *next;
            *next += 1;
            keys.insert(key, id);
            Entry {
                key,
                state: None,
                track: None,
                tracked: false,
                plan: None,
                finishing: false,
                last_event: (0, 0),
            }
        })
    }

    fn remember_finished(&mut self, id: ObjectId) {
        self.finished.insert(id);
        while self.finished.len() > FINISHED_KEPT {
            self.finished.pop_front();
        }
    }

    fn key_of(&self, id: &ObjectId) -> Option<u64> {
        self.objects.get(id).map(|e| e.key)
    }

    /// One input at `now_s`: the decisions it leads to.
    pub fn step(&mut self, now_s: f64, input: Input) -> Vec<Output> {
        let mut cmds = Vec::new();
        let mut decide = false;
        match input {
            Input::Tracks {
                stamp_s,
                belt_mps,
                tracks,
            } => {
                for e in self.objects.values_mut() {
                    e.tracked = false;
                }
                for t in tracks {
                    let traj = Trajectory {
                        x_m: t.x_m,
                        y_m: t.y_m,
                        t0_s: stamp_s,
                        vx_mps: belt_mps,
                    };
                    let e = self.entry(t.id);
                    e.track = Some((t, traj));
                    e.tracked = true;
                }
                // Objects no track follows any more are forgotten once
                // finished (or if the state manager never had them).
                let gone: Vec<ObjectId> = self
                    .objects
                    .iter()
                    .filter(|(_, e)| !e.tracked && e.state.is_none_or(ObjState::is_terminal))
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    if let Some(e) = self.objects.remove(&id) {
                        self.keys.remove(&e.key);
                        if e.state.is_some_and(ObjState::is_terminal) {
                            self.remember_finished(id);
                        }
                    }
                }
                self.last_tracks_s = Some(now_s);
                decide = true;
            }
            Input::Model { params } => {
                if let Some(i) = self.cfg.cnc_ids.iter().position(|c| *c == params.cnc_id) {
                    self.cncs[i].model = Some(CncModel::from_params(&params));
                    self.rebuild();
                }
            }
            Input::Status {
                cnc,
                active,
                epoch,
                at_mm,
                current,
            } => {
                let on = current.and_then(|id| self.key_of(&id));
                self.dispatcher.cnc_on(&cnc, on);
                if let Some(i) = self.cfg.cnc_ids.iter().position(|c| *c == cnc) {
                    let c = &mut self.cncs[i];
                    c.active = active;
                    c.epoch = epoch;
                    c.at_mm = at_mm;
                    c.heard_at_s = Some(now_s);
                    if c.refused.is_some_and(|r| r.epoch != epoch) {
                        c.refused = None;
                    }
                }
            }
            Input::Event {
                id,
                state,
                cnc,
                epoch,
                stamp_ns,
                seq,
            } => {
                let Some(s) = ObjState::from_id(state) else {
                    return Vec::new();
                };
                // Events heard again (the topic's history, delivered anew
                // to a re-activated scheduler or republished by a restarted
                // state manager) are old news: applied again, a DETECTED
                // would free an object in flight and its ASSIGNED send a
                // second goal for it. An object's events are accepted one
                // after another: one whose seq and stamp are both no later
                // than those of the latest applied is heard again. (Either
                // alone would do but for a store restored from a snapshot,
                // which numbers its new events again, or a wall clock
                // stepped back, which stamps them earlier.)
                let heard_again =
                    |e: &Entry| seq > 0 && seq <= e.last_event.1 && stamp_ns <= e.last_event.0;
                if self.finished.contains(&id) || self.objects.get(&id).is_some_and(heard_again) {
                    return Vec::new();
                }
                let e = self.entry(id);
                e.state = Some(s);
                if seq > 0 {
                    e.last_event = (e.last_event.0.max(stamp_ns), e.last_event.1.max(seq));
                }
                let key = e.key;
                let news = match s {
                    ObjState::Detected => ObjectNews::Detected,
                    ObjState::Assigned => ObjectNews::Assigned { cnc, epoch },
                    ObjState::Picking => ObjectNews::Picking,
                    _ => ObjectNews::Finished,
                };
                if s.is_terminal() {
                    e.plan = None;
                    e.finishing = false;
                    self.urgent.remove(&key);
                    if let Some(sched) = &mut self.sched {
                        sched.forget(key);
                    }
                }
                self.dispatcher.object(key, news, now_s);
                self.drop_stale_plans();
            }
            Input::AssignAnswer { id, accepted } => {
                if let Some(key) = self.key_of(&id) {
                    cmds.extend(match accepted {
                        Some(a) => self.dispatcher.assign_answered(key, a, now_s),
                        None => self.dispatcher.assign_unknown(key, now_s),
                    });
                }
            }
            Input::GoalAnswer { id, accepted } => {
                if let Some(key) = self.key_of(&id) {
                    cmds.extend(self.dispatcher.goal_answered(key, accepted, now_s));
                }
            }
            Input::GoalDone { id } => {
                if let Some(key) = self.key_of(&id) {
                    cmds.extend(self.dispatcher.goal_done(key, now_s));
                }
            }
            Input::FinishFailed { id } => {
                if let Some(e) = self.objects.get_mut(&id) {
                    e.finishing = false;
                }
            }
            Input::EpochRefused { cnc, epoch } => {
                if let Some(c) = self.cfg.cnc_ids.iter().position(|c| *c == cnc) {
                    let c = &mut self.cncs[c];
                    // Only while its status still shows that epoch, and
                    // from the first refusal.
                    if c.epoch == epoch && c.refused.is_none_or(|r| r.epoch != epoch) {
                        c.refused = Some(Refused {
                            epoch,
                            since_s: now_s,
                            reported_s: None,
                        });
                    }
                }
            }
            // Ticks decide only while no tracks come (the camera or the
            // tracker is down): otherwise every decision rests on the frame
            // that just arrived, and an assignment follows its exposure by
            // the pipeline's latency only, not by a wait for the next tick.
            Input::Tick => {
                decide = self
                    .last_tracks_s
                    .is_none_or(|t| now_s - t >= TRACKS_STALE_PERIODS * self.cfg.decide_period_s)
            }
        }
        // CNCs out of service or in a new epoch lose what they hold unstarted.
        for i in 0..self.cncs.len() {
            let (active, epoch) = (self.in_service(i, now_s), self.cncs[i].epoch);
            let id = self.cfg.cnc_ids[i].clone();
            let lost = self.dispatcher.cnc(&id, active, epoch, now_s);
            for c in &lost {
                if let Command::Revoke { key, .. } = c {
                    self.urgent.insert(*key);
                }
            }
            cmds.extend(lost);
        }
        cmds.extend(self.replan(now_s));
        cmds.extend(self.dispatcher.tick(now_s));
        self.drop_stale_plans();
        let mut out: Vec<Output> = self.report_stale_epochs(now_s);
        // At most one decision per `decide_period_s`: a lookahead over many
        // objects costs more than a frame period.
        if decide
            && self
                .last_decided_s
                .is_none_or(|t| now_s - t >= self.cfg.decide_period_s)
        {
            self.last_decided_s = Some(now_s);
            out.extend(self.finish_unreachable(now_s));
            cmds.extend(self.decide(now_s));
        }
        let mut all = self.outputs(cmds, now_s);
        all.extend(out);
        all
    }

    fn outputs(&mut self, cmds: Vec<Command>, now_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        let mut todo: std::collections::VecDeque<Command> = cmds.into();
        while let Some(c) = todo.pop_front() {
            match self.output(&c) {
                Some(o) => out.push(o),
                // A goal that cannot go out (its track ended) counts as
                // refused: the protocol revokes it.
                None => {
                    if let Command::SendGoal { key, .. } = c {
                        todo.extend(self.dispatcher.goal_answered(key, false, now_s));
                    }
                }
            }
        }
        out
    }

    /// Each CNC's waiting picks planned again from where it really is:
    /// from the end of its pick in flight as planned, or from now if that
    /// pick runs past its plan; from now, where its status puts it, if it
    /// has none. A pick planned after one that ran late comes later too,
    /// and one that no longer fits the object's window is revoked before
    /// its goal goes out (the CNC would refuse it, and the refusal back the
    /// object off), to be given at once to a CNC that can still take it.
    /// Picks that ran early bring the next ones forward.
    fn replan(&mut self, now_s: f64) -> Vec<Command> {
        let mut out = Vec::new();
        for i in 0..self.cncs.len() {
            let Some(model) = self.cncs[i].model.clone() else {
                continue;
            };
            if !self.in_service(i, now_s) {
                continue;
            }
            let cnc = self.cfg.cnc_ids[i].clone();
            // Adopted from a predecessor: its pick's plan is unknown.
            let Some((mut free_at_s, mut at_mm)) = self.free_from(i, now_s) else {
                continue;
            };
            for (key, stage) in self.dispatcher.waiting(&cnc) {
                let Some(id) = self.keys.get(&key).copied() else {
                    continue;
                };
                let Some(e) = self.objects.get(&id) else {
                    continue;
                };
                let (Some((j, planned)), Some(o)) = (e.plan, self.last_seen(e)) else {
                    continue;
                };
                if j != i {
                    continue;
                }
                match model.slot(&o, free_at_s, at_mm) {
                    Some(s) => {
                        if s != planned {
                            self.dispatcher.replanned(key, s.contact_at_s);
                            if let Some(e) = self.objects.get_mut(&id) {
                                e.plan = Some((i, s));
                            }
                        }
                        free_at_s = s.done_at_s;
                        at_mm = s.end_mm;
                    }
                    // Still being assigned: revoked once queued, if still
                    // out of reach; the picks after it plan around it.
                    None if stage != Stage::Queued => {
                        free_at_s = planned.done_at_s.max(free_at_s);
                        at_mm = planned.end_mm;
                    }
                    None => {
                        let why = format!(
                            "cnc_{cnc} can no longer reach it in time: it is free {:.3} s \
                             from now, and the contact was planned {:.3} s from now",
                            free_at_s - now_s,
                            planned.contact_at_s - now_s
                        );
                        let revoked = self.dispatcher.unreachable(key, &why, now_s);
                        if !revoked.is_empty() {
                            self.urgent.insert(key);
                            if let Some(e) = self.objects.get_mut(&id) {
                                e.plan = None;
                            }
                        }
                        out.extend(revoked);
                    }
                }
            }
        }
        out
    }

    /// When and where CNC `i` is free of the pick it has in flight: as
    /// planned, or from now if that pick runs past its plan; now, where its
    /// status puts it, if it has none. None if the pick in flight has no
    /// plan (adopted from a predecessor).
    fn free_from(&self, i: usize, now_s: f64) -> Option<(f64, Vector3<f64>)> {
        match self.dispatcher.on_goal(&self.cfg.cnc_ids[i]) {
            None => Some((now_s, Vector3::from(self.cncs[i].at_mm))),
            Some(k) => match self.objects.get(self.keys.get(&k)?)?.plan {
                Some((j, s)) if j == i => Some((s.done_at_s.max(now_s), s.end_mm)),
                _ => None,
            },
        }
    }

    fn in_service(&self, i: usize, now_s: f64) -> bool {
        let c = &self.cncs[i];
        c.active
            && c.epoch > 0
            && c.model.is_some()
            && c.heard_at_s
                .is_some_and(|t| now_s - t <= self.cfg.status_timeout_s)
            && c.refused.is_none_or(|r| r.epoch != c.epoch)
    }

    /// CNCs still Active in an epoch the state manager has refused for
    /// `epoch_refused_report_s`: a re-activation (and so a new epoch) was
    /// missed. A CNC that is re-activated as it should be shows its new
    /// epoch within a status period or two, and is never reported.
    fn report_stale_epochs(&mut self, now_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        for (c, id) in self.cncs.iter_mut().zip(&self.cfg.cnc_ids) {
            let Some(r) = c.refused.as_mut() else {
                continue;
            };
            let due = now_s - r.since_s >= self.cfg.epoch_refused_report_s
                && r.reported_s
                    .is_none_or(|t| now_s - t >= EPOCH_STALE_REPORT_AGAIN_S);
            if c.active && c.epoch == r.epoch && due {
                r.reported_s = Some(now_s);
                out.push(Output::EpochStale {
                    cnc: id.clone(),
                    epoch: r.epoch,
                    since_s: r.since_s,
                });
            }
        }
        out
    }

    fn rebuild(&mut self) {
        self.known = (0..self.cncs.len())
            .filter(|&i| self.cncs[i].model.is_some())
            .collect();
        let models: Vec<CncModel> = self
            .known
            .iter()
            .filter_map(|&i| self.cncs[i].model.clone())
            .collect();
        let policy = match &self.cfg.policy {
            Policy::Balance { ratios } => Policy::Balance {
                ratios: self
                    .known
                    .iter()
                    .map(|&i| ratios.get(i).copied().unwrap_or(1.0))
                    .collect(),
            },
            p => p.clone(),
        };
        self.sched = Some(Scheduler::new(
            policy,
            models,
            self.cfg.queue_max,
            self.cfg.min_confidence,
        ));
    }

    /// Plans of objects no longer held.
    fn drop_stale_plans(&mut self) {
        let held: std::collections::BTreeSet<u64> =
            self.dispatcher.holds().map(|(k, _, _)| k).collect();
        for e in self.objects.values_mut() {
            if e.plan.is_some() && !held.contains(&e.key) {
                e.plan = None;
            }
        }
    }

    /// The object as the policy takes it, while a track follows it.
    fn obj(&self, e: &Entry) -> Option<Obj> {
        if !e.tracked {
            return None;
        }
        self.last_seen(e)
    }

    /// The object as last seen, predicted on.
    fn last_seen(&self, e: &Entry) -> Option<Obj> {
        let (t, traj) = e.track.as_ref()?;
        Some(Obj {
            key: e.key,
            class: t.class.clone(),
            traj: *traj,
            height_m: *self.cfg.heights_m.get(&t.class)?,
            confidence: t.confidence,
        })
    }

    /// The CNCs as the policy sees them (scheduler order).
    fn cnc_states(&self, now_s: f64) -> Vec<CncState> {
        self.known
            .iter()
            .map(|&i| {
                let (free_at_s, at_mm) = self
                    .free_from(i, now_s)
                    .unwrap_or((now_s, Vector3::from(self.cncs[i].at_mm)));
                let mut s = CncState {
                    active: self.in_service(i, now_s),
                    free_at_s,
                    at_mm,
                    queued: self.dispatcher.queued(&self.cfg.cnc_ids[i]),
                };
                for e in self.objects.values() {
                    if let Some((j, slot)) = e.plan {
                        if j == i && slot.done_at_s > s.free_at_s {
                            s.free_at_s = slot.done_at_s;
                            s.at_mm = slot.end_mm;
                        }
                    }
                }
                s
            })
            .collect()
    }

    /// DETECTED objects nobody holds that no CNC will pick: BYPASSED or
    /// MISSED, with the reason.
    fn finish_unreachable(&mut self, now_s: f64) -> Vec<Output> {
        let Some(sched) = &self.sched else {
            return Vec::new();
        };
        // Until every CNC's model is known, nobody can say.
        if self.known.len() < self.cncs.len() {
            return Vec::new();
        }
        let cncs = self.cnc_states(now_s);
        let all_active = cncs.iter().all(|c| c.active);
        let mut out = Vec::new();
        for (id, e) in &self.objects {
            if e.state != Some(ObjState::Detected)
                || e.finishing
                || !self.dispatcher.assignable(e.key, f64::INFINITY)
            {
                continue;
            }
            let Some((t, traj)) = &e.track else { continue };
            let binned: Vec<usize> = (0..sched.models.len())
                .filter(|&j| sched.models[j].bin(&t.class).is_some())
                .collect();
            let why = if binned.is_empty() {
                Some((
                    ObjState::Bypassed,
                    format!("class {:?} is binned by no CNC", t.class),
                ))
            } else if binned.iter().all(|&j| {
                sched.models[j]
                    .window(traj)
                    .is_some_and(|(_, leave)| leave < now_s)
            }) {
                Some(if t.confidence < self.cfg.min_confidence {
                    (
                        ObjState::Bypassed,
                        format!(
                            "confidence {:.2} stayed below min_confidence {:.2}",
                            t.confidence, self.cfg.min_confidence
                        ),
                    )
                } else {
                    (
                        ObjState::Missed,
                        "left the last reach window unpicked".to_string(),
                    )
                })
            } else if all_active && t.confidence >= self.cfg.min_confidence {
                self.obj(e).and_then(|o| {
                    sched
                        .bypass(&cncs, &[o], now_s)
                        .into_iter()
                        .next()
                        .map(|(_, why)| (ObjState::Bypassed, why))
                })
            } else {
                None
            };
            if let Some((to, why)) = why {
                out.push(Output::Finish {
                    id: *id,
                    to: to.id(),
                    why,
                });
            }
        }
        for o in &out {
            if let Output::Finish { id, .. } = o {
                if let Some(e) = self.objects.get_mut(id) {
                    e.finishing = true;
                }
            }
        }
        out
    }

    fn decide(&mut self, now_s: f64) -> Vec<Command> {
        if self.sched.is_none() {
            return Vec::new();
        }
        let mut cncs = self.cnc_states(now_s);
        let objs: Vec<Obj> = self
            .objects
            .values()
            .filter(|e| {
                e.state == Some(ObjState::Detected)
                    && !e.finishing
                    && self.dispatcher.assignable(e.key, now_s)
            })
            .filter_map(|e| self.obj(e))
            .collect();
        if objs.is_empty() {
            return Vec::new();
        }
        let Some(sched) = &mut self.sched else {
            return Vec::new();
        };
        // Objects taken from a CNC that left go first, whatever the
        // horizon; then the rest, around them.
        let until_s = now_s + self.cfg.commit_horizon_s;
        let (first, rest): (Vec<Obj>, Vec<Obj>) =
            objs.into_iter().partition(|o| self.urgent.contains(&o.key));
        let mut decisions = Vec::new();
        for (batch, urgent) in [(first, self.urgent.clone()), (rest, Default::default())] {
            if batch.is_empty() {
                continue;
            }
            let made = sched.decide_until(&cncs, &batch, until_s, urgent);
            for d in &made {
                let c = &mut cncs[d.cnc];
                c.free_at_s = d.slot.done_at_s;
                c.at_mm = d.slot.end_mm;
                c.queued += 1;
            }
            decisions.extend(made);
        }
        let mut out = Vec::new();
        for d in decisions {
            let i = self.known[d.cnc];
            let cnc = self.cfg.cnc_ids[i].clone();
            let epoch = self.cncs[i].epoch;
            let Some(id) = self.keys.get(&d.key).copied() else {
                continue;
            };
            let cmds = self
                .dispatcher
                .assign(d.key, &cnc, epoch, d.slot.contact_at_s, now_s);
            if !cmds.is_empty() {
                self.urgent.remove(&d.key);
                if let Some(e) = self.objects.get_mut(&id) {
                    e.plan = Some((i, d.slot));
                }
            }
            out.extend(cmds);
        }
        out
    }

    fn output(&self, c: &Command) -> Option<Output> {
        Some(match c.clone() {
            Command::Assign { key, cnc, epoch } => {
                let id = *self.keys.get(&key)?;
                let e = self.objects.get(&id)?;
                let (i, slot) = e.plan?;
                let (_, traj) = e.track.as_ref()?;
                let model = self.cncs[i].model.as_ref()?;
                let h = self.obj(e)?.height_m;
                Output::Assign {
                    id,
                    cnc,
                    epoch,
                    seen_at_s: traj.t0_s,
                    contact_at_s: slot.contact_at_s,
                    contact_m: [
                        traj.x_at(slot.contact_at_s).min(model.picker.reach_x_m().1),
                        traj.y_m,
                        h,
                    ],
                }
            }
            Command::SendGoal { key, cnc, epoch } => {
                let id = *self.keys.get(&key)?;
                let o = self.obj(self.objects.get(&id)?)?;
                let i = self.cfg.cnc_ids.iter().position(|c| *c == cnc)?;
                let deadline_s = self.cncs[i]
                    .model
                    .as_ref()
                    .and_then(|m| m.window(&o.traj))
                    .map_or(0.0, |w| w.1);
                Output::SendGoal {
                    id,
                    cnc,
                    epoch,
                    traj: o.traj,
                    height_m: o.height_m,
                    class: o.class,
                    deadline_s,
                }
            }
            Command::Revoke {
                key,
                cnc,
                epoch,
                why,
            } => Output::Revoke {
                id: *self.keys.get(&key)?,
                cnc,
                epoch,
                why,
            },
            Command::Alert { key, what } => Output::Alert {
                id: *self.keys.get(&key)?,
                what,
            },
        })
    }
}

/// The outputs a fresh core gives for a logged run.
pub fn replay(cfg: Config, log: &[Logged]) -> Vec<Output> {
    let mut core = Core::new(cfg);
    log.iter()
        .flat_map(|l| core.step(l.now_s, l.input.clone()))
        .collect()
}
