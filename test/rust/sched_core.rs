//! The scheduler node's core on a fake clock, against a stand-in state
//! manager (compare-and-set on each object's state, as the real one) and
//! stand-in CNCs that accept goals, start and finish picks: CNC 1 dies
//! mid-run (its statuses stop, its goals go unanswered); what it held and
//! had not started is revoked within 1 s and goes to CNC 2, nothing stays
//! ASSIGNED, no object is picked twice, and the input log replays to the
//! same decisions.

use cncpick::motion::params::MotionParams;
use cncpick::sched::core::{replay, Config, Core, Input, Logged, ObjectId, Output, TrackIn};
use cncpick::sched::policy::Policy;
use cncpick::sched::protocol::Timeouts;
use cncpick::state::lifecycle::ObjState;
use std::collections::BTreeMap;

const BELT_MPS: f64 = 0.2;
/// Where the stand-in CNCs' statuses put their gantries, machine mm.
const AT_MM: [f64; 3] = [-300.0, -375.0, -70.0];
const CLASSES: [(&str, f64); 3] = [("red_box", 0.04), ("green_disc", 0.02), ("blue_bar", 0.03)];

fn cnc_params(id: &str, origin_x_m: f64) -> MotionParams {
    MotionParams {
        cnc_id: id.into(),
        origin_x_m,
        reach_x_min_m: origin_x_m - 0.6,
        reach_x_max_m: origin_x_m,
        bin_classes: CLASSES.iter().map(|c| c.0.to_string()).collect(),
        bin_x_m: vec![origin_x_m - 0.3; 3],
        bin_y_m: vec![0.68; 3],
        ..MotionParams::default()
    }
}

fn config(policy: Policy) -> Config {
    Config {
        policy,
        cnc_ids: vec!["1".into(), "2".into()],
        queue_max: 3,
        min_confidence: 0.5,
        heights_m: CLASSES.iter().map(|(c, h)| (c.to_string(), *h)).collect(),
        timeouts: Timeouts::default(),
        status_timeout_s: 0.5,
        commit_horizon_s: 4.0,
        decide_period_s: 0.05,
        epoch_refused_report_s: 3.0,
    }
}

fn id_of(k: u64) -> ObjectId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&k.to_le_bytes());
    id
}

enum Due {
    In(Input),
    /// The CNC starts picking (ASSIGNED → PICKING).
    Start(ObjectId, String),
    /// The pick ends (PICKED), and the goal's result comes.
    End(ObjectId, String),
}

/// The stand-in world: objects on the belt, the state manager's states,
/// CNCs that pick (unless dead), and what is due later.
struct Cell {
    core: Core,
    now: f64,
    log: Vec<Logged>,
    /// Every output, with its time.
    outputs: Vec<(f64, Output)>,
    /// Object: its arrival time, lane y, class.
    objects: BTreeMap<ObjectId, (f64, f64, &'static str)>,
    /// Object: state, holder.
    states: BTreeMap<ObjectId, (ObjState, String)>,
    /// Every transition: time, object, from, to, CNC.
    history: Vec<(f64, ObjectId, ObjState, ObjState, String)>,
    due: Vec<(f64, Due)>,
    dead: Vec<String>,
    /// Objects the tracker has lost (no longer in the tracks).
    lost: Vec<ObjectId>,
    /// From then on no tracks come (the camera is down).
    blind_from_s: f64,
    /// The state manager's last event seq, and every event (the topic's
    /// history).
    seq: u64,
    events: Vec<Input>,
    /// Objects arrived so far, and when the next one comes.
    arrived: u64,
    next_arrival_s: f64,
    /// Each CNC's epoch in the store, and as its status shows it.
    store_epochs: BTreeMap<String, u64>,
    cnc_epochs: BTreeMap<String, u64>,
    /// A stale epoch reported re-activates the CNC (as the manager does).
    reactivate_reported: bool,
    /// What each CNC is carrying out (it refuses other goals meanwhile),
    /// and for which scheduler process (`process`): only that one hears
    /// the goal's end.
    busy: BTreeMap<String, (ObjectId, u32)>,
    process: u32,
    /// How long each CNC's picks take, s.
    pick_s: BTreeMap<String, f64>,
    /// Goals refused because the CNC could not reach the object in time
    /// (the motion controller's own check): time, object, CNC.
    out_of_reach: Vec<(f64, ObjectId, String)>,
}

impl Cell {
    fn new(policy: Policy) -> Cell {
        Cell {
            core: Core::new(config(policy)),
            now: 0.0,
            log: Vec::new(),
            outputs: Vec::new(),
            objects: BTreeMap::new(),
            states: BTreeMap::new(),
            history: Vec::new(),
            due: Vec::new(),
            dead: Vec::new(),
            lost: Vec::new(),
            blind_from_s: f64::INFINITY,
            seq: 0,
            events: Vec::new(),
            arrived: 0,
            next_arrival_s: 0.5,
            store_epochs: [("1".into(), 1), ("2".into(), 1)].into(),
            cnc_epochs: [("1".into(), 1), ("2".into(), 1)].into(),
            reactivate_reported: false,
            busy: BTreeMap::new(),
            process: 0,
            pick_s: [("1".into(), 1.0), ("2".into(), 1.0)].into(),
            out_of_reach: Vec::new(),
        }
    }

