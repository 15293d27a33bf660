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
//!   rounded down: every real schedule is a path; and no path picks an
//!   object twice in a row, which no real schedule does either), and
//!   `Σ λ_o + Σ_i path_i(1 − λ)` bounds every schedule for any `λ ≥ 0`;
//!   subgradient steps lower it.
//!
//! - [`bracket`]: that bound, and below it a real schedule built from its
//!   prices, so the optimum of a large run lies between the two.
//!
//! Objects marked unpickable (the run's injected failures: a grip that
//! would fail whoever tried) count for no schedule.

use super::reach::{CncModel, Obj};
use nalgebra::Vector3;
use pathfinding::directed::edmonds_karp::edmonds_karp_sparse;

/// Each subgradient step's size is this times the last one's. At 0.97 the
/// steps had all but died out (1 % of the first after 150) before the
/// prices settled; at 0.99 the bench's 300 steps end 0 to 2 picks lower on
/// its seeds, as low as 1,000 or 3,000 steps go within a pick.
const STEP_DECAY: f64 = 0.99;

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
    priced(
        models, objs, pickable, y_range_m, heights_m, grid_s, iterations, target,
    )
    .map_or(0, |(_, best, _)| whole(best))
}

/// Whole picks only: the bound rounds down past rounding noise.
fn whole(bound: f64) -> usize {
    (bound + 1e-6).floor() as usize
}

/// The bound's grid over the pickable objects, the bound, and the prices
/// that gave it (last, after rougher ones: `Grid::prices`); None if
/// nothing is pickable.
#[allow(clippy::too_many_arguments)]
fn priced(
    models: &[CncModel],
    objs: &[Obj],
    pickable: &[bool],
    y_range_m: (f64, f64),
    heights_m: &[f64],
    grid_s: f64,
    iterations: usize,
    target: usize,
) -> Option<(Grid, f64, Vec<Vec<f64>>)> {
    let flow = upper_bound(models, objs, pickable, y_range_m, heights_m);
    let todo: Vec<usize> = (0..objs.len()).filter(|&k| pickable[k]).collect();
    if todo.is_empty() {
        return None;
    }
    let grid = Grid::new(models, objs, &todo, grid_s);
    let (best, prices) = grid.prices(objs.len(), &todo, flow, iterations, target);
    Some((grid, best, prices))
}

/// Where the optimum lies: a proven upper bound on every schedule's picks,
/// and a real schedule below it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bracket {
    /// [`lagrangian_bound`]'s.
    pub bound: usize,
    /// Per CNC, the objects it picks (indices into the run's objects) in
    /// order, each at its earliest contact from where the last pick left
    /// the gantry ([`CncModel::slot`]): a schedule the CNCs can carry out,
    /// found from the bound's prices.
    pub schedule: Vec<Vec<usize>>,
}

impl Bracket {
    /// The schedule's picks.
    pub fn picks(&self) -> usize {
        self.schedule.iter().map(Vec::len).sum()
    }
}

/// [`lagrangian_bound`], and a schedule built from its prices (a
/// Lagrangian heuristic): the CNCs in turn, in every order, each takes the
/// heaviest path over the objects no CNC before it took, an object
/// weighing `1 - α λ_o`, each pick kept a few grid steps longer than the
/// bound's least (its times are rounded down); then the path is carried
/// out with the reach model from `starts`, leaving out any pick it cannot
/// make. The most picks over the price vectors (the bound's, and the
/// rougher ones of its earlier steps: `Grid::prices`), the orders, the α
/// and the margins.
#[allow(clippy::too_many_arguments)]
pub fn bracket(
    models: &[CncModel],
    starts: &[Start],
    objs: &[Obj],
    pickable: &[bool],
    y_range_m: (f64, f64),
    heights_m: &[f64],
    grid_s: f64,
    iterations: usize,
    target: usize,
) -> Bracket {
    let mut schedule = vec![Vec::new(); models.len()];
    let Some((grid, best, prices)) = priced(
        models, objs, pickable, y_range_m, heights_m, grid_s, iterations, target,
    ) else {
        return Bracket { bound: 0, schedule };
    };
    let mut bufs = Buffers::default();
    for (price, order) in prices
        .iter()
        .flat_map(|p| orders(models.len()).into_iter().map(move |o| (p, o)))
    {
        for margin in 1..=3 {
            for alpha in [0.5, 0.75, 1.0, 1.25] {
                let mut taken = vec![false; objs.len()];
                let mut got = vec![Vec::new(); models.len()];
                for &i in &order {
                    let weight = |k: usize| {
                        if taken[k] {
                            0.0
                        } else {
                            // A little for every pick: a free object is
                            // still worth taking.
                            1.0 - alpha * price[k] + 1e-3
                        }
                    };
                    let (_, path) = grid.heaviest(i, margin, weight, &mut bufs);
                    let mut at = starts[i];
                    for k in path {
                        if taken[k] {
                            continue;
                        }
                        if let Some(s) = models[i].slot(&objs[k], at.free_at_s, at.at_mm) {
                            at = Start {
                                free_at_s: s.done_at_s,
                                at_mm: s.end_mm,
                            };
                            taken[k] = true;
                            got[i].push(k);
                        }
                    }
                }
                if got.iter().map(Vec::len).sum::<usize>()
                    > schedule.iter().map(Vec::len).sum::<usize>()
                {
                    schedule = got;
                }
            }
        }
    }
    Bracket {
        bound: whole(best),
        schedule,
    }
}

