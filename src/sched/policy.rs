//! The assignment policies, pure: objects and CNC states in, assignments
//! out. Time comes from the objects' stamps and the `now_s` given; every
//! choice breaks ties by key or CNC index, so the same inputs give the
//! same assignments.
//!
//! - **Greedy** (upstream first): each CNC, upstream first, takes the
//!   object it can touch soonest, as most controllers ship.
//! - **Balance** (FANUC-style load balance): each object is allotted on
//!   first sight to the CNC furthest below its share (by ratio) among
//!   those with a bin for its class; a CNC picks from its allotment; an
//!   object its CNC can no longer reach passes to the next CNC downstream
//!   that can, and the quotas are corrected for it.
//! - **Lookahead** (rollout over every object seen so far): for each of
//!   the few objects a CNC could take next (those that free it soonest), the picks that would follow if
//!   every CNC then went greedy are counted over all the objects seen, and
//!   the choice with the most is made, the one using the least CNC time
//!   on a tie (Bertsekas' rollout). Made again at every decision.

use super::reach::{CncModel, Obj, Slot};
use nalgebra::Vector3;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashSet};

/// Which policy (the scheduler's `policy` param).
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Greedy,
    Balance { ratios: Vec<f64> },
    Lookahead,
}

impl Policy {
    /// Every policy, the load balancer with equal ratios for `cncs` CNCs.
    pub fn all(cncs: usize) -> Vec<Policy> {
        vec![
            Policy::Greedy,
            Policy::Balance {
                ratios: vec![1.0; cncs],
            },
            Policy::Lookahead,
        ]
    }

    pub fn label(&self) -> &'static str {
        match self {
            Policy::Greedy => "greedy",
            Policy::Balance { .. } => "balance",
            Policy::Lookahead => "lookahead",
        }
    }
}

/// A CNC as the scheduler sees it: whether it takes work, when and where
/// it is free after the picks already given to it, and how many those are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CncState {
    pub active: bool,
    pub free_at_s: f64,
    pub at_mm: Vector3<f64>,
    pub queued: usize,
}

/// One assignment: object `key` to CNC `cnc` (an index into the models),
/// with the pick as planned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub key: u64,
    pub cnc: usize,
    pub slot: Slot,
}

/// The pure scheduler: a policy, the CNC models, and the policy's memory
/// (the load balancer's allotments and counts).
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub policy: Policy,
    pub models: Vec<CncModel>,
    /// Picks a CNC may have been given and not finished.
    pub queue_max: usize,
    /// Detections below this confidence are not assigned.
    pub min_confidence: f64,
    /// CNC indices, upstream first.
    order: Vec<usize>,
    allotted: BTreeMap<u64, usize>,
    taken: Vec<f64>,
    /// Picks touching later than this are left for a later decision,
    /// but for the objects in `urgent`.
    until_s: f64,
    urgent: HashSet<u64>,
}

/// What "soonest" means for a pick: its contact, or when it frees the CNC.
#[derive(Debug, Clone, Copy)]
enum Soonest {
    Contact,
    Done,
}

/// Rounding between the two sums a pick's floor and its time are made of.
const FLOOR_SLACK_S: f64 = 1e-9;

/// The objects of one decision (by key), and for each CNC those it has a
/// window for, by when they enter it (then by index): the earliest any
/// contact with them can be, and the latest. And the picks planned so far
/// in this decision: the lookahead's rollouts ask the same question (this
/// CNC, free then and there, this object) many times over.
struct Pool<'a> {
    objs: Vec<&'a Obj>,
    by_enter: Vec<Vec<Window>>,
    slots: std::cell::RefCell<FxHashMap<SlotQuery, Option<Slot>>>,
}

/// An object's window for one CNC: its first and last contact times
/// ([`CncModel::window`]), and its index in the pool.
#[derive(Debug, Clone, Copy)]
struct Window {
    enter_s: f64,
    leave_s: f64,
    j: usize,
}

/// (CNC, object index, when free, where: x, y, z), floats by their bits.
type SlotQuery = (usize, usize, u64, [u64; 3]);

