//! The belt world: objects arrive, ride the belt, get picked, fall off.
//!
//! Arrivals are a Poisson process in belt travel (a feeder puts objects on
//! moving belt, so none arrive while it stands), with lane bias, bursts and
//! a minimum gap per lane. An object on the belt sits at `travel(t) −
//! anchor`, so its exact pose is known at any time. Everything is drawn from
//! the seed; the same calls give the same world.

use super::belt::Belt;
use super::params::{Shape, SimConfig};
use super::rng::stream;
use super::truth::{EventKind, TruthEvent, TruthObject};
use rand::distr::weighted::WeightedIndex;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Place {
    /// On the belt, at travel − anchor.
    OnBelt { anchor_m: f64 },
    /// Held by a CNC's nozzle at this belt-frame point.
    Held { cnc: usize, at_m: [f64; 3] },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub id: u64,
    pub class: usize,
    pub lane: usize,
    pub y_m: f64,
    pub yaw_rad: f64,
    pub arrived_s: f64,
    pub place: Place,
}

pub struct World {
    pub cfg: Arc<SimConfig>,
    pub belt: Belt,
    rng: ChaCha8Rng,
    gap: Option<Exp<f64>>,
    lanes: WeightedIndex<f64>,
    classes: WeightedIndex<f64>,
    /// Travel at which the next arrival is due.
    next_arrival_m: f64,
    /// Per lane: anchor and footprint of the last object put on.
    lane_tail: Vec<Option<(f64, f64)>>,
    pending: Vec<Object>,
    objects: BTreeMap<u64, Object>,
    next_id: u64,
    now_s: f64,
}

/// The length an object takes along the belt whatever its yaw.
fn footprint_m(length: f64, width: f64) -> f64 {
    length.hypot(width)
}

impl World {
    pub fn new(cfg: Arc<SimConfig>, belt_stops: Vec<(f64, f64)>) -> Self {
        let belt = Belt::new(
            cfg.seed,
            cfg.speed_nominal_mps,
            cfg.profile,
            cfg.ramp_s,
            belt_stops,
        );
        let per_m = cfg.arrival_rate_per_min / 60.0 / cfg.speed_nominal_mps;
        let gap = (per_m > 0.0).then(|| Exp::new(per_m).expect("a positive rate"));
        let lanes = WeightedIndex::new(cfg.lane_bias.clone()).expect("checked lane_bias");
        let classes = WeightedIndex::new(cfg.classes.iter().map(|c| c.weight).collect::<Vec<_>>())
            .expect("checked class_weights");
        let mut rng = stream(cfg.seed, "arrivals");
        let next_arrival_m = gap.map(|g| g.sample(&mut rng)).unwrap_or(f64::INFINITY);
        World {
            lane_tail: vec![None; cfg.lanes],
            cfg,
            belt,
            rng,
            gap,
            lanes,
            classes,
            next_arrival_m,
            pending: Vec::new(),
            objects: BTreeMap::new(),
            next_id: 1,
            now_s: 0.0,
        }
    }

    pub fn now_s(&self) -> f64 {
        self.now_s
    }

    /// Draws the object(s) of one arrival at belt travel `at_m`.
    fn arrive(&mut self, at_m: f64) {
        let n = if self.rng.random_bool(self.cfg.burst_probability) {
            self.rng.random_range(2..=self.cfg.burst_size_max)
        } else {
            1
        };
        let lane_w = self.cfg.belt_width_m / self.cfg.lanes as f64;
        for _ in 0..n {
            let lane = self.lanes.sample(&mut self.rng);
            let class = self.classes.sample(&mut self.rng);
            let c = &self.cfg.classes[class];
            let yaw_rad = match c.shape {
                Shape::Box => self
                    .rng
                    .random_range(-std::f64::consts::FRAC_PI_2..std::f64::consts::FRAC_PI_2),
                Shape::Disc => 0.0,
            };
            let reach = footprint_m(c.length_m, c.width_m);
            // A twin beside it, if two fit across the lane (drawn only when
            // asked for, so runs without twins keep their random draws).
            let twin = self.cfg.pair_probability > 0.0
                && 2.0 * reach + self.cfg.min_gap_m <= lane_w
                && self.rng.random_bool(self.cfg.pair_probability);
            let (y_m, twin_y_m) = if twin {
                let slack = lane_w - 2.0 * reach - self.cfg.min_gap_m;
                let y = lane as f64 * lane_w + reach / 2.0 + self.rng.random_range(0.0..=slack);
                (y, Some(y + reach + self.cfg.min_gap_m))
            } else {
                let slack = ((lane_w - reach.min(lane_w)) / 2.0).max(0.0);
                let y = (lane as f64 + 0.5) * lane_w + self.rng.random_range(-slack..=slack);
                (y, None)
            };
            // Keep the gap to the object before it in the lane.
            let mut anchor_m = at_m;
            if let Some((prev, prev_reach)) = self.lane_tail[lane] {
                anchor_m = anchor_m.max(prev + (prev_reach + reach) / 2.0 + self.cfg.min_gap_m);
            }
            self.lane_tail[lane] = Some((anchor_m, reach));
            for y_m in std::iter::once(y_m).chain(twin_y_m) {
                self.pending.push(Object {
                    id: self.next_id,
                    class,
                    lane,
                    y_m,
                    yaw_rad,
                    arrived_s: 0.0,
                    place: Place::OnBelt { anchor_m },
                });
                self.next_id += 1;
            }
        }
    }

