//! Character-counting streaming (grbl-protocol.md): the bytes sent but not
//! yet answered, each line's `\n` included, never exceed the board's
//! receive buffer; every `ok` or `error:N` answers the oldest line in
//! flight. Pure: time is passed in. Lines are checked before they are
//! queued, so nothing that would be refused by its form, or would be taken
//! as a real-time byte, ever reaches the wire.

use std::collections::VecDeque;
use std::time::Duration;

/// grbl's serial receive buffer (`[OPT:…,128]`).
pub const RX_BUFFER_BYTES: usize = 128;
/// grbl's limit on a line's length.
pub const MAX_LINE_CHARS: usize = 80;

/// Why a line may not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("{line:?}: {len} characters; GRBL takes at most {MAX_LINE_CHARS}")]
    TooLong { line: String, len: usize },
    #[error("{line:?}: character {ch:?} at {at} is a real-time command or not printable ASCII")]
    BadChar { line: String, ch: char, at: usize },
}

/// Checks a line for sending (without its `\n`).
pub fn check_line(line: &str) -> Result<(), LineError> {
    for (at, ch) in line.chars().enumerate() {
        if !(ch.is_ascii_graphic() || ch == ' ') || matches!(ch, '?' | '!' | '~') {
            return Err(LineError::BadChar {
                line: line.into(),
                ch,
                at,
            });
        }
    }
    if line.len() > MAX_LINE_CHARS {
        return Err(LineError::TooLong {
            line: line.into(),
            len: line.len(),
        });
    }
    Ok(())
}

/// A line on the wire, not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub id: u64,
    /// Bytes it takes in the receive buffer (with its `\n`).
    pub bytes: usize,
    pub sent_at: Duration,
}

#[derive(Debug, Clone)]
pub struct Streamer {
    capacity: usize,
    in_flight: VecDeque<InFlight>,
    used: usize,
}

impl Default for Streamer {
    fn default() -> Self {
        Streamer::new(RX_BUFFER_BYTES)
    }
}

impl Streamer {
    pub fn new(capacity: usize) -> Self {
        Streamer {
            capacity,
            in_flight: VecDeque::new(),
            used: 0,
        }
    }

    /// Bytes sent and not yet answered.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a line of `len` characters (without `\n`) may go now.
    pub fn fits(&self, len: usize) -> bool {
        // Its bytes with the newline: used + (len + 1) <= capacity.
        self.used + len < self.capacity
    }

    /// Records that line `id` of `len` characters went out at `now`; the
    /// caller checked `fits` first.
    pub fn sent(&mut self, id: u64, len: usize, now: Duration) {
        let bytes = len + 1;
        debug_assert!(self.used + bytes <= self.capacity);
        self.used += bytes;
        self.in_flight.push_back(InFlight {
            id,
            bytes,
            sent_at: now,
        });
    }

    /// An `ok` or `error:N` arrived: it answers the oldest line in flight
    /// (None: a reply nobody is waiting for, which is a protocol fault).
    pub fn answered(&mut self) -> Option<InFlight> {
        let f = self.in_flight.pop_front()?;
        self.used -= f.bytes;
        Some(f)
    }

    /// The oldest line in flight if it has waited longer than `timeout`.
    pub fn overdue(&self, now: Duration, timeout: Duration) -> Option<InFlight> {
        self.in_flight
            .front()
            .filter(|f| now.saturating_sub(f.sent_at) > timeout)
            .copied()
    }

    /// When the oldest line in flight becomes overdue.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Duration> {
        self.in_flight.front().map(|f| f.sent_at + timeout)
    }

    /// After a soft reset, an alarm that discards input, or a reconnect:
    /// nothing in flight will be answered. Returns what was.
    pub fn reset(&mut self) -> Vec<InFlight> {
        self.used = 0;
        self.in_flight.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_checked_before_they_are_queued() {
        assert!(check_line("G1 X-10.000 Y5 F3000").is_ok());
        assert!(matches!(
            check_line("G0 X1?"),
            Err(LineError::BadChar { ch: '?', at: 5, .. })
        ));
        assert!(matches!(
            check_line("G0\u{18}"),
            Err(LineError::BadChar { .. })
        ));
        assert!(matches!(
            check_line("G0 Xé"),
            Err(LineError::BadChar { .. })
        ));
        let long = "G1".to_string() + &" X1".repeat(30);
        assert!(matches!(
            check_line(&long),
            Err(LineError::TooLong { len: 92, .. })
        ));
    }

    proptest! {
        /// Whatever the lines and whenever the replies come, the bytes in
        /// flight never exceed the buffer, and replies answer lines in order.
        #[test]
        fn the_buffer_never_overflows_and_replies_answer_in_order(
            lens in proptest::collection::vec(0usize..=80, 1..200),
            replies in proptest::collection::vec(any::<bool>(), 1..400),
        ) {
            let mut s = Streamer::default();
            let (mut next, mut answered, mut r) = (0usize, 0u64, replies.iter().cycle());
            while answered < lens.len() as u64 {
                while next < lens.len() && s.fits(lens[next]) {
                    s.sent(next as u64, lens[next], Duration::ZERO);
                    next += 1;
                }
                prop_assert!(s.used() <= RX_BUFFER_BYTES);
                prop_assert_eq!(s.used(), (answered as usize..next).map(|k| lens[k] + 1).sum::<usize>());
                // A reply now, or when nothing more can be sent.
                let stuck = next == lens.len() || !s.fits(lens[next]);
                if *r.next().unwrap() || stuck {
                    let f = s.answered().unwrap();
                    prop_assert_eq!(f.id, answered);
                    answered += 1;
                }
            }
            prop_assert_eq!(s.used(), 0);
            prop_assert!(s.answered().is_none());
        }
    }

    #[test]
    fn the_oldest_line_times_out_and_a_reset_forgets_everything() {
        let mut s = Streamer::default();
        let t = Duration::from_secs(2);
        s.sent(1, 10, Duration::from_millis(100));
        s.sent(2, 10, Duration::from_millis(200));
        assert_eq!(s.overdue(Duration::from_millis(2100), t), None);
        assert_eq!(s.next_deadline(t), Some(Duration::from_millis(2100)));
        assert_eq!(
            s.overdue(Duration::from_millis(2101), t).map(|f| f.id),
            Some(1)
        );
        assert_eq!(
            s.reset().iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!((s.used(), s.in_flight()), (0, 0));
        assert!(s.fits(127) && !s.fits(128));
    }
}
