//! The assignment protocol, pure: what the scheduler asks of the state
//! manager and the motion controllers, and what it does when they answer,
//! fail to answer, or change under it. Time is the `now_s` each call is
//! given (message stamps or an injected clock), so every timeout is tested
//! on a fake clock.
//!
//! For each assignment the policy makes:
//! 1. compare-and-set DETECTED → ASSIGNED in the state manager, carrying
//!    the CNC's epoch ([`Command::Assign`]);
//! 2. once accepted, the object waits in the CNC's queue (ASSIGNED) until
//!    the CNC has no goal in flight and the planned contact is at most
//!    `goal_lead_s` away (a motion controller takes one pick at a time,
//!    and only one it will meet within `motion_wait_for_trigger_s`); then
//!    the PickObject goal goes to the CNC with that epoch
//!    ([`Command::SendGoal`]), soonest contact first; the goal's end (its
//!    result) frees the CNC for the next, not the object's end heard
//!    before it (the CNC records PICKED before it is done with the goal),
//!    or `goal_accept_s` after the object's end if no result comes;
//! 3. a goal not accepted within `goal_accept_s` (refused, or no answer):
//!    the assignment is revoked, ASSIGNED → DETECTED ([`Command::Revoke`]),
//!    and the object may not be assigned again until a backoff has passed
//!    (doubling per failure, up to `backoff_max_s`);
//! 4. an object still not being picked `assignment_to_pickup_s` after its
//!    assignment is revoked the same way;
//! 5. a CNC that leaves Active, or comes back with another epoch: every
//!    object it holds and has not started is revoked at once, with no
//!    backoff (the object did nothing wrong).
//!
//! An object's own events (from `objects/events`) end its assignment when
//! it is picked, dropped, missed or bypassed, whoever moved it.

use std::collections::BTreeMap;

/// The protocol's timeouts, s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub goal_accept_s: f64,
    pub assignment_to_pickup_s: f64,
    pub backoff_initial_s: f64,
    pub backoff_max_s: f64,
    /// A goal goes out at most this long before its planned contact, s.
    pub goal_lead_s: f64,
    /// An object found ASSIGNED by no request of ours is left as it is
    /// this long: the rest of its history and its CNC's status are still
    /// coming in, s (the scheduler's `status_timeout_s`).
    pub adopt_settle_s: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            goal_accept_s: 2.0,
            assignment_to_pickup_s: 30.0,
            backoff_initial_s: 0.5,
            backoff_max_s: 8.0,
            goal_lead_s: 3.0,
            adopt_settle_s: 0.5,
        }
    }
}

/// Where one assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// DETECTED → ASSIGNED asked of the state manager.
    Assigning,
    /// ASSIGNED by no request of ours (a scheduler before a restart), for
    /// less than `adopt_settle_s`: neither its goal goes out nor is it
    /// revoked yet.
    Adopted,
    /// ASSIGNED; waiting in the CNC's queue for its goal to go out.
    Queued,
    /// ASSIGNED; the goal is out, not yet accepted.
    GoalSent,
    /// The CNC accepted the goal.
    Accepted,
    /// The object is PICKING.
    Picking,
}

/// What the scheduler must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Assign {
        key: u64,
        cnc: String,
        epoch: u64,
    },
    SendGoal {
        key: u64,
        cnc: String,
        epoch: u64,
    },
    /// ASSIGNED → DETECTED, with why (logged with the object's trace id).
    Revoke {
        key: u64,
        cnc: String,
        epoch: u64,
        why: String,
    },
    /// Tell an operator (the alerts topic); the scheduler goes on.
    Alert {
        key: u64,
        what: String,
    },
}