    /// A cell whose core has both CNCs' models.
    fn with_models(policy: Policy) -> Cell {
        let mut cell = Cell::new(policy);
        for m in models() {
            cell.feed(m);
        }
        cell
    }

    /// The scheduler process restarts: a fresh core, which hears no answer
    /// to the old one's requests, then the events topic's history (at
    /// once, as transient_local delivers it) and the CNCs' models; their
    /// statuses come on their own period.
    fn restart_scheduler(&mut self, policy: Policy) {
        self.core = Core::new(config(policy));
        self.process += 1;
        self.due.retain(|(_, d)| {
            matches!(
                d,
                Due::In(Input::Event { .. }) | Due::Start(..) | Due::End(..)
            )
        });
        for e in self.events.clone() {
            self.feed(e);
        }
        for m in models() {
            self.feed(m);
        }
    }

    /// The goal `cnc` carries out has ended: it is free, and the process
    /// that sent it hears so.
    fn goal_ended(&mut self, id: ObjectId, cnc: &str) {
        if let Some((_, process)) = self.busy.remove(cnc) {
            if process == self.process {
                self.later(0.003, Due::In(Input::GoalDone { id }));
            }
        }
    }

    /// Every ASSIGNED object in the store, and its holder.
    fn assigned(&self) -> Vec<(ObjectId, String)> {
        self.states
            .iter()
            .filter(|(_, s)| s.0 == ObjState::Assigned)
            .map(|(id, s)| (*id, s.1.clone()))
            .collect()
    }

    /// The store revokes every assignment (ASSIGNED → DETECTED), as the
    /// state manager's recovery and a new epoch do: which, and to whom.
    fn revoke_all_assigned(&mut self) -> Vec<(ObjectId, String)> {
        let assigned = self.assigned();
        for (id, cnc) in &assigned {
            assert!(self.cas(*id, ObjState::Assigned, ObjState::Detected, cnc));
        }
        assigned
    }

    /// Once the belt has emptied, no object is ASSIGNED or PICKING.
    fn assert_nothing_held(&self) {
        let stuck: Vec<_> = self
            .states
            .iter()
            .filter(|(_, s)| matches!(s.0, ObjState::Assigned | ObjState::Picking))
            .collect();
        assert!(stuck.is_empty(), "left held: {stuck:?}");
    }

    /// No object's pick began twice.
    fn assert_none_started_twice(&self) {
        let mut picking: BTreeMap<ObjectId, usize> = BTreeMap::new();
        for h in &self.history {
            if h.3 == ObjState::Picking {
                *picking.entry(h.1).or_default() += 1;
            }
        }
        let twice: Vec<_> = picking.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "started twice: {twice:?}");
    }

    /// The CNC begins a new epoch (its activation, which ends the goal it
    /// was carrying out): in the store, then in its status.
    fn begin_epoch(&mut self, cnc: &str) {
        let e = self.store_epochs.entry(cnc.into()).or_default();
        *e += 1;
        self.cnc_epochs.insert(cnc.into(), *e);
        if let Some((id, _)) = self.busy.get(cnc).copied() {
            self.goal_ended(id, cnc);
        }
    }

    fn feed(&mut self, input: Input) {
        self.log.push(Logged {
            now_s: self.now,
            input: input.clone(),
        });
        for o in self.core.step(self.now, input) {
            self.outputs.push((self.now, o.clone()));
            self.carry_out(o);
        }
    }

