//! The scheduler's pure core over arrival lists: no object is ever given
//! to two CNCs or twice, under every policy; the same arrivals give the
//! same assignments; no policy beats the oracle's bound (or, on small
//! runs, its exact optimum).

use cncpick::sched::eval::{run, Run};
use cncpick::sched::oracle::{exact, lagrangian_bound, upper_bound, Start};
use cncpick::sched::policy::{Policy, Scheduler};
use cncpick::sched::reach::{CncModel, Obj};
use cncpick::sched::scenario;
use proptest::prelude::*;
use std::collections::HashSet;

fn cncs(bins: &[&[usize]]) -> Vec<CncModel> {
    scenario::cell(bins)
}

fn starts(models: &[CncModel]) -> Vec<Start> {
    scenario::parked(models)
}

fn arrivals(seed: u64, per_min: f64, seconds: f64, fail: f64) -> (Vec<Obj>, Vec<bool>) {
    scenario::poisson(seed, per_min, seconds, 0.2, fail)
}

/// A run of `policy` from parked CNCs, one pick queued at most, every
/// pick committed at once, deciding every `step_s`.
fn run_from_parked(
    policy: &Policy,
    models: &[CncModel],
    objs: &[Obj],
    ok: &[bool],
    step_s: f64,
) -> Run {
    let mut s = Scheduler::new(policy.clone(), models.to_vec(), 1, 0.0);
    run(&mut s, &starts(models), objs, ok, step_s, f64::INFINITY)
}

