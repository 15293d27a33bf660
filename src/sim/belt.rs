//! The belt's speed over time and how far it has travelled.
//!
//! The speed is piecewise linear through knots: drift set points, the ramps
//! of scheduled stops and reversals, and belt-stop faults. Travel is its
//! exact integral, so an object's position follows from the travel at its
//! arrival, at any time, without stepping. Knots are made in fixed chunks of
//! time from the seed, so the profile never depends on how it is queried.

use super::params::{Events, SpeedProfile};
use super::rng::stream;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const CHUNK_S: f64 = 60.0;

#[derive(Debug, Clone)]
pub struct Belt {
    nominal_mps: f64,
    profile: SpeedProfile,
    ramp_s: f64,
    stops: Vec<(f64, f64)>,
    rng: ChaCha8Rng,
    drift_points: Vec<f64>,
    /// Knot times and speeds; the first is at 0.
    t: Vec<f64>,
    v: Vec<f64>,
    /// Travel at each knot, and the most travelled up to it.
    travel: Vec<f64>,
    most: Vec<f64>,
    built_to_s: f64,
}

/// A gate: 1 → `level` → 1 with linear ramps, the level held for `for_s`.
fn gate(t: f64, at: f64, for_s: f64, ramp: f64, level: f64) -> f64 {
    let f = if t <= at || t >= at + 2.0 * ramp + for_s {
        0.0
    } else if t < at + ramp {
        (t - at) / ramp
    } else if t <= at + ramp + for_s {
        1.0
    } else {
        (at + 2.0 * ramp + for_s - t) / ramp
    };
    1.0 + (level - 1.0) * f
}

impl Belt {
    /// `stops` are belt-stop faults as (start, duration).
    pub fn new(
        seed: u64,
        nominal_mps: f64,
        profile: SpeedProfile,
        ramp_s: f64,
        stops: Vec<(f64, f64)>,
    ) -> Self {
        let mut b = Belt {
            nominal_mps,
            profile,
            ramp_s,
            stops,
            rng: stream(seed, "belt"),
            drift_points: Vec::new(),
            t: Vec::new(),
            v: Vec::new(),
            travel: Vec::new(),
            most: Vec::new(),
            built_to_s: 0.0,
        };
        b.build_chunk();
        b
    }

    fn drift_point(&mut self, j: usize) -> f64 {
        let SpeedProfile::Drift { fraction, .. } = self.profile else {
            return 1.0;
        };
        while self.drift_points.len() <= j {
            let x = 1.0 + self.rng.random_range(-fraction..=fraction);
            self.drift_points.push(x);
        }
        self.drift_points[j]
    }

    fn event_windows(&self, events: Events, from: f64, to: f64) -> Vec<f64> {
        let len = events.for_s + 2.0 * self.ramp_s;
        let mut starts = Vec::new();
        if events.every_s <= 0.0 {
            starts.push(events.at_s);
        } else {
            let k0 = ((from - len - events.at_s) / events.every_s)
                .floor()
                .max(0.0) as u64;
            let mut k = k0;
            loop {
                let s = events.at_s + k as f64 * events.every_s;
                if s > to {
                    break;
                }
                starts.push(s);
                k += 1;
            }
        }
        starts
            .into_iter()
            .filter(|s| *s <= to && s + len >= from)
            .collect()
    }

    /// The speed, exactly, from the profile's parts.
    fn speed_at(&mut self, t: f64) -> f64 {
        let mut v = self.nominal_mps;
        if let SpeedProfile::Drift { period_s, .. } = self.profile {
            let j = (t / period_s).floor() as usize;
            let (a, b) = (self.drift_point(j), self.drift_point(j + 1));
            let f = t / period_s - j as f64;
            v *= a + (b - a) * f;
        }
        let (events, level) = match self.profile {
            SpeedProfile::Stop(e) => (Some(e), 0.0),
            SpeedProfile::Reverse(e, r) => (Some(e), -r),
            _ => (None, 1.0),
        };
        if let Some(e) = events {
            for s in self.event_windows(e, t, t) {
                v *= gate(t, s, e.for_s, self.ramp_s, level);
            }
        }
        for &(at, for_s) in &self.stops {
            v *= gate(t, at, for_s, self.ramp_s, 0.0);
        }
        v
    }

    /// Adds the knots of the next chunk of time.
    fn build_chunk(&mut self) {
        let (from, to) = (self.built_to_s, self.built_to_s + CHUNK_S);
        let mut times = vec![from];
        if let SpeedProfile::Drift { period_s, .. } = self.profile {
            let mut j = (from / period_s).ceil() as u64;
            while (j as f64) * period_s < to {
                times.push(j as f64 * period_s);
                j += 1;
            }
        }
        let ramp = self.ramp_s;
        let mut windows: Vec<(f64, f64)> = self.stops.clone();
        if let SpeedProfile::Stop(e) | SpeedProfile::Reverse(e, _) = self.profile {
            windows.extend(
                self.event_windows(e, from, to)
                    .into_iter()
                    .map(|s| (s, e.for_s)),
            );
        }
        for (at, for_s) in windows {
            for k in [at, at + ramp, at + ramp + for_s, at + 2.0 * ramp + for_s] {
                if k > from && k < to {
                    times.push(k);
                }
            }
        }
        // Close the chunk with a knot, so the speed between the last knot
        // and the chunk's end never depends on whether the next is built.
        times.push(to);
        times.sort_by(f64::total_cmp);
        times.dedup();
        for t in times {
            let v = self.speed_at(t);
            if let (Some(&t0), Some(&v0), Some(&d0), Some(&m0)) = (
                self.t.last(),
                self.v.last(),
                self.travel.last(),
                self.most.last(),
            ) {
                if t <= t0 {
                    continue;
                }
                let d = d0 + 0.5 * (v0 + v) * (t - t0);
                self.t.push(t);
                self.v.push(v);
                self.travel.push(d);
                self.most.push(m0.max(d));
            } else {
                self.t.push(t);
                self.v.push(v);
                self.travel.push(0.0);
                self.most.push(0.0);
            }
        }
        self.built_to_s = to;
    }

