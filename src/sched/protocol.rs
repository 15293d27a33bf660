//! The assignment protocol, pure: what the scheduler asks of the state
//! manager and the motion controllers, and what it does when they answer,
//! fail to answer, or change under it. Time is the `now_s` each call is
//! given (message stamps or an injected clock), so every timeout is tested
//! on a fake clock.
//!
//! For each assignment the policy makes:
//! 1. compare-and-set DETECTED → ASSIGNED in the state manager, carrying
//!    the CNC's epoch ([`Command::Assign`]);
//! 2. once accepted, the PickObject goal to the CNC with that epoch
//!    ([`Command::SendGoal`]);
//! 3. a goal not accepted within `goal_accept_s` (refused, or no answer):
//!    the assignment is revoked, ASSIGNED → DETECTED ([`Command::Revoke`]),
//!    and the object may not be assigned again until a backoff has passed
//!    (doubling per failure, up to `backoff_max_s`);
//! 4. an object still not being picked `assignment_to_pickup_s` after its
//!    assignment is revoked the same way;
//! 5. a CNC that leaves Active, or comes back with another epoch: every
//!    object it holds and has not started is revoked at once.
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            goal_accept_s: 2.0,
            assignment_to_pickup_s: 30.0,
            backoff_initial_s: 0.5,
            backoff_max_s: 8.0,
        }
    }
}

/// Where one assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// DETECTED → ASSIGNED asked of the state manager.
    Assigning,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectNews {
    Detected,
    Assigned,
    Picking,
    /// PICKED, DROPPED, MISSED or BYPASSED.
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
struct Held {
    cnc: String,
    epoch: u64,
    stage: Stage,
    assigned_at_s: f64,
    goal_at_s: f64,
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

    /// The policy gave `key` to `cnc` (in `epoch`): ask the state manager.
    pub fn assign(&mut self, key: u64, cnc: &str, epoch: u64, now_s: f64) -> Vec<Command> {
        if !self.assignable(key, now_s) {
            return Vec::new();
        }
        self.held.insert(
            key,
            Held {
                cnc: cnc.into(),
                epoch,
                stage: Stage::Assigning,
                assigned_at_s: now_s,
                goal_at_s: now_s,
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
        h.stage = Stage::GoalSent;
        h.goal_at_s = now_s;
        vec![Command::SendGoal {
            key,
            cnc: h.cnc.clone(),
            epoch: h.epoch,
        }]
    }

    /// The CNC's answer to a goal.
    pub fn goal_answered(&mut self, key: u64, accepted: bool, now_s: f64) -> Vec<Command> {
        match self.held.get_mut(&key) {
            Some(h) if h.stage == Stage::GoalSent => {
                if accepted {
                    h.stage = Stage::Accepted;
                    Vec::new()
                } else {
                    self.revoke(key, "the CNC refused the goal", now_s)
                }
            }
            _ => Vec::new(),
        }
    }

    /// An object's new state from `objects/events`.
    pub fn object(&mut self, key: u64, news: ObjectNews) {
        match news {
            ObjectNews::Picking => {
                if let Some(h) = self.held.get_mut(&key) {
                    h.stage = Stage::Picking;
                }
            }
            ObjectNews::Finished => {
                self.held.remove(&key);
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
            ObjectNews::Assigned => {}
        }
    }

    /// A CNC's lifecycle and epoch as its status says: out of Active, or
    /// another epoch, and what it holds unstarted is revoked.
    pub fn cnc(&mut self, cnc: &str, active: bool, epoch: u64, now_s: f64) -> Vec<Command> {
        let lost: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.cnc == cnc && h.stage != Stage::Picking)
            .filter(|(_, h)| !active || h.epoch != epoch)
            .map(|(k, _)| *k)
            .collect();
        let why = if active {
            format!("CNC {cnc} came back with epoch {epoch}")
        } else {
            format!("CNC {cnc} is not active")
        };
        lost.into_iter()
            .flat_map(|k| self.revoke(k, &why, now_s))
            .collect()
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
        due.into_iter()
            .flat_map(|(k, why)| self.revoke(k, why, now_s))
            .collect()
    }

    /// Takes `key` back from its CNC, and backs it off.
    fn revoke(&mut self, key: u64, why: &str, now_s: f64) -> Vec<Command> {
        let Some(h) = self.held.remove(&key) else {
            return Vec::new();
        };
        let failures = self.backoff.get(&key).map_or(0, |b| b.1) + 1;
        let t = self.timeouts;
        let wait = (t.backoff_initial_s * 2f64.powi(failures as i32 - 1)).min(t.backoff_max_s);
        self.backoff.insert(key, (now_s + wait, failures));
        let mut out = Vec::new();
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
            d.assign(key, cnc, 1, now),
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
    fn an_accepted_goal_is_held_until_picked_or_assignment_to_pickup_s() {
        let mut d = Dispatcher::new(Timeouts::default());
        goal_out(&mut d, 1, "1", 0.0);
        goal_out(&mut d, 2, "1", 0.0);
        assert_eq!(d.goal_answered(1, true, 0.5), vec![]);
        assert_eq!(d.goal_answered(2, true, 0.5), vec![]);
        assert_eq!(d.queued("1"), 2);
        d.object(1, ObjectNews::Picking);
        assert_eq!(d.tick(29.0), vec![]);
        // Object 2 never started: revoked at 30 s; object 1 is picking.
        let c = d.tick(30.0);
        assert!(
            matches!(&c[..], [Command::Revoke { key: 2, why, .. }] if why.contains("assignment_to_pickup_s")),
            "{c:?}"
        );
        assert_eq!(d.stage(1), Some(("1".into(), Stage::Picking)));
        d.object(1, ObjectNews::Finished);
        assert_eq!(d.queued("1"), 0);
        assert!(d.assignable(1, 30.0));
    }

    #[test]
    fn a_cnc_leaving_active_or_changing_epoch_loses_what_it_has_not_started() {
        let mut d = Dispatcher::new(Timeouts::default());
        for k in 1..=3 {
            goal_out(&mut d, k, "1", 0.0);
            d.goal_answered(k, true, 0.1);
        }
        goal_out(&mut d, 9, "2", 0.0);
        d.object(3, ObjectNews::Picking);
        assert_eq!(d.cnc("1", true, 1, 0.2), vec![]);
        let c = d.cnc("1", false, 1, 0.3);
        let keys: Vec<u64> = c
            .iter()
            .filter_map(|c| match c {
                Command::Revoke { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            vec![1, 2],
            "the pick in progress is the CNC's to finish"
        );
        assert_eq!(d.stage(9), Some(("2".into(), Stage::GoalSent)));
        // A new epoch on CNC 2: its unstarted goal goes too.
        assert!(matches!(
            &d.cnc("2", true, 2, 0.4)[..],
            [Command::Revoke { key: 9, .. }]
        ));
    }

    #[test]
    fn a_refused_assignment_or_another_actor_ends_the_hold_without_a_revoke() {
        let mut d = Dispatcher::new(Timeouts::default());
        d.assign(4, "1", 1, 0.0);
        // Assigning twice is a no-op while it is held.
        assert_eq!(d.assign(4, "2", 1, 0.0), vec![]);
        assert_eq!(d.assign_answered(4, false, 0.1), vec![]);
        assert!(d.assignable(4, 0.1));
        goal_out(&mut d, 5, "1", 0.0);
        d.object(5, ObjectNews::Detected);
        assert!(d.assignable(5, 0.2) && d.tick(100.0).is_empty());
    }
}
