//! A run of a policy over an arrival list, on the reach model's clock: the
//! scheduler decides every `step_s` from what it has seen (each object
//! from its stamp on), each CNC carries out its picks as planned, and an
//! unpickable object (an injected failure) is tried and lost: its grip
//! fails at the contact, where the motion controller ends the pick. Pure and
//! deterministic; the scheduler benchmark and tests compare its picks
//! with the oracle's.

use super::oracle::Start;
use super::policy::{CncState, Decision, Scheduler};
use super::reach::Obj;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Objects binned.
    pub picked: usize,
    /// Picks tried on unpickable objects (lost).
    pub failed: usize,
    /// Objects no CNC was given before their last chance.
    pub passed: usize,
    /// Every assignment, in order: (object key, CNC index, decision time).
    pub assignments: Vec<(u64, usize, f64)>,
    /// Every assignment handed back unstarted, in order: (object key, CNC
    /// index, time). The CNC was to pick it after a pick whose grip
    /// failed, planned from the bin it never went to.
    pub revoked: Vec<(u64, usize, f64)>,
    /// Picks by CNC.
    pub per_cnc: Vec<usize>,
    /// Time each decision took, s (wall clock: measured, never decided on).
    pub decide_s: Vec<f64>,
}

/// Runs `sched` over `arrivals` from `starts` until every object has been
/// picked, lost or passed by, deciding every `step_s` and committing picks
/// that touch within `horizon_s` (as the node does; infinite: all).
pub fn run(
    sched: &mut Scheduler,
    starts: &[Start],
    arrivals: &[Obj],
    pickable: &[bool],
    step_s: f64,
    horizon_s: f64,
) -> Run {
    let mut out = Run {
        per_cnc: vec![0; starts.len()],
        ..Run::default()
    };
    let index: BTreeMap<u64, usize> = arrivals
        .iter()
        .enumerate()
        .map(|(k, o)| (o.key, k))
        .collect();
    let mut queues: Vec<VecDeque<Decision>> = vec![VecDeque::new(); starts.len()];
    let mut state: Vec<CncState> = starts
        .iter()
        .map(|s| CncState {
            active: true,
            free_at_s: s.free_at_s,
            at_mm: s.at_mm,
            queued: 0,
        })
        .collect();
    let mut open: BTreeSet<u64> = BTreeSet::new();
    let mut next_arrival = 0;
    let mut sorted: Vec<&Obj> = arrivals.iter().collect();
    sorted.sort_by(|a, b| a.traj.t0_s.total_cmp(&b.traj.t0_s).then(a.key.cmp(&b.key)));
    let end = arrivals
        .iter()
        .filter_map(|o| {
            sched
                .models
                .iter()
                .filter_map(|m| m.window(&o.traj).map(|w| w.1))
                .reduce(f64::max)
        })
        .fold(0.0, f64::max)
        + 30.0;
    let mut t = sorted.first().map_or(0.0, |o| o.traj.t0_s);
    while t <= end {
        // Picks finished by now. A grip that fails ends its pick at the
        // contact (the motion controller asks the vacuum sensor there), so
        // the CNC is free sooner and elsewhere: what it held after that
        // pick, planned from the bin, is handed back to be decided again.
        for (i, q) in queues.iter_mut().enumerate() {
            while let Some(d) = q.front().copied() {
                let ok = pickable[index[&d.key]];
                if ok && d.slot.done_at_s <= t {
                    q.pop_front();
                    out.picked += 1;
                    out.per_cnc[i] += 1;
                } else if !ok && d.slot.no_grip_done_at_s <= t {
                    q.pop_front();
                    out.failed += 1;
                    for later in q.drain(..) {
                        open.insert(later.key);
                        out.revoked.push((later.key, i, t));
                    }
                    state[i].free_at_s = d.slot.no_grip_done_at_s;
                    state[i].at_mm = d.slot.no_grip_end_mm;
                } else {
                    break;
                }
            }
            state[i].queued = q.len();
            if q.is_empty() && state[i].free_at_s < t {
                state[i].free_at_s = t;
            }
        }
        // Seen by now.
        while next_arrival < sorted.len() && sorted[next_arrival].traj.t0_s <= t {
            open.insert(sorted[next_arrival].key);
            next_arrival += 1;
        }
        // Passed by: no CNC can touch it any more.
        let gone: Vec<u64> = open
            .iter()
            .copied()
            .filter(|k| {
                let o = &arrivals[index[k]];
                sched
                    .models
                    .iter()
                    .filter(|m| m.bin(&o.class).is_some())
                    .filter_map(|m| m.window(&o.traj))
                    .all(|w| w.1 < t)
            })
            .collect();
        for k in gone {
            open.remove(&k);
            sched.forget(k);
            out.passed += 1;
        }
        let objs: Vec<Obj> = open.iter().map(|k| arrivals[index[k]].clone()).collect();
        let t0 = std::time::Instant::now();
        let decisions = sched.decide_until(&state, &objs, t + horizon_s, Default::default());
        out.decide_s.push(t0.elapsed().as_secs_f64());
        for d in decisions {
            open.remove(&d.key);
            sched.forget(d.key);
            out.assignments.push((d.key, d.cnc, t));
            let c = &mut state[d.cnc];
            c.free_at_s = d.slot.done_at_s;
            c.at_mm = d.slot.end_mm;
            queues[d.cnc].push_back(d);
            c.queued = queues[d.cnc].len();
        }
        if next_arrival == sorted.len() && open.is_empty() && queues.iter().all(|q| q.is_empty()) {
            break;
        }
        t += step_s;
    }
    out
}
