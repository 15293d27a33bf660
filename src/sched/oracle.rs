//! The offline clairvoyant oracle: given every arrival of a run, the most
//! picks any schedule could make with the same CNCs and kinematics.
//!
//! - [`exact`]: a search over every schedule (each CNC's sequence of
//!   picks, each pick at its earliest contact, which never hurts the
//!   picks after it); exponential, for small runs.
//! - [`upper_bound`]: a proven bound for runs of any size. Two consecutive
//!   contacts of CNC i are at least its minimum cycle `c_i` apart
//!   ([`CncModel::min_cycle_s`]), so each interval `[T + k c_i, T + (k+1)
//!   c_i)` holds at most one of its contacts, and each contact lies in its
//!   object's window. So any schedule is a matching of objects to (CNC,
//!   interval) pairs whose interval meets the object's window, and the
//!   largest such matching (a max flow) bounds every schedule.
//!
//! - [`lagrangian_bound`]: a tighter proven bound. A pick of `o` by CNC i
//!   with its contact at `t` keeps it busy for at least `a_i(b, o, t)`
//!   before (from bin `b`, where its last pick ended, to over `o` where it
//!   is at `t`, the lag, the descent) and `d_i(o, t)` after (the ride, the
//!   carry from there to its class's bin `b(o)`, the dwell): two contacts
//!   are at least `d_i(o, t) + a_i(b(o), o', t')` apart
//!   ([`CncModel::pick_parts_s`], at its least over each grid step). Relaxing
//!   "each object once" with a price `λ_o` per object leaves one longest
//!   path per CNC over a grid of (time, bin) states (times and durations
//!   rounded down: every real schedule is a path), and `Σ λ_o + Σ_i path_i(1 − λ)` bounds every
//!   schedule for any `λ ≥ 0`; subgradient steps lower it.
//!
//! Objects marked unpickable (the run's injected failures: a grip that
//! would fail whoever tried) count for no schedule.

use super::reach::{CncModel, Obj};
use nalgebra::Vector3;
use pathfinding::directed::edmonds_karp::edmonds_karp_sparse;

/// Where and when each CNC is free at the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    pub free_at_s: f64,
    pub at_mm: Vector3<f64>,
}

/// The most picks any schedule makes of `objs` (those with `pickable`
/// true). Exponential in the number of objects: keep it to a dozen or so.
pub fn exact(models: &[CncModel], starts: &[Start], objs: &[Obj], pickable: &[bool]) -> usize {
    let todo: Vec<usize> = (0..objs.len()).filter(|&k| pickable[k]).collect();
    let mut best = 0;
    let mut left = vec![true; objs.len()];
    search(
        models,
        starts,
        objs,
        &todo,
        0,
        starts.first().copied(),
        &mut left,
        0,
        &mut best,
    );
    best
}

/// CNC `k`, free as `at`, picks next one of the objects left (or stops,
/// and CNC k+1 starts from its own start).
#[allow(clippy::too_many_arguments)]
fn search(
    models: &[CncModel],
    starts: &[Start],
    objs: &[Obj],
    todo: &[usize],
    k: usize,
    at: Option<Start>,
    left: &mut [bool],
    picked: usize,
    best: &mut usize,
) {
    *best = (*best).max(picked);
    let Some(at) = at else { return };
    let remaining = todo.iter().filter(|&&o| left[o]).count();
    if picked + remaining <= *best {
        return;
    }
    // This CNC picks one more.
    for &o in todo {
        if !left[o] {
            continue;
        }
        if let Some(s) = models[k].slot(&objs[o], at.free_at_s, at.at_mm) {
            left[o] = false;
            let next = Start {
                free_at_s: s.done_at_s,
                at_mm: s.end_mm,
            };
            search(
                models,
                starts,
                objs,
                todo,
                k,
                Some(next),
                left,
                picked + 1,
                best,
            );
            left[o] = true;
        }
    }
    // Or it is done; the next CNC goes.
    if k + 1 < models.len() {
        search(
            models,
            starts,
            objs,
            todo,
            k + 1,
            Some(starts[k + 1]),
            left,
            picked,
            best,
        );
    }
}

/// A node of the bound's flow network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Source,
    Sink,
    Obj(usize),
    Interval(usize, i64),
}