    /// Runs the world to `t_s`: arrivals and objects falling off the end.
    /// Returns what happened, in time order.
    pub fn advance_to(&mut self, t_s: f64) -> Vec<TruthEvent> {
        let t_s = t_s.max(self.now_s);
        self.belt.ensure(t_s + 1.0);
        let most = self.belt.most_travel_m(t_s);
        let mut events = Vec::new();
        while self.next_arrival_m <= most {
            let at = self.next_arrival_m;
            self.arrive(at);
            let g = self.gap.expect("an arrival needs a rate");
            self.next_arrival_m += g.sample(&mut self.rng);
        }
        let mut still = Vec::new();
        for mut o in std::mem::take(&mut self.pending) {
            let Place::OnBelt { anchor_m } = o.place else {
                continue;
            };
            if anchor_m <= most {
                o.arrived_s = self.belt.first_time_at(anchor_m).unwrap_or(t_s);
                events.push(TruthEvent::new(o.arrived_s, o.id, EventKind::Arrived));
                self.objects.insert(o.id, o);
            } else {
                still.push(o);
            }
        }
        self.pending = still;
        let travel = self.belt.travel_m(t_s);
        let length = self.cfg.belt_length_m;
        let mut gone = Vec::new();
        for o in self.objects.values() {
            let Place::OnBelt { anchor_m } = o.place else {
                continue;
            };
            let c = &self.cfg.classes[o.class];
            let half = footprint_m(c.length_m, c.width_m) / 2.0;
            let x = travel - anchor_m;
            if x - half > length {
                let at = self
                    .belt
                    .first_time_at(anchor_m + length + half)
                    .unwrap_or(t_s);
                gone.push(TruthEvent::new(at, o.id, EventKind::FellOff));
            } else if x + half < 0.0 {
                let mut e = TruthEvent::new(t_s, o.id, EventKind::FellOff);
                e.detail = "upstream end".into();
                gone.push(e);
            }
        }
        for e in &gone {
            self.objects.remove(&e.object_id);
        }
        events.extend(gone);
        events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.object_id.cmp(&b.object_id)));
        self.now_s = t_s;
        events
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    pub fn get(&self, id: u64) -> Option<&Object> {
        self.objects.get(&id)
    }

    /// Where an object is at `t_s` (belt frame; z is its top).
    pub fn position_m(&self, o: &Object, t_s: f64) -> [f64; 3] {
        let h = self.cfg.classes[o.class].height_m;
        match o.place {
            Place::OnBelt { anchor_m } => [self.belt.travel_m(t_s) - anchor_m, o.y_m, h],
            Place::Held { at_m, .. } => at_m,
        }
    }

    /// The ground truth of every object at `t_s` (≤ the time advanced to).
    pub fn truth(&self, t_s: f64) -> Vec<TruthObject> {
        let v = self.belt.speed_mps(t_s);
        self.objects
            .values()
            .map(|o| {
                let c = &self.cfg.classes[o.class];
                let (state, cnc, vx) = match o.place {
                    Place::OnBelt { .. } => ("on_belt", None, v),
                    Place::Held { cnc, .. } => ("held", Some(cnc), 0.0),
                };
                TruthObject {
                    id: o.id,
                    class: c.name.clone(),
                    lane: o.lane as u32,
                    position_m: self.position_m(o, t_s),
                    yaw_rad: o.yaw_rad,
                    length_m: c.length_m,
                    width_m: c.width_m,
                    velocity_x_mps: vx,
                    state: state.into(),
                    cnc: cnc.map(|i| self.cfg.cncs[i].id.clone()),
                    arrived_s: o.arrived_s,
                }
            })
            .collect()
    }

    /// A nozzle takes an object off the belt.
    pub fn hold(&mut self, id: u64, cnc: usize, at_m: [f64; 3]) {
        if let Some(o) = self.objects.get_mut(&id) {
            o.place = Place::Held { cnc, at_m };
        }
    }

    /// A held object moves with its nozzle.
    pub fn carry(&mut self, id: u64, at_m: [f64; 3]) {
        if let Some(Object {
            place: Place::Held { at_m: p, .. },
            ..
        }) = self.objects.get_mut(&id)
        {
            *p = at_m;
        }
    }

    /// A held object put down on the belt at belt point (x, y) at `t_s`.
    pub fn put_on_belt(&mut self, id: u64, x_m: f64, y_m: f64, t_s: f64) {
        let travel = self.belt.travel_m(t_s);
        let lane = self.cfg.lane_of(y_m);
        if let Some(o) = self.objects.get_mut(&id) {
            o.place = Place::OnBelt {
                anchor_m: travel - x_m,
            };
            o.y_m = y_m;
            o.lane = lane;
        }
    }

    /// Removes an object from the world (binned or dropped off the belt).
    pub fn remove(&mut self, id: u64) -> Option<Object> {
        self.objects.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::params::SimParams;

    fn world(p: SimParams) -> World {
        World::new(Arc::new(p.config().unwrap()), vec![])
    }

    #[test]
    fn arrivals_come_at_the_configured_rate_and_respect_lane_bias() {
        let p = SimParams {
            arrival_rate_per_min: 120.0,
            lane_bias: vec![3.0, 1.0, 0.0, 0.0],
            burst_probability: 0.0,
            ..SimParams::default()
        };
        let mut w = world(p);
        let mut per_lane = [0usize; 4];
        let mut arrivals = 0;
        for k in 1..=600 {
            for e in w.advance_to(k as f64) {
                if e.kind == EventKind::Arrived {
                    arrivals += 1;
                    per_lane[w.get(e.object_id).map(|o| o.lane).unwrap_or(0)] += 1;
                }
            }
        }
        // 120 a minute for 10 minutes: 1200 expected, Poisson σ ≈ 35.
        assert!((1080..=1320).contains(&arrivals), "{arrivals}");
        assert_eq!(per_lane[2] + per_lane[3], 0);
        let share = per_lane[0] as f64 / arrivals as f64;
        assert!((0.70..=0.80).contains(&share), "{share}");
    }

    #[test]
    fn objects_in_a_lane_keep_their_gap_and_fall_off_the_end() {
        let p = SimParams {
            arrival_rate_per_min: 600.0,
            burst_probability: 0.5,
            ..SimParams::default()
        };
        let mut w = world(p.clone());
        let mut fell = 0;
        for k in 1..=300 {
            let t = k as f64 * 0.1;
            for e in w.advance_to(t) {
                if e.kind == EventKind::FellOff {
                    fell += 1;
                    // 0.2 m/s from x = 0: off a 4 m belt after 20 s and more.
                    assert!(e.t_s > 20.0 && e.t_s <= t, "{e:?}");
                }
            }
            let mut by_lane: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
            for o in w.objects() {
                let c = &w.cfg.classes[o.class];
                by_lane
                    .entry(o.lane)
                    .or_default()
                    .push((w.position_m(o, t)[0], footprint_m(c.length_m, c.width_m)));
            }
            for list in by_lane.values_mut() {
                list.sort_by(|a, b| a.0.total_cmp(&b.0));
                for pair in list.windows(2) {
                    let gap = pair[1].0 - pair[0].0 - (pair[0].1 + pair[1].1) / 2.0;
                    assert!(gap >= p.min_gap_m - 1e-9, "gap {gap}");
                }
            }
            for o in w.objects() {
                assert!(w.position_m(o, t)[0] <= p.belt_length_m + 0.1);
            }
        }
        assert!(fell > 0);
    }

    #[test]
    fn the_truth_is_the_same_however_the_world_is_stepped() {
        let mut a = world(SimParams::default());
        let mut b = world(SimParams::default());
        for k in 1..=300 {
            a.advance_to(k as f64 * 0.1);
        }
        b.advance_to(30.0);
        assert_eq!(a.truth(30.0), b.truth(30.0));
        assert!(!a.truth(30.0).is_empty());
    }
}