    fn later(&mut self, after_s: f64, d: Due) {
        self.due.push((self.now + after_s, d));
    }

    /// The state manager's compare-and-set; the event follows 2 ms later.
    fn cas(&mut self, id: ObjectId, from: ObjState, to: ObjState, cnc: &str) -> bool {
        let Some((s, holder)) = self.states.get(&id).cloned() else {
            return false;
        };
        let held = matches!(s, ObjState::Assigned | ObjState::Picking);
        if s != from || (held && holder != cnc) {
            return false;
        }
        let holder = if matches!(to, ObjState::Assigned | ObjState::Picking) {
            cnc.to_string()
        } else {
            String::new()
        };
        self.states.insert(id, (to, holder));
        self.history.push((self.now, id, from, to, cnc.to_string()));
        self.publish(id, to, cnc, 1);
        true
    }

    /// The state manager's event for a transition it accepted now: heard
    /// 2 ms later, and kept in the topic's history.
    fn publish(&mut self, id: ObjectId, to: ObjState, cnc: &str, epoch: u64) {
        self.seq += 1;
        let e = Input::Event {
            id,
            state: to.id(),
            cnc: cnc.into(),
            epoch,
            stamp_ns: (self.now * 1e9).round() as i64,
            seq: self.seq,
        };
        self.events.push(e.clone());
        self.later(0.002, Due::In(e));
    }

    fn carry_out(&mut self, o: Output) {
        match o {
            Output::Assign { id, cnc, epoch, .. } => {
                // A stale epoch is refused with the object still DETECTED,
                // which the shell reports.
                if self.store_epochs.get(&cnc) != Some(&epoch) {
                    self.later(0.004, Due::In(Input::EpochRefused { cnc, epoch }));
                    self.later(
                        0.004,
                        Due::In(Input::AssignAnswer {
                            id,
                            accepted: Some(false),
                        }),
                    );
                    return;
                }
                let ok = self.cas(id, ObjState::Detected, ObjState::Assigned, &cnc);
                self.later(
                    0.004,
                    Due::In(Input::AssignAnswer {
                        id,
                        accepted: Some(ok),
                    }),
                );
            }
            Output::SendGoal {
                id,
                cnc,
                traj,
                height_m,
                ..
            } => {
                if self.dead.contains(&cnc) {
                    return; // no answer: the goal times out
                }
                // Busy with another pick, or (as the motion controller
                // checks) the object out of reach from where the gantry
                // is now: refused.
                let reach = cnc_params(&cnc, if cnc == "1" { 2.6 } else { 3.4 })
                    .picker()
                    .intercept(&traj, height_m, AT_MM.into(), self.now);
                if reach.is_err() {
                    self.out_of_reach.push((self.now, id, cnc.clone()));
                }
                if self.busy.contains_key(&cnc) || reach.is_err() {
                    self.later(
                        0.005,
                        Due::In(Input::GoalAnswer {
                            id,
                            accepted: false,
                        }),
                    );
                    return;
                }
                self.busy.insert(cnc.clone(), (id, self.process));
                self.later(0.005, Due::In(Input::GoalAnswer { id, accepted: true }));
                // The CNC starts as the object enters its window.
                let x_min = if cnc == "1" { 2.0 } else { 2.8 };
                let start = traj.t0_s + (x_min - traj.x_m) / traj.vx_mps;
                self.due
                    .push((start.max(self.now + 0.1), Due::Start(id, cnc)));
            }
            Output::Revoke { id, cnc, .. } => {
                self.cas(id, ObjState::Assigned, ObjState::Detected, &cnc);
            }
            Output::Finish { id, to, .. } => {
                let to = ObjState::from_id(to).expect("a state");
                self.cas(id, ObjState::Detected, to, "");
            }
            Output::Alert { .. } => {}
            Output::EpochStale { cnc, .. } => {
                if self.reactivate_reported {
                    self.begin_epoch(&cnc);
                }
            }
        }
    }