/// The orders the CNCs take their turns in: every one up to 5 CNCs, else
/// each rotation of upstream first and of downstream first.
fn orders(n: usize) -> Vec<Vec<usize>> {
    fn every(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in every(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }
    if n <= 5 {
        return every(n);
    }
    (0..n)
        .flat_map(|r| {
            let up: Vec<usize> = (0..n).map(|i| (i + r) % n).collect();
            let down: Vec<usize> = up.iter().rev().copied().collect();
            [up, down]
        })
        .collect()
}

/// One arc of a CNC's grid: taking object `k` from the bin the arc starts
/// at; the CNC is then `busy` grid steps, and over bin `to`.
struct Arc {
    k: usize,
    to: usize,
    busy: usize,
}

/// One CNC's grid: its bins, its arcs, and by start step (from bin, arc).
struct Cnc {
    nb: usize,
    arcs: Vec<Arc>,
    by_start: Vec<Vec<(usize, usize)>>,
}

/// The bound's grid: per CNC, a state per (time step, bin where its last
/// pick ended; the first may start from any).
struct Grid {
    cncs: Vec<Cnc>,
    steps: usize,
}

/// No object: the empty path's first pick.
const NONE: usize = usize::MAX;

/// One of a grid state's two best paths on: its weight, its first pick's
/// object (or [`NONE`]), and how it goes on from the state: waiting a step
/// (into that state's best, 0, or second best, 1), or taking an arc.
#[derive(Debug, Clone, Copy)]
struct Best {
    value: f64,
    first: usize,
    via: Via,
}

#[derive(Debug, Clone, Copy)]
enum Via {
    Wait(u8),
    Arc(usize),
}

impl Best {
    /// The empty path.
    const EMPTY: Best = Best {
        value: 0.0,
        first: NONE,
        via: Via::Wait(0),
    };
}

/// A state's two best paths on whose first picks differ: the best, and
/// the best of those not starting with the best's first object. A path
/// arriving from a pick of `k` goes on with the best that does not pick
/// `k` again at once (no path picks an object twice in a row).
#[derive(Debug, Clone, Copy)]
struct Two([Option<Best>; 2]);

impl Two {
    const END: Two = Two([Some(Best::EMPTY), None]);

    fn offer(&mut self, c: Best) {
        let [a, b] = &mut self.0;
        match a {
            Some(x) if c.value <= x.value => {
                if c.first != x.first && b.is_none_or(|y| c.value > y.value) {
                    *b = Some(c);
                }
            }
            Some(x) if c.first == x.first => *a = Some(c),
            _ => {
                *b = *a;
                *a = Some(c);
            }
        }
    }

    /// The best path on that does not start by picking `k`, and which of
    /// the two it is.
    fn after(&self, k: usize) -> Option<(u8, Best)> {
        match self.0 {
            [Some(a), _] if a.first != k => Some((0, a)),
            [_, Some(b)] => Some((1, b)),
            _ => None,
        }
    }
}

/// The longest-path buffers, reused across paths: `two[t * nb + b]`, the
/// two best paths from grid step t on, free over bin b.
#[derive(Default)]
struct Buffers {
    two: Vec<Two>,
}

impl Grid {
    /// An arc: taking object k with its contact in grid step c, from bin
    /// `from`: the gantry is free for it from step `start` (c less the
    /// approach), busy `busy` steps, then over bin `to`. Times rounded
    /// down, so that every real schedule is a path: floor(x) - floor(y) >=
    /// floor(x - y).
    fn new(models: &[CncModel], objs: &[Obj], todo: &[usize], grid_s: f64) -> Grid {
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
        let cell = |t: f64| ((t - t0) / grid_s).floor() as i64;
        let mut cncs: Vec<Cnc> = Vec::new();
        let mut steps = 0usize;
        for m in models {
            let nb = m.bins.len().max(1);
            let mut arcs = Vec::new();
            let mut starts: Vec<(usize, usize, usize)> = Vec::new();
            for &k in todo {
                let o = &objs[k];
                let Some((enter, leave)) = m.window(&o.traj) else {
                    continue;
                };
                for c in cell(enter)..=cell(leave) {
                    let from_s = (t0 + c as f64 * grid_s).max(enter);
                    let to_s = (t0 + (c + 1) as f64 * grid_s).min(leave);
                    let Some((approach, depart, to)) =
                        m.pick_parts_s(o, (from_s, to_s.max(from_s)))
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
        Grid {
            cncs,
            steps: steps.max(1),
        }
    }

    /// CNC `i`'s heaviest path, each object weighing `weight(k)` (only
    /// those above 0 are taken) and each pick keeping it `margin` steps
    /// more than its arc says: the weight and the objects, in order. No
    /// object is picked twice in a row (a real schedule picks each once),
    /// which the grid's states alone would allow: an object stays in a
    /// window for longer than a CNC's shortest cycle.
    fn heaviest(
        &self,
        i: usize,
        margin: usize,
        weight: impl Fn(usize) -> f64,
        bufs: &mut Buffers,
    ) -> (f64, Vec<usize>) {
        let Cnc { nb, arcs, by_start } = &self.cncs[i];
        let (nb, steps) = (*nb, self.steps);
        let two = &mut bufs.two;
        two.clear();
        two.resize((steps + 1) * nb, Two::END);
        for t in (0..steps).rev() {
            for b in 0..nb {
                let mut here = Two([None, None]);
                for (r, x) in two[(t + 1) * nb + b].0.iter().enumerate() {
                    if let Some(x) = x {
                        here.offer(Best {
                            via: Via::Wait(r as u8),
                            ..*x
                        });
                    }
                }
                two[t * nb + b] = here;
            }
            for &(from, n) in by_start.get(t).map_or(&[][..], |v| &v[..]) {
                let a = &arcs[n];
                let w = weight(a.k);
                if w <= 0.0 {
                    continue;
                }
                let next = (t + a.busy + margin).min(steps);
                let on = two[next * nb + a.to]
                    .after(a.k)
                    .map_or(0.0, |(_, x)| x.value);
                two[t * nb + from].offer(Best {
                    value: w + on,
                    first: a.k,
                    via: Via::Arc(n),
                });
            }
        }
        let (mut b, top) = (0..nb)
            .map(|b| (b, two[b].0[0].map_or(0.0, |x| x.value)))
            .fold((0, f64::MIN), |x, y| if y.1 > x.1 { y } else { x });
        // Walk the path: at each state, the best (0) or second best (1).
        let mut path = Vec::new();
        let (mut t, mut rank) = (0, 0u8);
        while t < steps {
            let Some(x) = two[t * nb + b].0[rank as usize] else {
                break;
            };
            match x.via {
                Via::Wait(r) => {
                    t += 1;
                    rank = r;
                }
                Via::Arc(n) => {
                    let a = &arcs[n];
                    path.push(a.k);
                    t = (t + a.busy + margin).min(steps);
                    b = a.to;
                    match two[t * nb + b].after(a.k) {
                        Some((r, _)) => rank = r,
                        None => break,
                    }
                }
            }
        }
        (top, path)
    }

    /// Subgradient steps on the prices of `todo`'s objects (of `n`): the
    /// lowest bound found (never above `flow`, nor `todo`'s count), and the
    /// prices that gave it, last, after those that gave the lowest bound
    /// found by the end of each earlier quarter of the steps (where they
    /// differ): rougher prices a schedule may be built from too.
    fn prices(
        &self,
        n: usize,
        todo: &[usize],
        flow: usize,
        iterations: usize,
        target: usize,
    ) -> (f64, Vec<Vec<f64>>) {
        let mut price = vec![0.0f64; n];
        let mut best = (flow.min(todo.len())) as f64;
        let mut best_price = price.clone();
        let mut kept: Vec<Vec<f64>> = Vec::new();
        let quarter = (iterations / 4).max(1);
        let mut step_size = 1.0;
        let mut bufs = Buffers::default();
        for step in 1..=iterations {
            // `step - 1` steps done: the end of a quarter?
            if step > 1 && (step - 1) % quarter == 0 && kept.last() != Some(&best_price) {
                kept.push(best_price.clone());
            }
            let mut used = vec![0u32; n];
            let mut total: f64 = todo.iter().map(|&k| price[k]).sum();
            for i in 0..self.cncs.len() {
                let (top, path) = self.heaviest(i, 0, |k| 1.0 - price[k], &mut bufs);
                total += top;
                for k in path {
                    used[k] += 1;
                }
            }
            if total < best {
                best = total;
                best_price.clone_from(&price);
            }
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
            step_size *= STEP_DECAY;
        }
        if kept.last() != Some(&best_price) {
            kept.push(best_price);
        }
        (best, kept)
    }
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

    /// Whether `b`'s schedule can be carried out: each object at most
    /// once and pickable, each CNC's picks one after another from its
    /// start, as the reach model allows.
    fn carried_out(
        models: &[CncModel],
        starts: &[Start],
        objs: &[Obj],
        pickable: &[bool],
        b: &Bracket,
    ) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (i, seq) in b.schedule.iter().enumerate() {
            let mut at = starts[i];
            for &k in seq {
                if !pickable[k] || !seen.insert(k) {
                    return Err(format!("object {k} unpickable or picked twice"));
                }
                let s = models[i]
                    .slot(&objs[k], at.free_at_s, at.at_mm)
                    .ok_or(format!("CNC {i} cannot pick object {k} then"))?;
                at = Start {
                    free_at_s: s.done_at_s,
                    at_mm: s.end_mm,
                };
            }
        }
        Ok(())
    }

    #[test]
    fn the_bracket_holds_the_exact_optimum_and_its_schedule_can_be_carried_out() {
        let models = two();
        let starts = parked(&models);
        for seed in 0..6 {
            let objs = arrivals(9, 0.6, seed);
            let mut ok = vec![true; objs.len()];
            ok[4] = false;
            let best = exact(&models, &starts, &objs, &ok);
            let b = bracket(
                &models,
                &starts,
                &objs,
                &ok,
                (0.0, 0.6),
                &[0.04],
                0.02,
                200,
                best,
            );
            carried_out(&models, &starts, &objs, &ok, &b).unwrap();
            assert!(
                b.picks() <= best && best <= b.bound,
                "seed {seed}: schedule {}, exact {best}, bound {}",
                b.picks(),
                b.bound
            );
            assert!(b.picks() >= 1, "seed {seed}");
        }
        // Sparse: every object, as the exact search finds.
        let objs = arrivals(6, 8.0, 1);
        let all = vec![true; objs.len()];
        let b = bracket(
            &models,
            &starts,
            &objs,
            &all,
            (0.0, 0.6),
            &[0.04],
            0.02,
            50,
            6,
        );
        carried_out(&models, &starts, &objs, &all, &b).unwrap();
        assert_eq!((b.picks(), b.bound), (6, 6));
    }

    #[test]
    fn the_prices_end_with_those_of_the_lowest_bound_after_rougher_ones() {
        let models = two();
        for seed in 0..3 {
            let objs = arrivals(30, 0.3, seed);
            let ok = vec![true; objs.len()];
            let todo: Vec<usize> = (0..objs.len()).collect();
            let grid = Grid::new(&models, &objs, &todo, 0.02);
            let flow = upper_bound(&models, &objs, &ok, (0.0, 0.6), &[0.04]);
            let (best, kept) = grid.prices(objs.len(), &todo, flow, 40, 0);
            // The bound each price vector gives: Σ λ + Σ_i path_i(1 − λ).
            let mut bufs = Buffers::default();
            let mut dual = |price: &[f64]| {
                todo.iter().map(|&k| price[k]).sum::<f64>()
                    + (0..models.len())
                        .map(|i| grid.heaviest(i, 0, |k| 1.0 - price[k], &mut bufs).0)
                        .sum::<f64>()
            };
            let duals: Vec<f64> = kept.iter().map(|p| dual(p)).collect();
            assert!((1..=4).contains(&kept.len()), "seed {seed}: {duals:?}");
            assert!(
                best < flow as f64,
                "seed {seed}: the steps went below the flow bound"
            );
            assert!(
                (duals[duals.len() - 1] - best).abs() < 1e-6,
                "seed {seed}: the last prices give {duals:?}, the bound {best}"
            );
            assert!(
                duals.windows(2).all(|w| w[0] > w[1]),
                "seed {seed}: each kept vector is a lower bound than the one before: {duals:?}"
            );
        }
    }

    #[test]
    fn a_cnc_path_never_picks_an_object_twice_in_a_row() {
        // One object on a slow belt, a 5.5 s window, CNCs whose shortest
        // cycle is 1.6 s: the grid alone would take it again and again.
        let models = two();
        let mut objs = arrivals(1, 1.0, 0);
        objs[0].traj.vx_mps = 0.1;
        let (enter, leave) = models[0].window(&objs[0].traj).unwrap();
        assert!(
            leave - enter > 3.0 * models[0].min_cycle_s((0.0, 0.6), &[0.04]),
            "the window holds three shortest cycles: {:.2} s, {:.2} s",
            leave - enter,
            models[0].min_cycle_s((0.0, 0.6), &[0.04])
        );
        let grid = Grid::new(&models, &objs, &[0], 0.02);
        let mut bufs = Buffers::default();
        for i in 0..models.len() {
            for margin in [0, 2] {
                let (w, path) = grid.heaviest(i, margin, |_| 1.0, &mut bufs);
                assert_eq!((w, path), (1.0, vec![0]), "CNC {i}, margin {margin}");
            }
        }
        // Two objects: each once, and the pair's weight. (Coming back to
        // an object after another pick takes two shortest cycles, 3.2 s,
        // longer than a 0.2 m/s window, 2.7 s: these paths cannot repeat
        // an object at all. On a slower belt they could.)
        let objs = arrivals(2, 0.5, 3);
        let grid = Grid::new(&models, &objs, &[0, 1], 0.02);
        let (w, mut path) = grid.heaviest(0, 0, |k| [1.0, 0.5][k], &mut bufs);
        path.sort();
        assert_eq!((w, path), (1.5, vec![0, 1]));
    }

    #[test]
    fn the_heaviest_path_is_the_best_over_states_that_remember_the_last_pick() {
        // The reference: a longest path over (step, bin, last object)
        // states, every arc not repeating the last object.
        fn reference(grid: &Grid, i: usize, margin: usize, w: &[f64]) -> f64 {
            let Cnc { nb, arcs, by_start } = &grid.cncs[i];
            let last_of = |k: usize| k + 1; // 0: none yet
            let width = w.len() + 1;
            let mut value = vec![0.0f64; (grid.steps + 1) * nb * width];
            let at = |t: usize, b: usize, l: usize| (t * nb + b) * width + l;
            for t in (0..grid.steps).rev() {
                for b in 0..*nb {
                    for l in 0..width {
                        let mut v = value[at(t + 1, b, l)];
                        for &(from, n) in by_start.get(t).map_or(&[][..], |v| &v[..]) {
                            let a = &arcs[n];
                            if from == b && last_of(a.k) != l && w[a.k] > 0.0 {
                                let next = (t + a.busy + margin).min(grid.steps);
                                v = v.max(w[a.k] + value[at(next, a.to, last_of(a.k))]);
                            }
                        }
                        value[at(t, b, l)] = v;
                    }
                }
            }
            (0..*nb).map(|b| value[at(0, b, 0)]).fold(0.0, f64::max)
        }
        use rand::{Rng, SeedableRng};
        let models = two();
        let mut bufs = Buffers::default();
        for seed in 0..24u64 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let objs = arrivals(4, 0.5, seed);
            let todo: Vec<usize> = (0..objs.len()).collect();
            let grid = Grid::new(&models, &objs, &todo, 0.05);
            let w: Vec<f64> = (0..objs.len())
                .map(|_| rng.random_range(-0.3..1.5))
                .collect();
            for i in 0..models.len() {
                for margin in 0..3 {
                    let (top, path) = grid.heaviest(i, margin, |k| w[k], &mut bufs);
                    let want = reference(&grid, i, margin, &w);
                    let ctx = format!("seed {seed}, CNC {i}, margin {margin}, path {path:?}");
                    assert!((top - want).abs() < 1e-9, "{ctx}: {top} against {want}");
                    let sum: f64 = path.iter().map(|&k| w[k]).sum();
                    assert!((sum - top).abs() < 1e-9, "{ctx}: the path weighs {sum}");
                    assert!(path.windows(2).all(|p| p[0] != p[1]), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn every_cnc_order_is_tried_up_to_five_and_each_rotation_beyond() {
        let five = orders(5);
        assert_eq!(five.len(), 120);
        assert_eq!(
            five.iter().collect::<std::collections::HashSet<_>>().len(),
            120
        );
        let seven = orders(7);
        assert_eq!(seven.len(), 14);
        for o in &seven {
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
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
