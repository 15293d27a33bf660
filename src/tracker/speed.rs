//! The belt's speed from tracked motion: each matched detection gives a
//! sample (its x displacement over the time since the track's last
//! detection); the estimate is the interquartile mean of the samples of
//! the last `window_s` (the mean of the middle half: robust to mismatches
//! and objects being handled, and less noisy than the median), with the
//! standard error from the median absolute deviation. Stops and reversals
//! are read from the estimate. Pure: times are exposure stamps.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedEstimate {
    pub speed_mps: f64,
    /// Standard error of the estimate (MAD-based), m/s.
    pub stddev_mps: f64,
    pub samples: usize,
    /// |speed| below the stop threshold.
    pub stopped: bool,
    /// Moving backwards (beyond the stop threshold).
    pub reversed: bool,
}

#[derive(Debug, Clone)]
pub struct SpeedEstimator {
    window_s: f64,
    stop_mps: f64,
    samples: VecDeque<(f64, f64)>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl SpeedEstimator {
    pub fn new(window_s: f64, stop_mps: f64) -> Self {
        SpeedEstimator {
            window_s,
            stop_mps,
            samples: VecDeque::new(),
        }
    }

    /// A speed sample, m/s, observed at `t_s`.
    pub fn add(&mut self, t_s: f64, speed_mps: f64) {
        if speed_mps.is_finite() {
            self.samples.push_back((t_s, speed_mps));
        }
    }

    /// The estimate from the samples of the last `window_s` before `now_s`
    /// (older ones are forgotten); `None` with fewer than 3.
    pub fn estimate(&mut self, now_s: f64) -> Option<SpeedEstimate> {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t < now_s - self.window_s)
        {
            self.samples.pop_front();
        }
        let n = self.samples.len();
        if n < 3 {
            return None;
        }
        let mut v: Vec<f64> = self.samples.iter().map(|(_, s)| *s).collect();
        let m = median(&mut v);
        // v is sorted now: the middle half's mean.
        let (lo, hi) = (n / 4, n - n / 4);
        let iqm = v[lo..hi].iter().sum::<f64>() / (hi - lo) as f64;
        let mut dev: Vec<f64> = v.iter().map(|s| (s - m).abs()).collect();
        let mad = median(&mut dev);
        let stddev_mps = 1.4826 * mad * (std::f64::consts::PI / 2.0).sqrt() / (n as f64).sqrt();
        let m = iqm;
        Some(SpeedEstimate {
            speed_mps: m,
            stddev_mps,
            samples: n,
            stopped: m.abs() < self.stop_mps,
            reversed: m <= -self.stop_mps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_do_not_move_the_median_and_old_samples_are_forgotten() {
        let mut e = SpeedEstimator::new(0.5, 0.01);
        for k in 0..30 {
            let t = k as f64 / 30.0;
            e.add(t, 0.2 + if k % 2 == 0 { 0.001 } else { -0.001 });
        }
        e.add(1.0, 5.0); // a mismatch
        let s = e.estimate(1.0).unwrap();
        assert!((s.speed_mps - 0.2).abs() < 0.0011, "{s:?}");
        assert!(s.stddev_mps > 0.0 && s.stddev_mps < 0.001);
        assert!(!s.stopped && !s.reversed);
        // A stop: the old samples age out.
        for k in 0..16 {
            e.add(2.0 + k as f64 / 30.0, 0.0);
        }
        let s = e.estimate(2.5).unwrap();
        assert!(s.stopped, "{s:?}");
        for k in 0..16 {
            e.add(3.0 + k as f64 / 30.0, -0.1);
        }
        assert!(e.estimate(3.5).unwrap().reversed);
        assert!(e.estimate(10.0).is_none());
    }
}