impl<'a> Pool<'a> {
    fn new(models: &[CncModel], objs: Vec<&'a Obj>) -> Self {
        let by_enter = models
            .iter()
            .map(|m| {
                let mut v: Vec<Window> = objs
                    .iter()
                    .enumerate()
                    .filter_map(|(j, o)| {
                        let (enter_s, leave_s) = m.window(&o.traj)?;
                        Some(Window {
                            enter_s,
                            leave_s,
                            j,
                        })
                    })
                    .collect();
                v.sort_by(|a, b| a.enter_s.total_cmp(&b.enter_s).then(a.j.cmp(&b.j)));
                v
            })
            .collect();
        Pool {
            objs,
            by_enter,
            slots: Default::default(),
        }
    }

    /// `models[i]`'s pick of object `j` from `c` (as [`CncModel::slot`]),
    /// worked out once per decision.
    fn slot(&self, models: &[CncModel], i: usize, j: usize, c: &CncState) -> Option<Slot> {
        let q = (
            i,
            j,
            c.free_at_s.to_bits(),
            [
                c.at_mm.x.to_bits(),
                c.at_mm.y.to_bits(),
                c.at_mm.z.to_bits(),
            ],
        );
        if let Some(s) = self.slots.borrow().get(&q) {
            return *s;
        }
        let s = models[i].slot(self.objs[j], c.free_at_s, c.at_mm);
        self.slots.borrow_mut().insert(q, s);
        s
    }
}

impl Scheduler {
    pub fn new(
        policy: Policy,
        models: Vec<CncModel>,
        queue_max: usize,
        min_confidence: f64,
    ) -> Self {
        let mut order: Vec<usize> = (0..models.len()).collect();
        order.sort_by(|&a, &b| {
            models[a]
                .picker
                .reach_x_min_m
                .total_cmp(&models[b].picker.reach_x_min_m)
                .then(a.cmp(&b))
        });
        let taken = vec![0.0; models.len()];
        Scheduler {
            policy,
            models,
            queue_max,
            min_confidence,
            order,
            allotted: BTreeMap::new(),
            taken,
            until_s: f64::INFINITY,
            urgent: HashSet::new(),
        }
    }

    /// The assignments to make now, for `objs` (the unassigned objects)
    /// and the CNCs as `cncs` says. Each object at most once.
    pub fn decide(&mut self, cncs: &[CncState], objs: &[Obj]) -> Vec<Decision> {
        self.decide_until(cncs, objs, f64::INFINITY, HashSet::new())
    }

    /// As [`Scheduler::decide`], committing only picks that touch by
    /// `until_s` (a rolling horizon: what need not be decided now is
    /// decided later, knowing more; the plans still look at every object),
    /// and any pick of an object in `urgent` (taken from a CNC that left).
    pub fn decide_until(
        &mut self,
        cncs: &[CncState],
        objs: &[Obj],
        until_s: f64,
        urgent: HashSet<u64>,
    ) -> Vec<Decision> {
        self.until_s = until_s;
        self.urgent = urgent;
        let mut objs: Vec<&Obj> = objs
            .iter()
            .filter(|o| o.confidence >= self.min_confidence)
            .collect();
        objs.sort_by_key(|o| o.key);
        let pool = Pool::new(&self.models, objs);
        let mut cncs = cncs.to_vec();
        match self.policy.clone() {
            Policy::Greedy => self.greedy(&mut cncs, &pool),
            Policy::Balance { ratios } => self.balance(&mut cncs, &pool, &ratios),
            Policy::Lookahead => self.lookahead(&mut cncs, &pool),
        }
    }

    /// Objects to bypass now, with the reason: no CNC has a bin for the
    /// class, or no active CNC with one can still touch it, even if it
    /// dropped everything it has been given (from where it is free at
    /// `now_s`). An object too uncertain is left to the next detection.
    pub fn bypass(&self, cncs: &[CncState], objs: &[Obj], now_s: f64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for o in objs {
            let binned: Vec<usize> = (0..self.models.len())
                .filter(|&i| self.models[i].bin(&o.class).is_some())
                .collect();
            if binned.is_empty() {
                out.push((
                    o.key,
                    format!("class {:?} is not picked by any CNC", o.class),
                ));
                continue;
            }
            let reachable = binned.iter().any(|&i| {
                let c = &cncs[i];
                c.active && self.models[i].slot(o, now_s.max(0.0), c.at_mm).is_some()
            });
            if !reachable {
                let active = binned.iter().filter(|&&i| cncs[i].active).count();
                out.push((
                    o.key,
                    if active == 0 {
                        format!("no active CNC has a bin for {:?}", o.class)
                    } else {
                        "no CNC can reach it in time".to_string()
                    },
                ));
            }
        }
        out
    }