/// A proven upper bound on the picks of `objs` (those `pickable`) by any
/// schedule, for objects across `y_range_m` of heights `heights_m` (the
/// span the minimum cycles are taken over).
pub fn upper_bound(
    models: &[CncModel],
    objs: &[Obj],
    pickable: &[bool],
    y_range_m: (f64, f64),
    heights_m: &[f64],
) -> usize {
    let cycles: Vec<f64> = models
        .iter()
        .map(|m| m.min_cycle_s(y_range_m, heights_m))
        .collect();
    let t0 = objs
        .iter()
        .map(|o| o.traj.t0_s)
        .fold(f64::INFINITY, f64::min);
    let mut vertices = vec![Node::Source, Node::Sink];
    let mut edges = Vec::new();
    let mut intervals = std::collections::HashSet::new();
    for (k, o) in objs.iter().enumerate() {
        if !pickable[k] {
            continue;
        }
        let mut reachable = false;
        for (i, m) in models.iter().enumerate() {
            if m.bin(&o.class).is_none() {
                continue;
            }
            let Some((enter, leave)) = m.window(&o.traj) else {
                continue;
            };
            let c = cycles[i];
            let (first, last) = (
                ((enter - t0) / c).floor() as i64,
                ((leave - t0) / c).floor() as i64,
            );
            for slot in first..=last {
                let n = Node::Interval(i, slot);
                if intervals.insert(n) {
                    vertices.push(n);
                    edges.push(((n, Node::Sink), 1i64));
                }
                edges.push(((Node::Obj(k), n), 1));
                reachable = true;
            }
        }
        if reachable {
            vertices.push(Node::Obj(k));
            edges.push(((Node::Source, Node::Obj(k)), 1));
        }
    }
    let (_, total, _) = edmonds_karp_sparse(&vertices, &Node::Source, &Node::Sink, edges);
    total as usize
}