    fn world(&mut self, d: Due) {
        match d {
            Due::In(i) => self.feed(i),
            Due::Start(id, cnc) if !self.dead.contains(&cnc) => {
                if self.cas(id, ObjState::Assigned, ObjState::Picking, &cnc) {
                    self.later(self.pick_s[&cnc], Due::End(id, cnc));
                } else {
                    // No longer its to pick: the goal ends.
                    self.goal_ended(id, &cnc);
                }
            }
            Due::End(id, cnc) if !self.dead.contains(&cnc) => {
                self.cas(id, ObjState::Picking, ObjState::Picked, &cnc);
                self.goal_ended(id, &cnc);
            }
            _ => {}
        }
    }

    fn tracks(&self) -> Input {
        let tracks = self
            .objects
            .iter()
            .filter(|(id, _)| {
                !matches!(
                    self.states.get(*id).map(|s| s.0),
                    Some(ObjState::Picked | ObjState::Picking)
                )
            })
            .filter_map(|(id, &(t0, y, class))| {
                let x = 0.5 + BELT_MPS * (self.now - t0);
                // A lost object drops out of the tracks past x 1.2 m.
                let lost = self.lost.contains(id) && x > 1.2;
                (x < 4.0 && !lost).then(|| TrackIn {
                    id: *id,
                    x_m: x,
                    y_m: y,
                    class: class.into(),
                    confidence: 0.9,
                })
            })
            .collect();
        Input::Tracks {
            stamp_s: self.now,
            belt_mps: BELT_MPS,
            tracks,
        }
    }

    /// Runs to `until_s` in 1 ms steps: an object every `every_s` until
    /// 16 s before the end (registered DETECTED as it arrives), tracks at
    /// 30 Hz, statuses of live CNCs at 10 Hz, ticks at 20 Hz; `kill` kills
    /// a CNC at a time.
    fn run(&mut self, until_s: f64, every_s: f64, kill: Option<(f64, &str)>) {
        self.run_arriving(until_s, every_s, until_s - 16.0, kill)
    }

    /// As [`Cell::run`], with arrivals until `arrivals_until_s`.
    fn run_arriving(
        &mut self,
        until_s: f64,
        every_s: f64,
        arrivals_until_s: f64,
        kill: Option<(f64, &str)>,
    ) {
        let ms = |t: f64| (t * 1000.0).round() as u64;
        while self.now < until_s {
            let step = ms(self.now);
            if let Some((at, cnc)) = kill {
                if step == ms(at) {
                    self.dead.push(cnc.into());
                }
            }
            // Arrivals stop 16 s before the end: the belt empties.
            if self.now >= self.next_arrival_s && self.now < arrivals_until_s {
                self.arrived += 1;
                let k = self.arrived;
                self.next_arrival_s += every_s;
                let id = id_of(k);
                let lane = (k * 7 % 4) as f64;
                self.objects.insert(
                    id,
                    (self.now, 0.075 + 0.15 * lane, CLASSES[(k % 3) as usize].0),
                );
                self.states.insert(id, (ObjState::Detected, String::new()));
                self.publish(id, ObjState::Detected, "", 0);
            }
            let mut now_due: Vec<Due> = Vec::new();
            let mut rest = Vec::new();
            for (t, d) in self.due.drain(..) {
                if ms(t) <= step {
                    now_due.push(d);
                } else {
                    rest.push((t, d));
                }
            }
            self.due = rest;
            for d in now_due {
                self.world(d);
            }
            if step % 100 == 0 {
                for cnc in ["1", "2"] {
                    if !self.dead.iter().any(|d| d == cnc) {
                        let epoch = self.cnc_epochs[cnc];
                        let current = self.busy.get(cnc).map(|b| b.0);
                        self.feed(Input::Status {
                            cnc: cnc.into(),
                            active: true,
                            epoch,
                            at_mm: AT_MM,
                            current,
                        });
                    }
                }
            }
            if step % 33 == 0 && self.now < self.blind_from_s {
                let t = self.tracks();
                self.feed(t);
            }
            if step % 50 == 0 {
                self.feed(Input::Tick);
            }
            self.now = (step + 1) as f64 / 1000.0;
        }
    }
}

fn models() -> [Input; 2] {
    [
        Input::Model {
            params: Box::new(cnc_params("1", 2.6)),
        },
        Input::Model {
            params: Box::new(cnc_params("2", 3.4)),
        },
    ]
}

