//! The belt's speed from tracked motion: each matched detection gives a
//! sample (its x displacement over the time since the track's last
//! detection); the estimate is the interquartile mean of the samples of
//! the last `window_s` (the mean of the middle half: robust to mismatches
//! and objects being handled, and less noisy than the median), with the
//! standard error from the median absolute deviation. While the speed is
//! steady, the same estimate over a longer window (`steady_window_s`) is
//! reported instead: more samples, less noise. It restarts from the short
//! window whenever the two disagree by more than their errors allow, so a
//! change (a stop, a reversal) shows as fast as the short window sees it.
//! Stops and reversals are read from the estimate. Pure: times are
//! exposure stamps.

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
    steady_window_s: f64,
    stop_mps: f64,
    samples: VecDeque<(f64, f64)>,
    /// The long window starts no earlier than this (the last change).
    steady_since_s: f64,
}

/// At most this many samples are kept (the newest): with many tracks, a
/// second of samples is plenty, and the estimate stays O(samples).
const MAX_SAMPLES: usize = 4096;

/// The median of `v` in O(n) (reorders `v`).
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let (left, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let below = left.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (below + mid) / 2.0
    }
}

/// The interquartile mean of `v` (the mean of its middle half) and its
/// MAD-based standard error, in O(n) (reorders `v`).
fn robust_mean(v: &mut [f64]) -> (f64, f64) {
    let n = v.len();
    let m = median(v);
    let (lo, hi) = (n / 4, n - n / 4);
    v.select_nth_unstable_by(lo, f64::total_cmp);
    let tail = &mut v[lo..];
    if hi - lo < tail.len() {
        tail.select_nth_unstable_by(hi - lo, f64::total_cmp);
    }
    let iqm = tail[..hi - lo].iter().sum::<f64>() / (hi - lo) as f64;
    let mut dev: Vec<f64> = v.iter().map(|s| (s - m).abs()).collect();
    let mad = median(&mut dev);
    let stderr = 1.4826 * mad * (std::f64::consts::PI / 2.0).sqrt() / (n as f64).sqrt();
    (iqm, stderr)
}

impl SpeedEstimator {
    /// `steady_window_s` below `window_s` means no long window.
    pub fn new(window_s: f64, steady_window_s: f64, stop_mps: f64) -> Self {
        SpeedEstimator {
            window_s,
            steady_window_s: steady_window_s.max(window_s),
            stop_mps,
            samples: VecDeque::new(),
            steady_since_s: f64::NEG_INFINITY,
        }
    }

    /// A speed sample, m/s, observed at `t_s`.
    pub fn add(&mut self, t_s: f64, speed_mps: f64) {
        if speed_mps.is_finite() {
            self.samples.push_back((t_s, speed_mps));
            if self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
        }
    }

    /// The estimate from the samples of the last `window_s` before `now_s`
    /// (or of the steady window, see the module), forgetting older ones;
    /// `None` with fewer than 3 in the short window.
    pub fn estimate(&mut self, now_s: f64) -> Option<SpeedEstimate> {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t < now_s - self.steady_window_s)
        {
            self.samples.pop_front();
        }
        let short_from = now_s - self.window_s;
        let mut short: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= short_from)
            .map(|(_, s)| *s)
            .collect();
        if short.len() < 3 {
            return None;
        }
        let (fast, fast_err) = robust_mean(&mut short);
        let mut speed = (fast, fast_err, short.len());
        let long_from = (now_s - self.steady_window_s).max(self.steady_since_s);
        let mut long: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= long_from)
            .map(|(_, s)| *s)
            .collect();
        if long.len() > short.len() {
            let (slow, slow_err) = robust_mean(&mut long);
            // Agreeing within 4 standard errors (and 0.2 %, as the samples
            // of one track are correlated): steady.
            // A stop or a reversal the short window sees is never averaged away.
            let allowed = 4.0 * fast_err.hypot(slow_err) + 0.002 * slow.abs();
            let same_motion = |a: f64, b: f64| {
                (a.abs() < self.stop_mps) == (b.abs() < self.stop_mps)
                    && (a <= -self.stop_mps) == (b <= -self.stop_mps)
            };
            if (fast - slow).abs() <= allowed && same_motion(fast, slow) {
                speed = (slow, slow_err, long.len());
            } else {
                self.steady_since_s = short_from;
            }
        }
        let (m, stddev_mps, samples) = speed;
        Some(SpeedEstimate {
            speed_mps: m,
            stddev_mps,
            samples,
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
        let mut e = SpeedEstimator::new(0.5, 0.5, 0.01);
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

    #[test]
    fn a_steady_speed_uses_the_long_window_and_a_change_restarts_it() {
        let mut e = SpeedEstimator::new(0.2, 1.0, 0.005);
        // 1.5 s steady at 0.2 m/s with ±1 mm/s alternating noise.
        for k in 0..45 {
            let t = k as f64 / 30.0;
            e.add(t, 0.2 + if k % 2 == 0 { 0.001 } else { -0.001 });
        }
        let steady = e.estimate(44.0 / 30.0).unwrap();
        assert!(steady.samples >= 29, "{steady:?}");
        // A step to 0.1 m/s: the short window's estimate at once.
        for k in 45..52 {
            e.add(k as f64 / 30.0, 0.1);
        }
        let changed = e.estimate(51.0 / 30.0).unwrap();
        assert!((changed.speed_mps - 0.1).abs() < 1e-9, "{changed:?}");
        assert!(changed.samples <= 7, "{changed:?}");
        // Steady again: the long window grows from the change.
        for k in 52..75 {
            e.add(k as f64 / 30.0, 0.1);
        }
        let again = e.estimate(74.0 / 30.0).unwrap();
        assert!(
            again.samples > 7 && (again.speed_mps - 0.1).abs() < 1e-9,
            "{again:?}"
        );
    }
}
