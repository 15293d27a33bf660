//! Benchmark `scheduler`: each policy's picks against the offline oracle's
//! bound on the same arrivals, with the reach model shared with the motion
//! controller. The load: Poisson arrivals at 100 objects/min on 4 lanes,
//! 4 CNCs, 5 % of objects unpickable (injected failures); the queue and
//! the commit horizon are the node's defaults. Then 2x overload (200/min):
//! lookahead's picks over greedy's, and the bound's (the most any schedule
//! could gain). And the decision latency of each policy with 200 live
//! objects, with the node's queue and commit horizon and with one pick a
//! CNC. Prints one JSON object on its last line. Run with
//! `bench/run scheduler`.
//!
//! `CNCPICK_BENCH_DECISIONS_ONLY=1`: the decision latency alone (a few
//! seconds), to compare two builds of the policies back to back.
//!
//! `CNCPICK_BENCH_CLAIRVOYANT=1`: every arrival is seen a minute early and
//! the failures are left out, so each policy runs with the oracle's
//! knowledge; the lookahead's picks are then a real schedule the optimum
//! is at least.

use cncpick::detector::score::quantile;
use cncpick::sched::eval::run;
use cncpick::sched::oracle::{bracket, upper_bound};
use cncpick::sched::policy::{CncState, Policy, Scheduler};
use cncpick::sched::reach::CncModel;
use cncpick::sched::scenario::{bound_span, cell, parked, poisson};
use std::time::Instant;

const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];
const SECONDS: f64 = 300.0;
const BELT_MPS: f64 = 0.2;
const FAIL: f64 = 0.05;
/// The Lagrangian bound's time grid and subgradient steps.
const GRID_S: f64 = 0.01;
const ITERATIONS: usize = 300;
/// Which classes each CNC has a bin for: every class has two or three.
const BINS: [&[usize]; 4] = [&[0, 1, 2], &[0, 1], &[1, 2], &[0, 2]];

fn policies() -> Vec<Policy> {
    Policy::all(4)
}

/// The node's defaults: how many picks a CNC may hold, and how far ahead
/// picks are committed, s (CNCPICK_BENCH_HORIZON_S overrides, to compare).
fn node_settings() -> (usize, f64) {
    let p = cncpick::sched::params::SchedParams::default();
    let horizon_s = std::env::var("CNCPICK_BENCH_HORIZON_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(p.commit_horizon_s);
    (p.queue_max as usize, horizon_s)
}

/// Picks by each policy, the bound, and the oracle's own schedule's
/// picks, over the seeds, at `per_min`.
fn load(models: &[CncModel], per_min: f64) -> (Vec<Vec<usize>>, Vec<usize>, Vec<usize>) {
    let (span, heights) = bound_span();
    let mut picks = vec![Vec::new(); policies().len()];
    let mut bounds = Vec::new();
    let mut schedules = Vec::new();
    for seed in SEEDS {
        let (objs, ok) = poisson(seed, per_min, SECONDS, BELT_MPS, FAIL);
        // Experiment: every arrival known from the start, failures known.
        let (objs, ok) = if std::env::var("CNCPICK_BENCH_CLAIRVOYANT").is_ok() {
            let kept: Vec<(cncpick::sched::reach::Obj, bool)> = objs
                .into_iter()
                .zip(ok)
                .filter(|(_, k)| *k)
                .map(|(mut o, k)| {
                    o.traj.x_m -= BELT_MPS * 60.0;
                    o.traj.t0_s -= 60.0;
                    (o, k)
                })
                .collect();
            kept.into_iter().unzip()
        } else {
            (objs, ok)
        };
        for (k, policy) in policies().into_iter().enumerate() {
            let (queue, horizon_s) = node_settings();
            let mut s = Scheduler::new(policy, models.to_vec(), queue, 0.0);
            let r = run(&mut s, &parked(models), &objs, &ok, 0.1, horizon_s);
            picks[k].push(r.picked);
        }
        let best = picks
            .iter()
            .filter_map(|p| p.last().copied())
            .max()
            .unwrap_or(0);
        let flow = upper_bound(models, &objs, &ok, span, &heights);
        let b = bracket(
            models,
            &parked(models),
            &objs,
            &ok,
            span,
            &heights,
            GRID_S,
            ITERATIONS,
            best,
        );
        eprintln!(
            "  flow bound {flow}, lagrangian bound {}, the oracle's schedule {}",
            b.bound,
            b.picks()
        );
        bounds.push(b.bound);
        schedules.push(b.picks());
        eprintln!(
            "{per_min}/min seed {seed}: bound {} picks {:?}",
            bounds.last().unwrap_or(&0),
            picks
                .iter()
                .map(|p| p.last().copied().unwrap_or(0))
                .collect::<Vec<_>>()
        );
    }
    (picks, bounds, schedules)
}

/// `{name}_{label}`: each quantile of `a ÷ b`, seed by seed.
fn put(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    a: &[usize],
    b: &[usize],
    quantiles: &[(&str, f64)],
) {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 / y as f64)
        .collect();
    for (label, q) in quantiles {
        out.insert(format!("{name}_{label}"), quantile(&ratios, *q).into());
    }
}