    /// Makes sure the knots reach past `t_s`.
    pub fn ensure(&mut self, t_s: f64) {
        while self.built_to_s <= t_s {
            self.build_chunk();
        }
    }

    fn segment(&self, t_s: f64) -> usize {
        self.t.partition_point(|&k| k <= t_s).saturating_sub(1)
    }

    /// Speed at `t_s`, m/s (call `ensure` first).
    pub fn speed_mps(&self, t_s: f64) -> f64 {
        let i = self.segment(t_s);
        if i + 1 >= self.t.len() {
            return self.v[i];
        }
        let f = (t_s - self.t[i]) / (self.t[i + 1] - self.t[i]);
        self.v[i] + (self.v[i + 1] - self.v[i]) * f
    }

    /// Distance travelled from 0 to `t_s`, m (call `ensure` first).
    pub fn travel_m(&self, t_s: f64) -> f64 {
        let i = self.segment(t_s);
        let dt = t_s - self.t[i];
        self.travel[i] + 0.5 * (self.v[i] + self.speed_mps(t_s)) * dt
    }

    /// The first time the travel reaches `d_m`, if it has by the knots made.
    pub fn first_time_at(&self, d_m: f64) -> Option<f64> {
        if d_m <= 0.0 {
            return Some(0.0);
        }
        let j = self.most.partition_point(|&m| m < d_m);
        if j == 0 || j >= self.t.len() {
            return None;
        }
        // The crossing is in segment j-1 → j: solve d0 + v0 τ + a τ²/2 = d.
        let i = j - 1;
        let (d0, v0, dt) = (self.travel[i], self.v[i], self.t[j] - self.t[i]);
        let a = (self.v[j] - v0) / dt;
        let need = d_m - d0;
        let tau = if a.abs() < 1e-12 {
            need / v0
        } else {
            let disc = (v0 * v0 + 2.0 * a * need).max(0.0);
            (-v0 + disc.sqrt()) / a
        };
        Some(self.t[i] + tau.clamp(0.0, dt))
    }

    /// The most travelled up to `t_s`.
    pub fn most_travel_m(&self, t_s: f64) -> f64 {
        let i = self.segment(t_s);
        self.most[i].max(self.travel_m(t_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_belt_travels_speed_times_time() {
        let mut b = Belt::new(1, 0.2, SpeedProfile::Constant, 0.5, vec![]);
        b.ensure(200.0);
        assert!((b.travel_m(150.0) - 30.0).abs() < 1e-9);
        assert!((b.first_time_at(30.0).unwrap() - 150.0).abs() < 1e-9);
    }

    #[test]
    fn a_stop_ramps_down_holds_and_ramps_up() {
        let mut b = Belt::new(1, 0.2, SpeedProfile::Constant, 0.5, vec![(10.0, 3.0)]);
        b.ensure(20.0);
        assert_eq!(b.speed_mps(9.0), 0.2);
        assert!((b.speed_mps(10.25) - 0.1).abs() < 1e-12);
        assert_eq!(b.speed_mps(12.0), 0.0);
        assert_eq!(b.speed_mps(15.0), 0.2);
        // Lost: half a ramp each side plus the stop, at 0.2 m/s.
        assert!((b.travel_m(20.0) - (4.0 - 0.2 * 3.5)).abs() < 1e-9);
    }

    #[test]
    fn a_reversal_goes_backwards_and_arrivals_wait_for_new_belt() {
        let events = Events {
            at_s: 5.0,
            every_s: 0.0,
            for_s: 4.0,
        };
        let mut b = Belt::new(1, 0.2, SpeedProfile::Reverse(events, 0.5), 1.0, vec![]);
        b.ensure(30.0);
        assert_eq!(b.speed_mps(8.0), -0.1);
        let before = b.most_travel_m(10.0);
        assert!(b.travel_m(10.0) < before - 0.3);
        // The belt passes its earlier furthest point only after the reversal.
        let t = b.first_time_at(before + 0.01).unwrap();
        assert!(t > 11.0, "{t}");
        assert!((b.travel_m(t) - (before + 0.01)).abs() < 1e-9);
    }

    #[test]
    fn drift_stays_within_its_fraction_and_is_fixed_by_the_seed() {
        let p = SpeedProfile::Drift {
            fraction: 0.1,
            period_s: 2.0,
        };
        let mut a = Belt::new(5, 0.2, p, 0.5, vec![]);
        let mut b = Belt::new(5, 0.2, p, 0.5, vec![]);
        b.ensure(100.0);
        a.ensure(100.0);
        for k in 0..1000 {
            let t = k as f64 * 0.1;
            let v = a.speed_mps(t);
            assert!((0.18..=0.22).contains(&v), "{v}");
            assert_eq!(v, b.speed_mps(t));
        }
        let mut c = Belt::new(6, 0.2, p, 0.5, vec![]);
        c.ensure(100.0);
        assert_ne!(a.travel_m(99.0), c.travel_m(99.0));
    }
}