    /// Forgets an object (picked, missed, bypassed, gone).
    pub fn forget(&mut self, key: u64) {
        self.allotted.remove(&key);
    }

    /// Whether a pick is to be committed now.
    fn due(&self, slot: &Slot, key: u64) -> bool {
        slot.contact_at_s <= self.until_s || self.urgent.contains(&key)
    }

    fn has_room(&self, c: &CncState) -> bool {
        c.active && c.queued < self.queue_max
    }

    fn commit(out: &mut Vec<Decision>, c: &mut CncState, key: u64, cnc: usize, slot: Slot) {
        out.push(Decision { key, cnc, slot });
        c.free_at_s = slot.done_at_s;
        c.at_mm = slot.end_mm;
        c.queued += 1;
    }

    /// Each CNC with room, upstream first, takes the object it may take
    /// (`may(object, cnc)`) that it can touch soonest, until none is left.
    fn fill(
        &self,
        cncs: &mut [CncState],
        pool: &Pool,
        may: impl Fn(&Obj, usize) -> bool,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut taken = FxHashSet::default();
        for &i in &self.order {
            while self.has_room(&cncs[i]) {
                let c = cncs[i];
                let ok = |o: &Obj| !taken.contains(&o.key) && may(o, i);
                let best = self.best(i, &c, pool, ok, 1, Soonest::Contact).pop();
                let Some((slot, key)) = best.filter(|b| self.due(&b.0, b.1)) else {
                    break;
                };
                taken.insert(key);
                Self::commit(&mut out, &mut cncs[i], key, i, slot);
            }
        }
        out
    }

    fn greedy(&mut self, cncs: &mut [CncState], pool: &Pool) -> Vec<Decision> {
        self.fill(cncs, pool, |_, _| true)
    }

    fn balance(&mut self, cncs: &mut [CncState], pool: &Pool, ratios: &[f64]) -> Vec<Decision> {
        let objs = &pool.objs;
        let ratio = |i: usize| ratios.get(i).copied().unwrap_or(1.0).max(1e-9);
        // Allot what is new, in order of arrival (upstream first).
        let mut fresh: Vec<&&Obj> = objs
            .iter()
            .filter(|o| !self.allotted.contains_key(&o.key))
            .collect();
        fresh.sort_by(|a, b| {
            self.first_window(a)
                .total_cmp(&self.first_window(b))
                .then(a.key.cmp(&b.key))
        });
        for o in fresh {
            let pick = self
                .order
                .iter()
                .copied()
                .filter(|&i| cncs[i].active && self.models[i].bin(&o.class).is_some())
                .min_by(|&a, &b| (self.taken[a] / ratio(a)).total_cmp(&(self.taken[b] / ratio(b))));
            if let Some(i) = pick {
                self.allotted.insert(o.key, i);
                self.taken[i] += 1.0;
            }
        }
        // An object its CNC can no longer reach (or an inactive CNC's)
        // passes downstream; the quotas follow it.
        for o in objs {
            let Some(&i) = self.allotted.get(&o.key) else {
                continue;
            };
            let c = cncs[i];
            if c.active && self.models[i].slot(o, c.free_at_s, c.at_mm).is_some() {
                continue;
            }
            let pos = self.order.iter().position(|&k| k == i).unwrap_or(0);
            let next = self.order[pos + 1..].iter().copied().find(|&k| {
                cncs[k].active
                    && self.models[k]
                        .slot(o, cncs[k].free_at_s, cncs[k].at_mm)
                        .is_some()
            });
            if let Some(k) = next {
                self.allotted.insert(o.key, k);
                self.taken[i] -= 1.0;
                self.taken[k] += 1.0;
            }
        }
        let allotted = &self.allotted;
        let out = self.fill(cncs, pool, |o, i| allotted.get(&o.key) == Some(&i));
        for d in &out {
            self.allotted.remove(&d.key);
        }
        out
    }