/// The Lagrangian bound (see the module's notes): at most `iterations`
/// subgradient steps on a time grid of `grid_s`; never above
/// [`upper_bound`]'s, nor the number of pickable objects.
#[allow(clippy::too_many_arguments)]
pub fn lagrangian_bound(
    models: &[CncModel],
    objs: &[Obj],
    pickable: &[bool],
    y_range_m: (f64, f64),
    heights_m: &[f64],
    grid_s: f64,
    iterations: usize,
    target: usize,
) -> usize {
    let flow = upper_bound(models, objs, pickable, y_range_m, heights_m);
    let todo: Vec<usize> = (0..objs.len()).filter(|&k| pickable[k]).collect();
    if todo.is_empty() {
        return 0;
    }
    // A pick of object o at contact c keeps its CNC busy over [c - a, c +
    // d] at least (`CncModel::pick_parts_s`): the gantry is free at s = c - a
    // for it and again at s + a + d. Time starts early enough for any
    // first pick's approach (the CNCs are parked long before).
    let lead = models
        .iter()
        .flat_map(|m| {
            todo.iter().filter_map(|&k| {
                let w = m.window(&objs[k].traj)?;
                m.pick_parts_s(&objs[k], w)
            })
        })
        .flat_map(|(a, _, _)| a)
        .fold(0.0, f64::max);
    let t0 = todo
        .iter()
        .filter_map(|&k| {
            models
                .iter()
                .filter_map(|m| m.window(&objs[k].traj).map(|w| w.0))
                .reduce(f64::min)
        })
        .fold(f64::INFINITY, f64::min)
        - lead
        - grid_s;
    // Per CNC, a state per bin (where its last pick ended; the first may
    // start from any). An arc: taking object k with its contact in grid
    // step c, from bin `from`: the gantry is free for it from step `start`
    // (c less the approach), busy `busy` steps, then over bin `to`. Times
    // rounded down, so that every real schedule is a path:
    // floor(x) - floor(y) >= floor(x - y).
    struct Arc {
        k: usize,
        to: usize,
        busy: usize,
    }
    let cell = |t: f64| ((t - t0) / grid_s).floor() as i64;
    // Per CNC: its bins, its arcs, and by start step (from bin, arc).
    struct Cnc {
        nb: usize,
        arcs: Vec<Arc>,
        by_start: Vec<Vec<(usize, usize)>>,
    }
    let mut cncs: Vec<Cnc> = Vec::new();
    let mut steps = 0usize;
    for m in models {
        let nb = m.bins.len().max(1);
        let mut arcs = Vec::new();
        let mut starts: Vec<(usize, usize, usize)> = Vec::new();
        for &k in &todo {
            let o = &objs[k];
            let Some((enter, leave)) = m.window(&o.traj) else {
                continue;
            };
            for c in cell(enter)..=cell(leave) {
                let from_s = (t0 + c as f64 * grid_s).max(enter);
                let to_s = (t0 + (c + 1) as f64 * grid_s).min(leave);
                let Some((approach, depart, to)) = m.pick_parts_s(o, (from_s, to_s.max(from_s)))
                else {
                    continue;
                };
                let after = (depart / grid_s).floor() as i64;
                for (from, a) in approach.iter().enumerate() {
                    let ahead = (a / grid_s).floor() as i64;
                    let start = (c - ahead).max(0) as usize;
                    let busy = (ahead + after).max(1) as usize;
                    steps = steps.max(start + busy + 1);
                    starts.push((start, from, arcs.len()));
                    arcs.push(Arc { k, to, busy });
                }
            }
        }
        let mut by_start: Vec<Vec<(usize, usize)>> = Vec::new();
        for (start, from, n) in starts {
            if by_start.len() <= start {
                by_start.resize(start + 1, Vec::new());
            }
            by_start[start].push((from, n));
        }
        cncs.push(Cnc { nb, arcs, by_start });
    }
    let steps = steps.max(1);
    let mut price = vec![0.0f64; objs.len()];
    let mut best = (flow.min(todo.len())) as f64;
    let mut step_size = 1.0;
    // value[t * nb + b]: the most weight from grid step t on, free over
    // bin b (buffers reused across iterations).
    let mut value: Vec<f64> = Vec::new();
    let mut choice: Vec<Option<usize>> = Vec::new();
    for _ in 0..iterations {
        let mut used = vec![0u32; objs.len()];
        let mut total: f64 = todo.iter().map(|&k| price[k]).sum();
        for Cnc { nb, arcs, by_start } in &cncs {
            let nb = *nb;
            value.clear();
            value.resize((steps + 1) * nb, 0.0);
            choice.clear();
            choice.resize(steps * nb, None);
            for t in (0..steps).rev() {
                for b in 0..nb {
                    value[t * nb + b] = value[(t + 1) * nb + b];
                }
                for &(from, n) in by_start.get(t).map_or(&[][..], |v| &v[..]) {
                    let a = &arcs[n];
                    let w = 1.0 - price[a.k];
                    let next = (t + a.busy).min(steps);
                    let v = w + value[next * nb + a.to];
                    if w > 0.0 && v > value[t * nb + from] {
                        value[t * nb + from] = v;
                        choice[t * nb + from] = Some(n);
                    }
                }
            }
            let (mut b, top) =
                (0..nb)
                    .map(|b| (b, value[b]))
                    .fold((0, f64::MIN), |x, y| if y.1 > x.1 { y } else { x });
            total += top;
            // Walk the path to count what it used.
            let mut t = 0;
            while t < steps {
                match choice[t * nb + b] {
                    Some(n) if value[t * nb + b] > value[(t + 1) * nb + b] => {
                        let a = &arcs[n];
                        used[a.k] += 1;
                        t += a.busy;
                        b = a.to;
                    }
                    _ => t += 1,
                }
            }
        }
        best = best.min(total);
        // Subgradient: raise the price of what was used twice, lower it
        // for what was left (Polyak's step towards `target`).
        let g: Vec<f64> = todo.iter().map(|&k| 1.0 - used[k] as f64).collect();
        let norm: f64 = g.iter().map(|x| x * x).sum();
        if norm == 0.0 {
            break;
        }
        let gap = (total - target as f64).max(1.0);
        for (&k, gk) in todo.iter().zip(&g) {
            price[k] = (price[k] - step_size * gap / norm * gk).max(0.0);
        }
        step_size *= 0.97;
    }
    // Whole picks only: the bound rounds down past rounding noise.
    (best + 1e-6).floor() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinematics::Trajectory;
    use crate::motion::params::MotionParams;

    /// Two CNCs a window apart, both with a bin for red boxes.
    fn two() -> Vec<CncModel> {
        let a = MotionParams::default();
        let b = MotionParams {
            cnc_id: "2".into(),
            origin_x_m: a.origin_x_m + 0.8,
            reach_x_min_m: a.reach_x_min_m + 0.8,
            reach_x_max_m: a.reach_x_max_m + 0.8,
            bin_x_m: a.bin_x_m.iter().map(|x| x + 0.8).collect(),
            ..a.clone()
        };
        vec![CncModel::from_params(&a), CncModel::from_params(&b)]
    }

    fn parked(models: &[CncModel]) -> Vec<Start> {
        crate::sched::scenario::parked(models)
    }

    fn arrivals(n: usize, gap_s: f64, seed: u64) -> Vec<Obj> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|k| Obj {
                key: k as u64,
                class: "red_box".into(),
                traj: Trajectory {
                    x_m: 0.0,
                    y_m: 0.075 + 0.15 * rng.random_range(0..4) as f64,
                    t0_s: k as f64 * gap_s * rng.random_range(0.5..1.5),
                    vx_mps: 0.2,
                },
                height_m: 0.04,
                confidence: 0.9,
            })
            .collect()
    }

    #[test]
    fn the_bound_is_never_below_the_exact_optimum_and_both_count_only_the_pickable() {
        let models = two();
        let starts = parked(&models);
        for seed in 0..6 {
            // Dense enough that not everything can be picked.
            let objs = arrivals(9, 0.6, seed);
            let all = vec![true; objs.len()];
            let best = exact(&models, &starts, &objs, &all);
            let bound = upper_bound(&models, &objs, &all, (0.0, 0.6), &[0.04]);
            assert!(best <= bound, "seed {seed}: exact {best} > bound {bound}");
            let tight =
                lagrangian_bound(&models, &objs, &all, (0.0, 0.6), &[0.04], 0.02, 200, best);
            assert!(
                best <= tight && tight <= bound,
                "seed {seed}: exact {best}, lagrangian {tight}, flow {bound}"
            );
            assert!(
                best >= 1 && best < objs.len(),
                "seed {seed}: {best} of {}",
                objs.len()
            );
            let mut some = all.clone();
            some[0] = false;
            some[3] = false;
            assert!(exact(&models, &starts, &objs, &some) <= best);
            assert!(upper_bound(&models, &objs, &some, (0.0, 0.6), &[0.04]) <= objs.len() - 2);
        }
    }

    #[test]
    fn sparse_arrivals_are_all_picked_and_the_bound_agrees() {
        let models = two();
        let objs = arrivals(6, 8.0, 1);
        let all = vec![true; objs.len()];
        assert_eq!(exact(&models, &parked(&models), &objs, &all), 6);
        assert_eq!(upper_bound(&models, &objs, &all, (0.0, 0.6), &[0.04]), 6);
    }

    #[test]
    fn the_exact_search_matches_brute_force_over_every_assignment_and_order() {
        // Brute force: every assignment of objects to a CNC or none, each
        // CNC's objects in every order, each pick at its earliest contact.
        fn brute(models: &[CncModel], starts: &[Start], objs: &[Obj]) -> usize {
            let n = objs.len();
            let choices = models.len() + 1;
            let mut best = 0;
            for code in 0..choices.pow(n as u32) {
                let mut c = code;
                let mut per: Vec<Vec<usize>> = vec![Vec::new(); models.len()];
                for k in 0..n {
                    let w = c % choices;
                    c /= choices;
                    if w > 0 {
                        per[w - 1].push(k);
                    }
                }
                let mut total = 0;
                for (i, seq) in per.iter_mut().enumerate() {
                    let mut most = 0;
                    permute(seq, 0, &mut |order| {
                        let mut at = starts[i];
                        let mut ok = 0;
                        for &o in order {
                            match models[i].slot(&objs[o], at.free_at_s, at.at_mm) {
                                Some(s) => {
                                    at = Start {
                                        free_at_s: s.done_at_s,
                                        at_mm: s.end_mm,
                                    };
                                    ok += 1;
                                }
                                None => return,
                            }
                        }
                        most = most.max(ok);
                    });
                    total += most;
                }
                best = best.max(total);
            }
            best
        }
        fn permute(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
            if k == v.len() {
                return f(v);
            }
            for i in k..v.len() {
                v.swap(k, i);
                permute(v, k + 1, f);
                v.swap(k, i);
            }
        }
        let models = two();
        let starts = parked(&models);
        for seed in 10..14 {
            let objs = arrivals(5, 0.4, seed);
            let all = vec![true; objs.len()];
            assert_eq!(
                exact(&models, &starts, &objs, &all),
                brute(&models, &starts, &objs),
                "seed {seed}"
            );
        }
    }
}