#[test]
fn a_dead_cnc_loses_its_pending_objects_within_a_second_to_the_live_one() {
    let mut cell = Cell::with_models(Policy::Lookahead);
    let kill_at = 20.0;
    cell.run(50.0, 2.5, Some((kill_at, "1")));

    // CNC 1 worked before it died; what it held and had not started then:
    let held_at_kill: Vec<ObjectId> = cell
        .states
        .keys()
        .filter(|id| {
            let last = cell.history.iter().rfind(|h| h.1 == **id && h.0 <= kill_at);
            matches!(last, Some((_, _, _, ObjState::Assigned, c)) if c == "1")
        })
        .copied()
        .collect();
    let picked_by_1 = cell
        .history
        .iter()
        .filter(|h| h.3 == ObjState::Picked && h.4 == "1")
        .count();
    assert!(picked_by_1 >= 3, "CNC 1 picked {picked_by_1} before dying");
    assert!(!held_at_kill.is_empty(), "CNC 1 held nothing when it died");
    for id in &held_at_kill {
        let revoked = cell
            .history
            .iter()
            .find(|h| {
                h.1 == *id
                    && h.0 > kill_at
                    && h.2 == ObjState::Assigned
                    && h.3 == ObjState::Detected
            })
            .map(|h| h.0);
        let t = revoked.unwrap_or_else(|| panic!("{id:?} was never revoked"));
        assert!(
            t - kill_at <= 1.0,
            "{id:?} revoked {:.3} s after the kill",
            t - kill_at
        );
    }
    // At least one went to CNC 2 within the second, and CNC 1 was given
    // nothing once it was seen to be dead (0.5 s of silence).
    let reassigned = cell.history.iter().any(|h| {
        held_at_kill.contains(&h.1)
            && h.3 == ObjState::Assigned
            && h.4 == "2"
            && h.0 - kill_at <= 1.0
    });
    assert!(reassigned, "no object of CNC 1's went to CNC 2 within 1 s");
    assert!(
        !cell
            .history
            .iter()
            .any(|h| h.0 > kill_at + 0.6 && h.3 == ObjState::Assigned && h.4 == "1"),
        "a dead CNC was given work"
    );
    // Once the belt has emptied, nothing is left ASSIGNED; nothing was
    // started twice.
    let stuck: Vec<_> = cell
        .states
        .iter()
        .filter(|(_, s)| s.0 == ObjState::Assigned)
        .collect();
    assert!(stuck.is_empty(), "left ASSIGNED: {stuck:?}");
    cell.assert_none_started_twice();
    // CNC 2 kept picking after the kill.
    assert!(cell
        .history
        .iter()
        .any(|h| h.0 > kill_at + 5.0 && h.3 == ObjState::Picked && h.4 == "2"));

    // The same input log, replayed through a fresh core, gives the same
    // decisions, in the same order.
    let live: Vec<Output> = cell.outputs.iter().map(|(_, o)| o.clone()).collect();
    let text: String = cell
        .log
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    let parsed: Vec<Logged> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replay(config(Policy::Lookahead), &parsed), live);
}

/// The events topic keeps its history (transient_local), so a scheduler
/// activated again hears every event it already had; a restarted state
/// manager publishes its latest ones again.
#[test]
fn events_heard_again_change_nothing_and_a_restored_store_s_new_events_still_count() {
    let mut cell = Cell::with_models(Policy::Lookahead);
    cell.run_arriving(20.0, 1.5, 40.0, None);
    let held = cell.core.held();
    let finished = cell
        .states
        .values()
        .filter(|s| s.0 == ObjState::Picked)
        .count();
    assert!(
        held >= 2,
        "only {held} objects in flight when the history came again"
    );
    assert!(finished >= 3, "only {finished} objects picked before");
    // The whole history, heard again at once: no goal sent again, nothing
    // revoked, nothing assigned, and what was in flight stays in flight.
    let before = cell.outputs.len();
    for e in cell.events.clone() {
        cell.feed(e);
    }
    let again: Vec<&Output> = cell.outputs[before..].iter().map(|(_, o)| o).collect();
    assert!(again.is_empty(), "the history heard again gave {again:?}");
    assert_eq!(cell.core.held(), held);

    // The store restored from a snapshot: its new events are numbered
    // from 1 again, and must still count. Its recovery revokes what was
    // assigned (as the state manager's does); each such object is free to
    // be assigned again at once (were its DETECTED ignored, it would stay
    // held by a CNC that can no longer start it, for
    // assignment_to_pickup_s, 30 s), and is, as soon as the policy has a
    // CNC for it: within 5 s (the next CNC's window is 4 s on).
    cell.seq = 0;
    let restored_at = cell.now;
    let assigned = cell.revoke_all_assigned();
    assert!(
        !assigned.is_empty(),
        "nothing was assigned when the store was restored"
    );
    cell.run_arriving(60.0, 1.5, 40.0, None);
    for (id, _) in &assigned {
        let again = cell
            .history
            .iter()
            .find(|h| h.1 == *id && h.0 > restored_at && h.3 == ObjState::Assigned);
        assert!(
            again.is_some_and(|h| h.0 - restored_at <= 5.0),
            "{id:?}, revoked by the restored store, assigned again at {:?}",
            again.map(|h| h.0 - restored_at)
        );
    }
    cell.assert_nothing_held();
    assert_eq!(cell.core.held(), 0, "the core still holds objects");
    for cnc in ["1", "2"] {
        assert!(
            cell.history
                .iter()
                .any(|h| h.0 > 30.0 && h.3 == ObjState::Picked && h.4 == cnc),
            "CNC {cnc} picked nothing after the store's events were numbered again"
        );
    }
    cell.assert_none_started_twice();
}