    /// When the object first enters any window.
    fn first_window(&self, o: &Obj) -> f64 {
        self.models
            .iter()
            .filter_map(|m| m.window(&o.traj).map(|w| w.0))
            .fold(f64::INFINITY, f64::min)
    }

    /// The picks CNC `i` could make next from `c`, of the objects `ok`
    /// lets it take: up to `k` of them, soonest first by `by` (ties by
    /// key). The pool lists the objects by when they enter the CNC's
    /// window, and no pick touches before that or before the CNC is free
    /// (nor is done sooner than the ride and the dwell after it), so the
    /// search stops at the first object that could not beat the k-th
    /// found: the same picks as trying every object, for a handful of
    /// intercepts.
    fn best(
        &self,
        i: usize,
        c: &CncState,
        pool: &Pool,
        ok: impl Fn(&Obj) -> bool,
        k: usize,
        by: Soonest,
    ) -> Vec<(Slot, u64)> {
        let m = &self.models[i];
        let (after_contact_s, value): (f64, fn(&Slot) -> f64) = match by {
            Soonest::Contact => (0.0, |s| s.contact_at_s),
            Soonest::Done => (m.picker.track_s + m.release_dwell_s, |s| s.done_at_s),
        };
        let order = |a: &(Slot, u64), b: &(Slot, u64)| {
            value(&a.0).total_cmp(&value(&b.0)).then(a.1.cmp(&b.1))
        };
        let mut best: Vec<(Slot, u64)> = Vec::with_capacity(k + 1);
        if k == 0 {
            return best;
        }
        for &Window {
            enter_s,
            leave_s,
            j,
        } in &pool.by_enter[i]
        {
            if best.len() == k
                && enter_s.max(c.free_at_s) + after_contact_s - FLOOR_SLACK_S
                    > value(&best[k - 1].0)
            {
                break;
            }
            // Gone past its last contact before the CNC is free: the
            // intercept would say so (`NoIntercept::Passed`, from the same
            // sum), without asking it.
            if leave_s < c.free_at_s {
                continue;
            }
            let o = pool.objs[j];
            if !ok(o) {
                continue;
            }
            let Some(slot) = pool.slot(&self.models, i, j, c) else {
                continue;
            };
            let found = (slot, o.key);
            let at = best.partition_point(|b| order(b, &found).is_lt());
            best.insert(at, found);
            best.truncate(k);
        }
        best
    }

    /// The picks CNC `i` could make next from `c` that free it soonest
    /// (the shortest cycles): up to `k` of them, soonest first (ties by
    /// key).
    fn soonest(
        &self,
        i: usize,
        c: &CncState,
        pool: &Pool,
        skip: &FxHashSet<u64>,
        k: usize,
    ) -> Vec<(Slot, u64)> {
        self.best(i, c, pool, |o| !skip.contains(&o.key), k, Soonest::Done)
    }