/// An object's state as the state manager published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectNews {
    Detected,
    /// ASSIGNED to `cnc` in `epoch`.
    Assigned {
        cnc: String,
        epoch: u64,
    },
    Picking,
    /// PICKED, DROPPED, MISSED or BYPASSED.
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
struct Held {
    cnc: String,
    epoch: u64,
    stage: Stage,
    /// ASSIGNED by no request of ours, and no goal of ours sent for it.
    adopted: bool,
    assigned_at_s: f64,
    goal_at_s: f64,
    /// The planned contact, s.
    contact_at_s: f64,
}

/// The protocol's state: what is assigned to whom, and which objects are
/// backing off.
#[derive(Debug, Clone, Default)]
pub struct Dispatcher {
    pub timeouts: Timeouts,
    held: BTreeMap<u64, Held>,
    /// Objects that may not be assigned again before a time, and how many
    /// times their assignment failed.
    backoff: BTreeMap<u64, (f64, u32)>,
    /// Objects that ended while our goal for them still ran, by key: their
    /// CNC and epoch, and when they ended. A motion controller records the
    /// end of a pick before it is done with the goal (it still publishes
    /// the pick's result), so its CNC takes no goal until the goal's result
    /// comes, or `goal_accept_s` has passed.
    ending: BTreeMap<u64, (String, u64, f64)>,
}

impl Dispatcher {
    pub fn new(timeouts: Timeouts) -> Self {
        Dispatcher {
            timeouts,
            ..Default::default()
        }
    }

    /// Whether `key` may be given to a CNC now.
    pub fn assignable(&self, key: u64, now_s: f64) -> bool {
        !self.held.contains_key(&key) && self.backoff.get(&key).is_none_or(|b| b.0 <= now_s)
    }

    /// How many objects `cnc` holds (its queue).
    pub fn queued(&self, cnc: &str) -> usize {
        self.held.values().filter(|h| h.cnc == cnc).count()
    }

    /// Where `key`'s assignment stands, if it has one.
    pub fn stage(&self, key: u64) -> Option<(String, Stage)> {
        self.held.get(&key).map(|h| (h.cnc.clone(), h.stage))
    }