#[test]
fn objects_nobody_can_pick_end_bypassed_or_missed_with_the_reason() {
    let mut cell = Cell::new(Policy::Greedy);
    cell.feed(Input::Model {
        params: Box::new(MotionParams {
            bin_classes: vec!["red_box".into()],
            bin_x_m: vec![2.3],
            bin_y_m: vec![0.68],
            ..cnc_params("1", 2.6)
        }),
    });
    cell.feed(Input::Model {
        params: Box::new(MotionParams {
            bin_classes: vec!["red_box".into()],
            bin_x_m: vec![3.1],
            bin_y_m: vec![0.68],
            ..cnc_params("2", 3.4)
        }),
    });
    // CNC 2 is dead from the start; objects every 0.3 s overload CNC 1.
    // The tracker loses two red boxes (objects 3 and 6) before the windows.
    cell.dead.push("2".into());
    cell.lost = vec![id_of(3), id_of(6)];
    cell.run(30.0, 0.3, None);
    for k in [3, 6] {
        assert_eq!(
            cell.states[&id_of(k)].0,
            ObjState::Missed,
            "a lost object still ends"
        );
    }
    let reasons: Vec<String> = cell
        .outputs
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Finish { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("binned by no CNC")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("left the last reach window")),
        "{reasons:?}"
    );
    // Every red box past both windows ended, one way or the other.
    for (id, &(t0, _, class)) in &cell.objects {
        let past = 0.5 + BELT_MPS * (30.0 - t0) > 3.5;
        let s = cell.states[id].0;
        if past {
            assert!(s.is_terminal(), "{class} {id:?} past the windows is {s}");
        }
        if class != "red_box" {
            assert!(s == ObjState::Bypassed || !past, "{class} ended {s}");
        }
    }
}

/// Assignments rest on the frame that decided them: while tracks come,
/// every decision is made as a TrackArray arrives and carries its stamp
/// (so exposure to assignment is the pipeline's latency, not a wait for a
/// tick); once they stop, ticks decide on what was last seen.
#[test]
fn decisions_come_with_each_frame_and_ticks_take_over_only_when_tracks_stop() {
    let mut cell = Cell::with_models(Policy::Lookahead);
    cell.blind_from_s = 20.0;
    cell.run(40.0, 1.5, None);
    let assigns: Vec<(f64, f64)> = cell
        .outputs
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Assign { seen_at_s, .. } => Some((*t, *seen_at_s)),
            _ => None,
        })
        .collect();
    let seeing: Vec<_> = assigns.iter().filter(|a| a.0 < 20.0).collect();
    assert!(seeing.len() >= 5, "{assigns:?}");
    for (t, seen) in &seeing {
        assert_eq!(t, seen, "decided at {t} on a frame of {seen}");
    }
    // Blind: ticks decide, on the last frame seen before 20 s.
    let blind: Vec<_> = assigns.iter().filter(|a| a.0 > 20.0).collect();
    assert!(
        !blind.is_empty(),
        "nothing assigned while blind: {assigns:?}"
    );
    for (t, seen) in &blind {
        assert!(*seen < 20.0 && t - seen > 0.05, "{t} on {seen}");
        let tick_ms = (t * 1000.0).round() as u64;
        assert_eq!(tick_ms % 50, 0, "a blind decision at {t} is not a tick's");
    }
}