fn policies() -> Vec<Policy> {
    Policy::all(4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn no_object_is_ever_assigned_twice_or_beyond_a_queue_under_any_policy(
        seed in any::<u64>(),
        per_min in 30.0f64..240.0,
        queue_max in 1usize..3,
        min_confidence in 0.0f64..0.8,
    ) {
        let models = cncs(&[&[0, 1, 2], &[0, 1], &[1, 2], &[0, 2]]);
        let (objs, ok) = arrivals(seed, per_min, 40.0, 0.05);
        for policy in policies() {
            let label = policy.label();
            let mut s = Scheduler::new(policy, models.clone(), queue_max, min_confidence);
            let r = run(&mut s, &starts(&models), &objs, &ok, 0.1, f64::INFINITY);
            // In time order (a hand-back comes before the decisions of its
            // step): an object is given again only once handed back.
            let mut log: Vec<(f64, bool, u64, usize)> = r.revoked.iter().map(|&(k, c, t)| (t, false, k, c)).collect();
            log.extend(r.assignments.iter().map(|&(k, c, t)| (t, true, k, c)));
            log.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut held = std::collections::HashMap::new();
            let mut ever = HashSet::new();
            for (_, assigned, key, cnc) in log {
                if !assigned {
                    prop_assert_eq!(held.remove(&key), Some(cnc), "{}: object {} handed back by a CNC not holding it", label, key);
                    continue;
                }
                prop_assert!(held.insert(key, cnc).is_none(), "{label}: object {key} assigned twice");
                ever.insert(key);
                let o = objs.iter().find(|o| o.key == key).unwrap();
                prop_assert!(o.confidence >= min_confidence, "{label}: low confidence assigned");
                prop_assert!(models[cnc].bin(&o.class).is_some(), "{label}: no bin for it on CNC {cnc}");
            }
            // Each object held at the end was tried exactly once.
            prop_assert_eq!(r.picked + r.failed, held.len(), "{}: a pick was lost or made twice", label);
            prop_assert!(held.len() + r.passed <= objs.len());
            prop_assert!(ever.len() <= objs.len());
        }
    }
}

#[test]
fn the_same_arrivals_give_the_same_assignments() {
    let all: &[usize] = &[0, 1, 2];
    let models = cncs(&[all; 4]);
    let (objs, ok) = arrivals(7, 150.0, 30.0, 0.05);
    for policy in policies() {
        let a = run_from_parked(&policy, &models, &objs, &ok, 0.1);
        let b = run_from_parked(&policy, &models, &objs, &ok, 0.1);
        assert_eq!(a.assignments, b.assignments, "{}", policy.label());
        assert!(a.picked > 0);
    }
}

#[test]
fn no_policy_beats_the_oracle() {
    let models = cncs(&[&[0, 1, 2], &[0, 1], &[1, 2], &[0, 2]]);
    for seed in 1..3 {
        let (objs, ok) = arrivals(seed, 200.0, 30.0, 0.05);
        let (span, heights) = scenario::bound_span();
        let flow = upper_bound(&models, &objs, &ok, span, &heights);
        let bound = lagrangian_bound(&models, &objs, &ok, span, &heights, 0.02, 20, 0);
        assert!(
            bound <= flow,
            "seed {seed}: lagrangian {bound} > flow {flow}"
        );
        for policy in policies() {
            let label = policy.label();
            let r = run_from_parked(&policy, &models, &objs, &ok, 0.1);
            assert!(
                r.picked <= bound,
                "seed {seed} {label}: {} > bound {bound}",
                r.picked
            );
        }
    }
    // Small runs: against the exact optimum.
    let all: &[usize] = &[0, 1, 2];
    let two = cncs(&[all, all]);
    for seed in 10..13 {
        let (mut objs, mut ok) = arrivals(seed, 90.0, 10.0, 0.0);
        objs.truncate(8);
        ok.truncate(8);
        assert_eq!(objs.len(), 8);
        let best = exact(&two, &starts(&two), &objs, &ok);
        // Three bins each: the bound's (time, bin) states are never below
        // the truth.
        let (span, heights) = scenario::bound_span();
        let tight = lagrangian_bound(&two, &objs, &ok, span, &heights, 0.02, 200, best);
        assert!(
            best <= tight,
            "seed {seed}: exact {best} > lagrangian {tight}"
        );
        for policy in policies() {
            let r = run_from_parked(&policy, &two, &objs, &ok, 0.05);
            assert!(
                r.picked <= best,
                "seed {seed} {}: {} > exact {best}",
                policy.label(),
                r.picked
            );
        }
    }
}

#[test]
fn objects_no_cnc_can_take_are_bypassed_with_a_reason() {
    use cncpick::sched::policy::CncState;
    let models = cncs(&[&[0], &[0, 2]]);
    let parked = starts(&models);
    let mut states: Vec<CncState> = parked
        .iter()
        .map(|s| CncState {
            active: true,
            free_at_s: 0.0,
            at_mm: s.at_mm,
            queued: 0,
        })
        .collect();
    let (objs, _) = arrivals(3, 60.0, 60.0, 0.0);
    let s = Scheduler::new(Policy::Greedy, models.clone(), 1, 0.0);
    // At their first sighting: only the class nobody bins is bypassed.
    let early: Vec<Obj> = objs
        .iter()
        .map(|o| Obj {
            traj: cncpick::kinematics::Trajectory {
                t0_s: 0.0,
                ..o.traj
            },
            ..o.clone()
        })
        .collect();
    let out = s.bypass(&states, &early, 0.0);
    assert!(!out.is_empty());
    for (key, why) in &out {
        let o = early.iter().find(|o| o.key == *key).unwrap();
        assert_eq!(o.class, "green_disc", "{why}");
        assert!(why.contains("not picked by any CNC"), "{why}");
    }
    // Long after: every object is past every window.
    let late = s.bypass(&states, &early, 100.0);
    assert_eq!(late.len(), early.len());
    assert!(late
        .iter()
        .filter(|(k, _)| early.iter().any(|o| o.key == *k && o.class != "green_disc"))
        .all(|(_, why)| why == "no CNC can reach it in time"));
    // With the only blue_bar CNC inactive, blue bars are bypassed at once.
    states[1].active = false;
    let out = s.bypass(&states, &early, 0.0);
    assert!(out.iter().any(
        |(k, why)| early.iter().any(|o| o.key == *k && o.class == "blue_bar")
            && why.contains("no active CNC")
    ));
}