fn main() {
    let models = cell(&BINS);
    let mut out = serde_json::Map::new();
    if std::env::var("CNCPICK_BENCH_DECISIONS_ONLY").is_err() {
        picks(&models, &mut out);
    }
    decisions(&models, &mut out);
    println!("{}", serde_json::Value::Object(out));
}

/// Each policy's picks against the oracle's bound, at the seed's load and
/// at 2x overload.
fn picks(models: &[CncModel], out: &mut serde_json::Map<String, serde_json::Value>) {
    let (picks, bounds, schedules) = load(models, 100.0);
    const MEDIAN: (&str, f64) = ("median", 0.5);
    const MIN: (&str, f64) = ("min", 0.0);
    const MAX: (&str, f64) = ("max", 1.0);
    for (k, policy) in policies().iter().enumerate() {
        let name = format!("{}_picks_over_bound", policy.label());
        put(out, &name, &picks[k], &bounds, &[MEDIAN, MIN]);
    }
    // Where the optimum lies: at least the oracle's schedule.
    let name = "oracle_schedule_over_bound";
    put(out, name, &schedules, &bounds, &[MEDIAN, MIN]);
    let name = "lookahead_picks_over_oracle_schedule";
    put(out, name, &picks[2], &schedules, &[MEDIAN]);
    out.insert(
        "bound_median_at_100_per_min".into(),
        quantile(&bounds.iter().map(|&b| b as f64).collect::<Vec<_>>(), 0.5).into(),
    );
    let (over, over_bounds, over_schedules) = load(models, 200.0);
    let name = "lookahead_over_greedy_at_200_per_min";
    put(out, name, &over[2], &over[0], &[MEDIAN, MIN]);
    let name = "lookahead_picks_over_bound_at_200_per_min";
    put(out, name, &over[2], &over_bounds, &[MEDIAN]);
    // The most any schedule could gain over greedy: the bound over greedy.
    let name = "bound_over_greedy_at_200_per_min";
    put(out, name, &over_bounds, &over[0], &[MEDIAN, MAX]);
    // What a real schedule (the oracle's, knowing every arrival) gains.
    let name = "oracle_schedule_over_greedy_at_200_per_min";
    put(out, name, &over_schedules, &over[0], &[MEDIAN]);
}

/// Decision latency with 200 live objects: 200 objects on the belt
/// between the camera and the last window, every CNC idle.
fn decisions(models: &[CncModel], out: &mut serde_json::Map<String, serde_json::Value>) {
    let (mut live, _) = poisson(9, 2000.0, 1000.0, BELT_MPS, 0.0);
    live.truncate(200);
    let now = 0.0;
    for (k, o) in live.iter_mut().enumerate() {
        // Spread along the belt from 0.5 m to the last window's end, seen now.
        o.traj.x_m = 0.5 + 2.5 * k as f64 / 200.0;
        o.traj.t0_s = now;
    }
    let states: Vec<CncState> = parked(models)
        .iter()
        .map(|s| CncState {
            active: true,
            free_at_s: now,
            at_mm: s.at_mm,
            queued: 0,
        })
        .collect();
    // With the node's queue and commit horizon (a CNC may be given up to
    // `queue_max` picks, of those touching within the horizon), and with
    // one pick a CNC (the figure as measured before 2026-12-04).
    let (queue_max, horizon_s) = node_settings();
    for policy in policies() {
        for (queue, suffix) in [(queue_max, ""), (1, "_queue_1")] {
            let mut s = Scheduler::new(policy.clone(), models.to_vec(), queue, 0.0);
            let mut took = Vec::new();
            for _ in 0..30 {
                let t0 = Instant::now();
                let d = s.decide_until(&states, &live, now + horizon_s, Default::default());
                took.push(t0.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(d);
            }
            let name = format!("{}_decision_ms", policy.label());
            for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
                out.insert(
                    format!("{name}_{label}_200_live{suffix}"),
                    quantile(&took, q).into(),
                );
            }
        }
    }
}