#[test]
fn a_cnc_left_in_a_refused_epoch_is_given_nothing_and_reported_unless_it_begins_a_new_one() {
    let mut cell = Cell::with_models(Policy::Lookahead);
    cell.reactivate_reported = true;
    cell.run_arriving(15.0, 1.5, 29.0, None);
    // The state manager is activated again: every CNC's epoch rises in the
    // store, and what they held unstarted goes back to DETECTED.
    let fenced_at = cell.now;
    for c in ["1", "2"] {
        *cell.store_epochs.get_mut(c).unwrap() += 1;
    }
    cell.revoke_all_assigned();
    // CNC 2 is re-activated 0.2 s on, as it should be, though an Assign to
    // it in its old epoch was refused meanwhile; CNC 1's re-activation is
    // missed.
    cell.feed(Input::EpochRefused {
        cnc: "2".into(),
        epoch: 1,
    });
    cell.run_arriving(fenced_at + 0.2, 1.5, 29.0, None);
    cell.begin_epoch("2");
    cell.run_arriving(45.0, 1.5, 29.0, None);

    let refused_1 = cell
        .log
        .iter()
        .find(|l| matches!(&l.input, Input::EpochRefused { cnc, .. } if cnc == "1"))
        .map(|l| l.now_s)
        .expect("no Assign to CNC 1 was refused for its epoch");
    assert!(refused_1 > fenced_at && refused_1 - fenced_at < 5.0);
    // From the first refusal on, CNC 1 is given nothing in that epoch.
    let again: Vec<f64> = cell
        .outputs
        .iter()
        .filter(|(t, o)| {
            *t > refused_1 && matches!(o, Output::Assign { cnc, epoch: 1, .. } if cnc == "1")
        })
        .map(|(t, _)| *t)
        .collect();
    assert!(
        again.is_empty(),
        "assigned to CNC 1 in its refused epoch at {again:?}"
    );
    // It is reported once, epoch_refused_report_s after the refusal; CNC 2,
    // which began its new epoch, never is.
    let reports: Vec<(f64, &Output)> = cell
        .outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::EpochStale { .. }))
        .map(|(t, o)| (*t, o))
        .collect();
    assert_eq!(reports.len(), 1, "reports: {reports:?}");
    let (reported_at, report) = reports[0];
    assert!(
        matches!(report, Output::EpochStale { cnc, epoch: 1, .. } if cnc == "1"),
        "{report:?}"
    );
    assert!(
        reported_at - refused_1 >= 3.0 && reported_at - refused_1 < 3.0 + 0.06,
        "reported {:.3} s after the refusal",
        reported_at - refused_1
    );
    // CNC 2 kept picking meanwhile, and CNC 1 picks again once re-activated.
    let picked_by = |cnc: &str, from: f64, to: f64| {
        cell.history
            .iter()
            .filter(|h| h.0 > from && h.0 < to && h.3 == ObjState::Picked && h.4 == cnc)
            .count()
    };
    assert!(picked_by("2", fenced_at, reported_at) >= 1);
    assert!(
        picked_by("1", reported_at, f64::INFINITY) >= 1,
        "CNC 1 picked nothing after its new epoch"
    );
    cell.assert_nothing_held();
}

