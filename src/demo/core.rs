//! Pure bookkeeping for the demo graph: what was sent, what came back, and
//! how long it took. No ROS types, no clock reads.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

/// Order statistics over a set of latency samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySummary {
    pub count: usize,
    pub median: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl LatencySummary {
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        LatencySummary {
            count: s.len(),
            median: at(0.5),
            p95: at(0.95),
            max: s[s.len() - 1],
        }
    }
}

/// Tracks objects the source announced until their event comes back.
#[derive(Debug, Default)]
pub struct RoundTrips {
    sent_at: HashMap<[u8; 16], Duration>,
    answered: HashSet<[u8; 16]>,
    latencies: Vec<Duration>,
    frames: u64,
    duplicates: u64,
    unknown: u64,
}

impl RoundTrips {
    /// A frame went out at `now` carrying `objects`.
    pub fn sent(&mut self, now: Duration, objects: &[[u8; 16]]) {
        self.frames += 1;
        for id in objects {
            self.sent_at.insert(*id, now);
        }
    }

    /// The event for `id` came back at `now`.
    pub fn returned(&mut self, now: Duration, id: [u8; 16]) {
        match self.sent_at.remove(&id) {
            Some(t) => {
                self.latencies.push(now.saturating_sub(t));
                self.answered.insert(id);
            }
            None if self.answered.contains(&id) => self.duplicates += 1,
            None => self.unknown += 1,
        }
    }

    pub fn outstanding(&self) -> usize {
        self.sent_at.len()
    }

    pub fn report(&self) -> DemoReport {
        DemoReport {
            frames: self.frames,
            objects: self.latencies.len() as u64 + self.sent_at.len() as u64,
            answered: self.latencies.len() as u64,
            lost: self.sent_at.len() as u64,
            duplicates: self.duplicates,
            unknown: self.unknown,
            latency: LatencySummary::of(&self.latencies),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    pub frames: u64,
    pub objects: u64,
    pub answered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unknown: u64,
    pub latency: LatencySummary,
}

impl DemoReport {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.unknown == 0 && self.objects > 0
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(f, "frames published:        {}", self.frames)?;
        writeln!(f, "objects announced:       {}", self.objects)?;
        writeln!(f, "object events received:  {}", self.answered)?;
        writeln!(f, "lost:                    {}", self.lost)?;
        writeln!(f, "duplicates:              {}", self.duplicates)?;
        writeln!(f, "events for unknown ids:  {}", self.unknown)?;
        write!(
            f,
            "round trip (detection -> object event): median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            ms(self.latency.median),
            ms(self.latency.p95),
            ms(self.latency.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn latency_summary_takes_order_statistics() {
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        let s = LatencySummary::of(&samples);
        assert_eq!(s.count, 100);
        // index round(99 * 0.5) = 50 -> 51 ms; round(99 * 0.95) = 94 -> 95 ms
        assert_eq!(s.median, ms(51));
        assert_eq!(s.p95, ms(95));
        assert_eq!(s.max, ms(100));
    }

    #[test]
    fn unanswered_objects_are_counted_lost() {
        let mut rt = RoundTrips::default();
        rt.sent(ms(0), &[[1; 16], [2; 16]]);
        rt.sent(ms(10), &[[3; 16]]);
        rt.returned(ms(4), [1; 16]);
        rt.returned(ms(13), [3; 16]);
        let r = rt.report();
        assert_eq!((r.frames, r.objects, r.answered, r.lost), (2, 3, 2, 1));
        assert_eq!(r.latency.max, ms(4));
        assert!(!r.ok());
    }

    #[test]
    fn a_repeated_event_is_a_duplicate_not_a_second_answer() {
        let mut rt = RoundTrips::default();
        rt.sent(ms(0), &[[7; 16]]);
        rt.returned(ms(2), [7; 16]);
        rt.returned(ms(3), [7; 16]);
        let r = rt.report();
        assert_eq!((r.answered, r.duplicates, r.lost), (1, 1, 0));
        assert!(!r.ok());
    }

    #[test]
    fn an_event_for_an_object_never_sent_is_unknown() {
        let mut rt = RoundTrips::default();
        rt.sent(ms(0), &[[7; 16]]);
        rt.returned(ms(1), [7; 16]);
        rt.returned(ms(2), [9; 16]);
        let r = rt.report();
        assert_eq!((r.answered, r.duplicates, r.unknown), (1, 0, 1));
        assert!(!r.ok());
    }
}
