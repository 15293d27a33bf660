//! A run of a policy over an arrival list, on the reach model's clock: the
//! scheduler decides every `step_s` from what it has seen (each object
//! from its stamp on), each CNC carries out its picks as planned, and an
//! unpickable object (an injected failure) is tried and lost. Pure and
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
        // Picks finished by now.
        for (i, q) in queues.iter_mut().enumerate() {
            while q.front().is_some_and(|d| d.slot.done_at_s <= t) {
                let Some(d) = q.pop_front() else { break };
                if pickable[index[&d.key]] {
                    out.picked += 1;
                    out.per_cnc[i] += 1;
                } else {
                    out.failed += 1;
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