/// A scheduler process restarted mid-run hears the events' history before
/// any CNC status, and finds objects ASSIGNED by its predecessor: one its
/// CNC is already carrying out, others waiting their turn. None is revoked
/// (before, each was at once: its CNC was not yet heard from), none gets a
/// second goal while its CNC is on it (which the CNC, busy, would refuse,
/// and the refusal revoke the object from under the pick), and each is
/// picked by the CNC it was given to.
#[test]
fn a_restarted_scheduler_keeps_what_its_predecessor_assigned_and_sends_no_goal_twice() {
    let mut cell = Cell::with_models(Policy::Lookahead);
    cell.run_arriving(15.0, 1.5, 40.0, None);
    let assigned = cell.assigned();
    let on_assigned = cell
        .busy
        .values()
        .filter(|(id, _)| cell.states[id].0 == ObjState::Assigned)
        .count();
    assert!(
        on_assigned >= 1 && assigned.len() > on_assigned,
        "at the restart: {} assigned, {on_assigned} of them being carried out",
        assigned.len()
    );
    // And that pick begins after the restart has settled (the CNC is
    // heard from, and a goal would go out).
    let starts_in_s = cell
        .due
        .iter()
        .filter_map(|(t, d)| match d {
            Due::Start(id, cnc) if cell.busy.get(cnc).is_some_and(|b| b.0 == *id) => {
                Some(t - cell.now)
            }
            _ => None,
        })
        .fold(0.0, f64::max);
    assert!(
        starts_in_s > 1.0,
        "the pick in progress begins {starts_in_s} s on"
    );
    let (restarted_at, before, log_before) = (cell.now, cell.outputs.len(), cell.log.len());
    cell.restart_scheduler(Policy::Lookahead);
    cell.run_arriving(60.0, 1.5, 40.0, None);

    let revokes: Vec<&Output> = cell.outputs[before..]
        .iter()
        .map(|(_, o)| o)
        .filter(|o| matches!(o, Output::Revoke { .. }))
        .collect();
    assert!(revokes.is_empty(), "revoked after the restart: {revokes:?}");
    let refused: Vec<&Input> = cell.log[log_before..]
        .iter()
        .map(|l| &l.input)
        .filter(|i| {
            matches!(
                i,
                Input::GoalAnswer {
                    accepted: false,
                    ..
                }
            )
        })
        .collect();
    assert!(refused.is_empty(), "goals refused: {refused:?}");
    for (id, cnc) in &assigned {
        let picked = cell
            .history
            .iter()
            .find(|h| h.1 == *id && h.3 == ObjState::Picked)
            .map(|h| (h.0, h.4.clone()));
        assert!(
            picked
                .as_ref()
                .is_some_and(|(t, by)| by == cnc && *t > restarted_at),
            "{id:?}, assigned to CNC {cnc} at the restart: picked {picked:?}"
        );
    }
    // The new process goes on assigning: both CNCs pick what arrives after.
    for cnc in ["1", "2"] {
        assert!(
            cell.history
                .iter()
                .any(|h| h.0 > restarted_at + 5.0 && h.3 == ObjState::Picked && h.4 == cnc),
            "CNC {cnc} picked nothing after the restart"
        );
    }
    cell.assert_nothing_held();
    cell.assert_none_started_twice();
}

/// A CNC whose picks run longer than planned (here 4 s each against the
/// plan's 2-odd) is free later than the scheduler planned the picks
/// queued behind them: each of those is planned again from where the CNC
/// really is, and one it can no longer reach in time is revoked before
/// its goal goes out (the motion controller would refuse it, and the
/// refusal back the object off), with no backoff, for the next CNC to
/// take at once. No goal is refused as out of reach.
#[test]
fn a_pick_queued_behind_picks_that_ran_late_is_revoked_before_its_goal_and_taken_downstream() {
    let mut cell = Cell::with_models(Policy::Greedy);
    cell.pick_s.insert("1".into(), 4.0);
    cell.run(60.0, 2.0, None);
    assert!(
        cell.out_of_reach.is_empty(),
        "goals refused as out of reach: {:?}",
        cell.out_of_reach
    );
    let replanned: Vec<(f64, ObjectId)> = cell
        .outputs
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Revoke { id, cnc, why, .. }
                if cnc == "1" && why.contains("can no longer reach") =>
            {
                Some((*t, *id))
            }
            _ => None,
        })
        .collect();
    assert!(
        replanned.len() >= 3,
        "only {} picks revoked as out of reach behind late ones",
        replanned.len()
    );
    // Each went to CNC 2 at once (no backoff: the next decision, 50 ms),
    // and CNC 2 picked it.
    for (at, id) in &replanned {
        let next = cell
            .history
            .iter()
            .find(|h| h.1 == *id && h.0 > *at && h.3 == ObjState::Assigned);
        assert!(
            next.is_some_and(|h| h.4 == "2" && h.0 - at <= 0.1),
            "{id:?}, revoked from CNC 1 at {at:.3} s, assigned next: {next:?}"
        );
        assert!(
            cell.history
                .iter()
                .any(|h| h.1 == *id && h.3 == ObjState::Picked && h.4 == "2"),
            "{id:?} was not picked by CNC 2"
        );
    }
    cell.assert_nothing_held();
    cell.assert_none_started_twice();
}