    /// Every hold: object, CNC, stage (by key).
    pub fn holds(&self) -> impl Iterator<Item = (u64, &str, Stage)> + '_ {
        self.held.iter().map(|(k, h)| (*k, h.cnc.as_str(), h.stage))
    }

    /// The object whose goal `cnc` has out or running (sent, accepted or
    /// picking), if any.
    pub fn on_goal(&self, cnc: &str) -> Option<u64> {
        self.held
            .iter()
            .find(|(_, h)| {
                h.cnc == cnc
                    && matches!(h.stage, Stage::GoalSent | Stage::Accepted | Stage::Picking)
            })
            .map(|(k, _)| *k)
    }

    /// The objects waiting for `cnc`'s goals (being assigned, or queued),
    /// in the order their goals go out: soonest planned contact first.
    pub fn waiting(&self, cnc: &str) -> Vec<(u64, Stage)> {
        let mut w: Vec<(f64, u64, Stage)> = self
            .held
            .iter()
            .filter(|(_, h)| h.cnc == cnc && matches!(h.stage, Stage::Assigning | Stage::Queued))
            .map(|(k, h)| (h.contact_at_s, *k, h.stage))
            .collect();
        w.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        w.into_iter().map(|(_, k, s)| (k, s)).collect()
    }

    /// `key`'s contact planned again (its CNC's picks before it ran
    /// differently from their plans).
    pub fn replanned(&mut self, key: u64, contact_at_s: f64) {
        if let Some(h) = self.held.get_mut(&key) {
            h.contact_at_s = contact_at_s;
        }
    }

    /// A queued object its CNC can no longer reach in time (the picks
    /// before it ran late): revoked before its goal goes out, with no
    /// backoff (neither the object nor the CNC failed), so another CNC may
    /// take it at once.
    pub fn unreachable(&mut self, key: u64, why: &str, now_s: f64) -> Vec<Command> {
        match self.held.get(&key) {
            Some(h) if h.stage == Stage::Queued => self.revoke(key, why, now_s, false),
            _ => Vec::new(),
        }
    }

    /// The policy gave `key` to `cnc` (in `epoch`), planning contact at
    /// `contact_at_s`: ask the state manager.
    pub fn assign(
        &mut self,
        key: u64,
        cnc: &str,
        epoch: u64,
        contact_at_s: f64,
        now_s: f64,
    ) -> Vec<Command> {
        if !self.assignable(key, now_s) {
            return Vec::new();
        }
        self.held.insert(
            key,
            Held {
                cnc: cnc.into(),
                epoch,
                stage: Stage::Assigning,
                adopted: false,
                assigned_at_s: now_s,
                goal_at_s: now_s,
                contact_at_s,
            },
        );
        vec![Command::Assign {
            key,
            cnc: cnc.into(),
            epoch,
        }]
    }

    /// The state manager's answer to an Assign.
    pub fn assign_answered(&mut self, key: u64, accepted: bool, now_s: f64) -> Vec<Command> {
        let Some(h) = self.held.get_mut(&key) else {
            return Vec::new();
        };
        if h.stage != Stage::Assigning {
            return Vec::new();
        }
        if !accepted {
            // Someone else holds it, or it moved on: forget it.
            self.held.remove(&key);
            return Vec::new();
        }
        h.stage = Stage::Queued;
        self.release(now_s)
    }

    /// The goals that may go out now: for each CNC with no goal in flight,
    /// its queued object with the soonest planned contact, once that is
    /// within `goal_lead_s`.
    pub fn release(&mut self, now_s: f64) -> Vec<Command> {
        self.settle(None, now_s);
        let wait_s = self.timeouts.goal_accept_s;
        self.ending
            .retain(|_, (_, _, ended_s)| now_s - *ended_s < wait_s);
        let busy: std::collections::BTreeSet<&str> = self
            .held
            .values()
            .filter(|h| matches!(h.stage, Stage::GoalSent | Stage::Accepted | Stage::Picking))
            .map(|h| h.cnc.as_str())
            .chain(self.ending.values().map(|(c, _, _)| c.as_str()))
            .collect();
        let mut next: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
        for (k, h) in &self.held {
            if h.stage != Stage::Queued || busy.contains(h.cnc.as_str()) {
                continue;
            }
            let e = next.entry(h.cnc.as_str()).or_insert((h.contact_at_s, *k));
            if (h.contact_at_s, *k) < *e {
                *e = (h.contact_at_s, *k);
            }
        }
        let lead = self.timeouts.goal_lead_s;
        let due: Vec<u64> = next
            .values()
            .filter(|(contact, _)| contact - now_s <= lead)
            .map(|(_, k)| *k)
            .collect();
        let mut out = Vec::new();
        for k in due {
            if let Some(h) = self.held.get_mut(&k) {
                h.stage = Stage::GoalSent;
                h.adopted = false;
                h.goal_at_s = now_s;
                out.push(Command::SendGoal {
                    key: k,
                    cnc: h.cnc.clone(),
                    epoch: h.epoch,
                });
            }
        }
        out
    }

    /// The CNC's goal for `key` ended (its result came): the CNC is free
    /// for the next. The object's own events say how a pick ended; a goal
    /// that ended before its pick started leaves the object ASSIGNED, so
    /// it is revoked (harmless if it did start: the compare-and-set fails).
    pub fn goal_done(&mut self, key: u64, now_s: f64) -> Vec<Command> {
        self.ending.remove(&key);
        let mut out = match self.held.get(&key).map(|h| h.stage) {
            Some(Stage::Picking) => {
                self.held.remove(&key);
                Vec::new()
            }
            Some(Stage::Accepted) => self.revoke(
                key,
                "the CNC's goal ended before its pick started",
                now_s,
                true,
            ),
            _ => Vec::new(),
        };
        out.extend(self.release(now_s));
        out
    }

    /// The CNC's answer to a goal.
    pub fn goal_answered(&mut self, key: u64, accepted: bool, now_s: f64) -> Vec<Command> {
        match self.held.get_mut(&key) {
            Some(h) if h.stage == Stage::GoalSent => {
                if accepted {
                    h.stage = Stage::Accepted;
                    Vec::new()
                } else {
                    self.revoke(key, "the CNC refused the goal", now_s, true)
                }
            }
            _ => Vec::new(),
        }
    }

    /// The state manager's answer to an Assign never came (the call timed
    /// out): the object may be ASSIGNED or not, so it is revoked (a
    /// compare-and-set, harmless if it was not) and backs off.
    pub fn assign_unknown(&mut self, key: u64, now_s: f64) -> Vec<Command> {
        match self.held.get_mut(&key) {
            Some(h) if h.stage == Stage::Assigning => {
                h.stage = Stage::Queued;
                self.revoke(
                    key,
                    "the state manager did not answer the assignment",
                    now_s,
                    true,
                )
            }
            _ => Vec::new(),
        }
    }

    /// An object's new state from `objects/events` (at `now_s`).
    pub fn object(&mut self, key: u64, news: ObjectNews, now_s: f64) {
        match news {
            ObjectNews::Picking => {
                if let Some(h) = self.held.get_mut(&key) {
                    h.stage = Stage::Picking;
                }
            }
            ObjectNews::Finished => {
                if let Some(h) = self.held.remove(&key) {
                    if !h.adopted && matches!(h.stage, Stage::Accepted | Stage::Picking) {
                        self.ending.insert(key, (h.cnc, h.epoch, now_s));
                    }
                }
                self.backoff.remove(&key);
            }
            // Revoked by someone (the state manager on a new epoch): free.
            ObjectNews::Detected => {
                if self
                    .held
                    .get(&key)
                    .is_some_and(|h| h.stage != Stage::Assigning)
                {
                    self.held.remove(&key);
                }
            }
            // ASSIGNED by no request of ours (a scheduler before a
            // restart): adopted into its CNC's queue once it has settled
            // (`adopt_settle_s`: a restarted scheduler hears the events'
            // history in a burst, where most ASSIGNED are followed by
            // their PICKING and their end, and its CNCs' statuses only
            // after it), its goal sent when the CNC is free, so it is
            // picked or revoked, never stuck.
            ObjectNews::Assigned { cnc, epoch } => {
                self.held.entry(key).or_insert(Held {
                    cnc,
                    epoch,
                    stage: Stage::Adopted,
                    adopted: true,
                    assigned_at_s: now_s,
                    goal_at_s: now_s,
                    contact_at_s: now_s,
                });
            }
        }
    }

    /// A CNC's lifecycle and epoch as its status says: out of Active, or
    /// another epoch, and what it holds unstarted is revoked.
    /// Adopted objects still settling are left alone.
    pub fn cnc(&mut self, cnc: &str, active: bool, epoch: u64, now_s: f64) -> Vec<Command> {
        self.settle(Some(cnc), now_s);
        // A CNC that left, or came back anew, is on none of our goals.
        self.ending
            .retain(|_, (c, e, _)| c != cnc || (active && *e == epoch));
        let lost: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.cnc == cnc && !matches!(h.stage, Stage::Picking | Stage::Adopted))
            .filter(|(_, h)| !active || h.epoch != epoch)
            .map(|(k, _)| *k)
            .collect();
        let why = if active {
            format!("CNC {cnc} came back with epoch {epoch}")
        } else {
            format!("CNC {cnc} is not active")
        };
        lost.into_iter()
            .flat_map(|k| self.revoke(k, &why, now_s, false))
            .collect()
    }

    /// What a CNC's status says it is on: `current`, the key of the
    /// object whose goal it is carrying out, if that is one of ours. An
    /// adopted object it is on has its goal from before the restart
    /// running: none of ours goes out for it (the CNC, busy, would refuse
    /// it, and the refusal revoke the object from under the pick), and the
    /// CNC is busy until its events end it. If the CNC moves on with it
    /// still ASSIGNED (that goal ended before its pick began), our goal
    /// goes out.
    pub fn cnc_on(&mut self, cnc: &str, current: Option<u64>) {
        for (k, h) in self.held.iter_mut() {
            if h.cnc != cnc || !h.adopted {
                continue;
            }
            let on = current == Some(*k);
            match h.stage {
                Stage::Adopted | Stage::Queued if on => h.stage = Stage::Accepted,
                Stage::Accepted if !on => h.stage = Stage::Queued,
                _ => {}
            }
        }
    }

    /// Adopted objects (of `cnc`, or of every CNC) settled by `now_s` join
    /// their CNC's queue.
    fn settle(&mut self, cnc: Option<&str>, now_s: f64) {
        let settle_s = self.timeouts.adopt_settle_s;
        for h in self.held.values_mut() {
            if h.stage == Stage::Adopted
                && cnc.is_none_or(|c| c == h.cnc)
                && now_s - h.assigned_at_s >= settle_s
            {
                h.stage = Stage::Queued;
            }
        }
    }

    /// Timeouts due by `now_s`.
    pub fn tick(&mut self, now_s: f64) -> Vec<Command> {
        let t = self.timeouts;
        let due: Vec<(u64, &'static str)> = self
            .held
            .iter()
            .filter_map(|(k, h)| {
                if h.stage == Stage::GoalSent && now_s - h.goal_at_s >= t.goal_accept_s {
                    Some((*k, "the goal was not accepted in time"))
                } else if h.stage != Stage::Picking
                    && now_s - h.assigned_at_s >= t.assignment_to_pickup_s
                {
                    Some((*k, "not picked up within assignment_to_pickup_s"))
                } else {
                    None
                }
            })
            .collect();
        let mut out: Vec<Command> = due
            .into_iter()
            .flat_map(|(k, why)| self.revoke(k, why, now_s, true))
            .collect();
        out.extend(self.release(now_s));
        out
    }

    /// Takes `key` back from its CNC, and backs it off if `backoff` (the
    /// object's assignment failed, not its CNC).
    fn revoke(&mut self, key: u64, why: &str, now_s: f64, backoff: bool) -> Vec<Command> {
        let Some(h) = self.held.remove(&key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let failures = if backoff {
            let failures = self.backoff.get(&key).map_or(0, |b| b.1) + 1;
            let t = self.timeouts;
            let wait = (t.backoff_initial_s * 2f64.powi(failures as i32 - 1)).min(t.backoff_max_s);
            self.backoff.insert(key, (now_s + wait, failures));
            failures
        } else {
            0
        };
        // Nothing to revoke if the state manager never said ASSIGNED.
        if h.stage != Stage::Assigning {
            out.push(Command::Revoke {
                key,
                cnc: h.cnc.clone(),
                epoch: h.epoch,
                why: why.into(),
            });
        }
        if failures >= 3 {
            out.push(Command::Alert {
                key,
                what: format!("assignment failed {failures} times (last: {why})"),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal_out(d: &mut Dispatcher, key: u64, cnc: &str, now: f64) {
        assert_eq!(
            d.assign(key, cnc, 1, now + 1.0, now),
            vec![Command::Assign {
                key,
                cnc: cnc.into(),
                epoch: 1
            }]
        );
        assert_eq!(
            d.assign_answered(key, true, now + 0.01),
            vec![Command::SendGoal {
                key,
                cnc: cnc.into(),
                epoch: 1
            }]
        );
    }

    fn revoked(c: &[Command]) -> Vec<u64> {
        c.iter()
            .filter_map(|c| match c {
                Command::Revoke { key, .. } => Some(*key),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_goal_not_accepted_in_time_is_revoked_and_the_object_backs_off() {
        let mut d = Dispatcher::new(Timeouts::default());
        goal_out(&mut d, 7, "1", 10.0);
        assert!(!d.assignable(7, 10.5));
        assert_eq!(d.tick(11.9), vec![]);
        let c = d.tick(12.05);
        assert!(
            matches!(&c[..], [Command::Revoke { key: 7, cnc, why, .. }] if cnc == "1" && why.contains("not accepted")),
            "{c:?}"
        );
        // Backing off 0.5 s, then again assignable; a second failure
        // doubles the wait, a third raises an alert.
        assert!(!d.assignable(7, 12.5) && d.assignable(7, 12.56));
        goal_out(&mut d, 7, "2", 12.6);
        assert!(matches!(
            &d.goal_answered(7, false, 12.7)[..],
            [Command::Revoke { .. }]
        ));
        assert!(!d.assignable(7, 13.6) && d.assignable(7, 13.71));
        goal_out(&mut d, 7, "1", 14.0);
        let c = d.tick(16.1);
        assert!(
            matches!(
                &c[..],
                [Command::Revoke { .. }, Command::Alert { key: 7, .. }]
            ),
            "{c:?}"
        );
        assert!(!d.assignable(7, 18.0) && d.assignable(7, 18.11));
    }

    #[test]
    fn a_cnc_gets_one_goal_at_a_time_soonest_contact_first_within_the_lead() {
        let mut d = Dispatcher::new(Timeouts::default());
        // Contact at 10 s: the goal waits until 3 s before it.
        d.assign(1, "1", 1, 10.0, 0.0);
        assert_eq!(d.assign_answered(1, true, 0.1), vec![]);
        assert_eq!(d.stage(1), Some(("1".into(), Stage::Queued)));
        d.assign(2, "1", 1, 8.0, 0.2);
        assert_eq!(d.assign_answered(2, true, 0.3), vec![]);
        assert_eq!(d.tick(4.9), vec![]);
        let c = d.tick(5.0);
        assert!(
            matches!(&c[..], [Command::SendGoal { key: 2, .. }]),
            "{c:?}"
        );
        assert_eq!(d.goal_answered(2, true, 5.1), vec![]);
        // Object 1 is due too, but CNC 1 has a goal in flight.
        assert_eq!(d.tick(7.5), vec![]);
        d.object(2, ObjectNews::Picking, 8.0);
        assert_eq!(d.tick(8.5), vec![]);
        let c = d.goal_done(2, 9.0);
        assert!(
            matches!(&c[..], [Command::SendGoal { key: 1, .. }]),
            "{c:?}"
        );
        assert_eq!(d.queued("1"), 1);
        // A goal that ends without its pick starting: the object is revoked.
        d.goal_answered(1, true, 9.1);
        let c = d.goal_done(1, 9.5);
        assert_eq!(revoked(&c), vec![1], "{c:?}");
        assert_eq!(d.queued("1"), 0);
    }

    /// The object's end is heard before its goal's result (the motion
    /// controller records PICKED, then finishes the goal): its CNC gets no
    /// goal until the result comes, which it would refuse as busy. A result
    /// that never comes holds it no longer than `goal_accept_s`; a CNC that
    /// leaves is on no goal of ours.
    #[test]
    fn a_cnc_whose_object_ended_takes_its_next_goal_once_the_goal_is_done() {
        let mut d = Dispatcher::new(Timeouts::default());
        let queued = |d: &mut Dispatcher, key: u64, at: f64| {
            d.assign(key, "1", 1, at + 1.0, at);
            assert_eq!(d.assign_answered(key, true, at), vec![]);
        };
        goal_out(&mut d, 1, "1", 0.0);
        assert_eq!(d.goal_answered(1, true, 0.1), vec![]);
        d.object(1, ObjectNews::Picking, 0.2);
        queued(&mut d, 2, 0.3);
        d.object(1, ObjectNews::Finished, 1.0);
        assert_eq!(d.tick(1.01), vec![], "the CNC is still on goal 1");
        let c = d.goal_done(1, 1.02);
        assert!(
            matches!(&c[..], [Command::SendGoal { key: 2, .. }]),
            "{c:?}"
        );

        // No result: the CNC is free again goal_accept_s (2 s) after the end.
        assert_eq!(d.goal_answered(2, true, 1.1), vec![]);
        queued(&mut d, 3, 1.2);
        d.object(2, ObjectNews::Finished, 2.0);
        assert_eq!(d.tick(3.99), vec![]);
        let c = d.tick(4.0);
        assert!(
            matches!(&c[..], [Command::SendGoal { key: 3, .. }]),
            "{c:?}"
        );

        // The CNC leaves mid-goal and comes back anew: free at once.
        assert_eq!(d.goal_answered(3, true, 4.1), vec![]);
        queued(&mut d, 4, 4.2);
        d.object(3, ObjectNews::Finished, 5.0);
        assert_eq!(
            d.cnc("1", true, 1, 5.01),
            vec![],
            "the same epoch: still on it"
        );
        assert_eq!(d.tick(5.02), vec![]);
        let c = d.cnc("1", true, 2, 5.1);
        assert_eq!(revoked(&c), vec![4], "{c:?}");
        assert!(d.ending.is_empty());
    }

    #[test]
    fn an_accepted_goal_is_held_until_picked_or_assignment_to_pickup_s() {
        let mut d = Dispatcher::new(Timeouts::default());
        goal_out(&mut d, 1, "1", 0.0);
        d.assign(2, "1", 1, 1.0, 0.0);
        assert_eq!(d.assign_answered(2, true, 0.0), vec![]);
        assert_eq!(d.goal_answered(1, true, 0.5), vec![]);
        assert_eq!(d.queued("1"), 2);
        d.object(1, ObjectNews::Picking, 1.0);
        assert_eq!(d.tick(29.0), vec![]);
        // Object 2 never started: revoked at 30 s; object 1 is picking.
        let c = d.tick(30.0);
        assert!(
            matches!(&c[..], [Command::Revoke { key: 2, why, .. }] if why.contains("assignment_to_pickup_s")),
            "{c:?}"
        );
        assert_eq!(d.stage(1), Some(("1".into(), Stage::Picking)));
        d.object(1, ObjectNews::Finished, 30.0);
        assert_eq!(d.queued("1"), 0);
        assert!(d.assignable(1, 30.0));
    }

    #[test]
    fn a_cnc_leaving_active_or_changing_epoch_loses_what_it_has_not_started() {
        let mut d = Dispatcher::new(Timeouts::default());
        goal_out(&mut d, 3, "1", 0.0);
        d.goal_answered(3, true, 0.1);
        for k in 1..=2 {
            d.assign(k, "1", 1, 0.5, 0.0);
            d.assign_answered(k, true, 0.1);
        }
        goal_out(&mut d, 9, "2", 0.0);
        d.object(3, ObjectNews::Picking, 0.15);
        assert_eq!(d.cnc("1", true, 1, 0.2), vec![]);
        let c = d.cnc("1", false, 1, 0.3);
        assert_eq!(
            revoked(&c),
            vec![1, 2],
            "the pick in progress is the CNC's to finish"
        );
        // Not the objects' fault: no backoff, at once assignable again.
        assert!(d.assignable(1, 0.3) && d.assignable(2, 0.3));
        assert_eq!(d.stage(9), Some(("2".into(), Stage::GoalSent)));
        // A new epoch on CNC 2: its unstarted goal goes too.
        assert_eq!(revoked(&d.cnc("2", true, 2, 0.4)), vec![9]);
    }

    #[test]
    fn a_refused_assignment_or_another_actor_ends_the_hold_without_a_revoke() {
        let mut d = Dispatcher::new(Timeouts::default());
        d.assign(4, "1", 1, 1.0, 0.0);
        // Assigning twice is a no-op while it is held.
        assert_eq!(d.assign(4, "2", 1, 1.0, 0.0), vec![]);
        assert_eq!(d.assign_answered(4, false, 0.1), vec![]);
        assert!(d.assignable(4, 0.1));
        goal_out(&mut d, 5, "1", 0.0);
        d.object(5, ObjectNews::Detected, 0.2);
        assert!(d.assignable(5, 0.2) && d.tick(100.0).is_empty());
    }

    #[test]
    fn an_unanswered_assignment_is_revoked_and_an_orphan_is_adopted() {
        let mut d = Dispatcher::new(Timeouts::default());
        d.assign(4, "1", 1, 1.0, 0.0);
        let c = d.assign_unknown(4, 2.0);
        assert_eq!(revoked(&c), vec![4], "{c:?}");
        assert!(!d.assignable(4, 2.1) && d.assignable(4, 2.5));
        // ASSIGNED by a scheduler before a restart: left as it is while it
        // settles (no goal, and not revoked though CNC 2 is not yet heard
        // from), then its goal goes out.
        d.object(8, adopted("2", 3), 5.0);
        assert_eq!(d.tick(5.0), vec![]);
        assert_eq!(d.cnc("2", false, 0, 5.2), vec![]);
        assert_eq!(d.stage(8), Some(("2".into(), Stage::Adopted)));
        assert_eq!(d.tick(5.49), vec![]);
        let c = d.tick(5.5);
        assert_eq!(
            c,
            vec![Command::SendGoal {
                key: 8,
                cnc: "2".into(),
                epoch: 3
            }]
        );
        // Settled, and its CNC not active: revoked.
        d.object(9, adopted("3", 1), 6.0);
        assert_eq!(d.cnc("3", false, 0, 6.4), vec![]);
        assert_eq!(revoked(&d.cnc("3", false, 0, 6.5)), vec![9]);
    }

    fn adopted(cnc: &str, epoch: u64) -> ObjectNews {
        ObjectNews::Assigned {
            cnc: cnc.into(),
            epoch,
        }
    }

    #[test]
    fn an_adopted_object_its_cnc_is_already_on_gets_no_second_goal() {
        let mut d = Dispatcher::new(Timeouts::default());
        for k in [1, 2] {
            d.object(k, adopted("1", 2), 0.0);
        }
        // CNC 1's status: it is carrying out object 1's goal, sent before
        // the restart.
        d.cnc_on("1", Some(1));
        assert_eq!(d.stage(1), Some(("1".into(), Stage::Accepted)));
        // Settled: object 2 waits behind the pick in progress.
        assert_eq!(d.cnc("1", true, 2, 0.6), vec![]);
        assert_eq!(d.tick(0.6), vec![]);
        assert_eq!(d.stage(2), Some(("1".into(), Stage::Queued)));
        d.object(1, ObjectNews::Picking, 1.0);
        d.cnc_on("1", None);
        assert_eq!(d.stage(1), Some(("1".into(), Stage::Picking)));
        assert_eq!(d.tick(1.5), vec![]);
        d.object(1, ObjectNews::Finished, 2.0);
        assert!(matches!(
            &d.tick(2.0)[..],
            [Command::SendGoal { key: 2, .. }]
        ));
        // The CNC moved on with an adopted object still ASSIGNED (that goal
        // ended before its pick began): our goal goes out.
        d.object(3, adopted("2", 1), 3.0);
        d.cnc_on("2", Some(3));
        assert_eq!(d.tick(3.6), vec![]);
        d.cnc_on("2", None);
        assert!(matches!(
            &d.tick(3.7)[..],
            [Command::SendGoal { key: 3, .. }]
        ));
        // Ours, once out, is never taken for the CNC's old one.
        d.cnc_on("2", None);
        assert_eq!(d.stage(3), Some(("2".into(), Stage::GoalSent)));
        d.cnc_on("2", Some(3));
        assert_eq!(d.stage(3), Some(("2".into(), Stage::GoalSent)));
    }
}