    /// How many of the pool's objects (less `skip`) the CNCs would pick from `cncs` if
    /// each, whenever it comes free (earliest first), took the object that
    /// frees it soonest (the base policy the lookahead improves on), and
    /// the CNC time those picks take, waiting included.
    fn rollout(&self, cncs: &[CncState], pool: &Pool, skip: &FxHashSet<u64>) -> (usize, f64) {
        let mut state: Vec<Option<CncState>> =
            cncs.iter().map(|c| c.active.then_some(*c)).collect();
        let mut taken = skip.clone();
        let mut picks = 0;
        let mut used_s = 0.0;
        loop {
            let next = state
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.map(|c| (i, c)))
                .min_by(|a, b| a.1.free_at_s.total_cmp(&b.1.free_at_s).then(a.0.cmp(&b.0)));
            let Some((i, c)) = next else {
                return (picks, used_s);
            };
            match self.soonest(i, &c, pool, &taken, 1).first() {
                Some(&(slot, key)) => {
                    taken.insert(key);
                    picks += 1;
                    used_s += slot.done_at_s - c.free_at_s;
                    state[i] = Some(CncState {
                        free_at_s: slot.done_at_s,
                        at_mm: slot.end_mm,
                        ..c
                    });
                }
                // Nothing more it can reach: it is out of the rollout.
                None => state[i] = None,
            }
        }
    }

    /// Rollout: each CNC with room, upstream first, considers the few
    /// objects that would free it soonest; for each, the picks that would
    /// follow over every object seen so far if all CNCs then went greedy
    /// are counted, and the choice with the most wins; on a tie, the one
    /// whose picks use the least CNC time (shorter cycles leave room for
    /// objects not yet seen).
    fn lookahead(&mut self, cncs: &mut [CncState], pool: &Pool) -> Vec<Decision> {
        const CANDIDATES: usize = 4;
        let mut out = Vec::new();
        let mut taken = FxHashSet::default();
        for &i in &self.order {
            while self.has_room(&cncs[i]) {
                let options = self.soonest(i, &cncs[i], pool, &taken, CANDIDATES);
                let mut best: Option<((usize, f64), Slot, u64)> = None;
                for (slot, key) in options {
                    let mut after = cncs.to_vec();
                    after[i] = CncState {
                        free_at_s: slot.done_at_s,
                        at_mm: slot.end_mm,
                        queued: cncs[i].queued + 1,
                        ..cncs[i]
                    };
                    let mut skip = taken.clone();
                    skip.insert(key);
                    let (picks, used_s) = self.rollout(&after, pool, &skip);
                    let score = (1 + picks, used_s + slot.done_at_s - cncs[i].free_at_s);
                    // More picks; on a tie, less CNC time used for them.
                    let better = |b: &(usize, f64)| {
                        score.0 > b.0 || (score.0 == b.0 && score.1 < b.1 - 1e-9)
                    };
                    if best.as_ref().is_none_or(|b| better(&b.0)) {
                        best = Some((score, slot, key));
                    }
                }
                let Some((_, slot, key)) = best.filter(|b| self.due(&b.1, b.2)) else {
                    break;
                };
                taken.insert(key);
                Self::commit(&mut out, &mut cncs[i], key, i, slot);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::scenario::{cell, parked, poisson};

    /// What [`Scheduler::best`] must find: every object `ok` lets in tried,
    /// soonest first by `by` (ties by key), the first `k`.
    fn every_object(
        s: &Scheduler,
        i: usize,
        c: &CncState,
        objs: &[&Obj],
        ok: impl Fn(&Obj) -> bool,
        k: usize,
        by: Soonest,
    ) -> Vec<(Slot, u64)> {
        let value = |s: &Slot| match by {
            Soonest::Contact => s.contact_at_s,
            Soonest::Done => s.done_at_s,
        };
        let mut all: Vec<(Slot, u64)> = objs
            .iter()
            .filter(|o| ok(o))
            .filter_map(|o| Some((s.models[i].slot(o, c.free_at_s, c.at_mm)?, o.key)))
            .collect();
        all.sort_by(|a, b| value(&a.0).total_cmp(&value(&b.0)).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// The search's shortcuts (stopping at the first object that could
        /// not beat the k-th found, passing over objects gone past their
        /// last contact) change nothing: the same picks as trying every
        /// object, from any CNC state, for either order and any k.
        #[test]
        fn the_best_picks_are_those_trying_every_object_finds(
            seed in 0u64..1_000,
            cnc in 0usize..4,
            free_at_s in 0.0f64..40.0,
            dx_mm in -150.0f64..150.0,
            dy_mm in -150.0f64..150.0,
            k in 1usize..5,
            done in proptest::bool::ANY,
            skip_every in 2u64..7,
        ) {
            let models = cell(&[&[0, 1, 2], &[0, 1], &[1, 2], &[0, 2]]);
            let (objs, _) = poisson(seed, 150.0, 40.0, 0.2, 0.0);
            let s = Scheduler::new(Policy::Lookahead, models.clone(), 3, 0.0);
            let start = parked(&models)[cnc].at_mm;
            let c = CncState {
                active: true,
                free_at_s,
                at_mm: start + Vector3::new(dx_mm, dy_mm, 0.0),
                queued: 0,
            };
            let refs: Vec<&Obj> = objs.iter().collect();
            let pool = Pool::new(&models, refs.clone());
            let ok = |o: &Obj| !o.key.is_multiple_of(skip_every);
            let by = if done { Soonest::Done } else { Soonest::Contact };
            proptest::prop_assert_eq!(
                s.best(cnc, &c, &pool, ok, k, by),
                every_object(&s, cnc, &c, &refs, ok, k, by)
            );
        }
    }
}
