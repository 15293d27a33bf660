//! Fast DDS participant ids for restarted node processes.
//!
//! Fast DDS numbers a process's participant (0, 1, 2, …) by the first
//! whose ports are free, and its ports follow from that number. A killed
//! process frees its ports at once, so the process that replaces it takes
//! the same number and the same ports, while every peer still holds the
//! dead participant, at those ports, until its lease runs out (10 s in
//! `params/fastdds.xml`). Measured here (a killed and restarted
//! `kit_example`, an rclpy client asking its `get_state` every 0.2 s):
//! the requests reached the new process 1.9–3.4 s after its start, all at
//! once; restarted with another number (or after the lease), 0.3–0.9 s.
//! So a supervisor gives each restarted process a number of its own, not
//! given to anyone within [`QUARANTINE`].
//!
//! The numbers come from [`IDS`]: with ROS_AUTOMATIC_DISCOVERY_RANGE
//! LOCALHOST (the cell's default), a participant looks for its peers at
//! the ports of numbers 0–31 only, so every number must be below 32; the
//! first processes take the low ones by themselves. A number a live
//! participant already holds is not lost either: Fast DDS then moves to
//! the next free ports, as it does for its own numbering.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// The participant numbers restarted processes get.
pub const IDS: RangeInclusive<u8> = 16..=31;

/// How long a number rests after its process died: longer than the
/// participant lease in `params/fastdds.xml` (10 s), so that no peer still
/// holds the dead participant when the number is given again.
pub const QUARANTINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Held(String),
    Released(Instant),
}

/// Which restarted process holds which participant number.
#[derive(Debug, Clone)]
pub struct ParticipantIds {
    ids: RangeInclusive<u8>,
    quarantine: Duration,
    slots: BTreeMap<u8, Slot>,
}

impl Default for ParticipantIds {
    fn default() -> Self {
        ParticipantIds::new(IDS, QUARANTINE)
    }
}

impl ParticipantIds {
    pub fn new(ids: RangeInclusive<u8>, quarantine: Duration) -> Self {
        ParticipantIds {
            ids,
            quarantine,
            slots: BTreeMap::new(),
        }
    }

    /// A number for `node`'s new process, started at `now`. The number its
    /// last process held (if any) is released at `now`. The lowest number
    /// nobody holds that was never given or was released at least the
    /// quarantine before `now`; failing that, the one released longest
    /// ago; None when every number is held (Fast DDS then numbers the
    /// process itself).
    pub fn take(&mut self, node: &str, now: Instant) -> Option<u8> {
        for slot in self.slots.values_mut() {
            if matches!(slot, Slot::Held(n) if n == node) {
                *slot = Slot::Released(now);
            }
        }
        let rested = |at: &Instant| now.saturating_duration_since(*at) >= self.quarantine;
        let id = self
            .ids
            .clone()
            .find(|id| match self.slots.get(id) {
                None => true,
                Some(Slot::Released(at)) => rested(at),
                Some(Slot::Held(_)) => false,
            })
            .or_else(|| {
                self.slots
                    .iter()
                    .filter_map(|(id, s)| match s {
                        Slot::Released(at) => Some((*at, *id)),
                        Slot::Held(_) => None,
                    })
                    .min()
                    .map(|(_, id)| id)
            })?;
        self.slots.insert(id, Slot::Held(node.to_string()));
        Some(id)
    }

    /// The number `node`'s process holds, if it was given one.
    pub fn held_by(&self, node: &str) -> Option<u8> {
        self.slots
            .iter()
            .find(|(_, s)| matches!(s, Slot::Held(n) if n == node))
            .map(|(id, _)| *id)
    }
}

/// `profile` (a Fast DDS XML profiles file) with `<participantID>id` in
/// its default participant profile; None when it has no default
/// participant profile with an `<rtps>` element, or already sets an id.
pub fn with_participant_id(profile: &str, id: u8) -> Option<String> {
    if profile.contains("<participantID>") {
        return None;
    }
    let participant = profile
        .match_indices("<participant ")
        .map(|(at, _)| at)
        .find(|&at| {
            profile[at..]
                .split_once('>')
                .is_some_and(|(open, _)| open.contains("is_default_profile=\"true\""))
        })?;
    let end = participant + profile[participant..].find("</participant>")?;
    let rtps = participant + profile[participant..end].find("<rtps>")? + "<rtps>".len();
    Some(format!(
        "{}\n        <participantID>{id}</participantID>{}",
        &profile[..rtps],
        &profile[rtps..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_restarted_node_never_gets_a_number_that_died_within_the_quarantine() {
        let t0 = Instant::now();
        let mut ids = ParticipantIds::new(16..=18, Duration::from_secs(15));
        assert_eq!(ids.take("camera", t0), Some(16));
        assert_eq!(ids.take("tracker", t0), Some(17));
        // The camera dies again 5 s later: 16 rests, 18 is fresh.
        assert_eq!(ids.take("camera", at(t0, 5)), Some(18));
        assert_eq!(ids.held_by("camera"), Some(18));
        // The tracker at 10 s: 16 rested only 5 s, 17 just died, 18 is
        // held, so the one released longest ago is the best there is.
        assert_eq!(ids.take("tracker", at(t0, 10)), Some(16));
        // At 26 s, 17 (released at 10 s) has rested 16 s: the lowest rested.
        assert_eq!(ids.take("camera", at(t0, 26)), Some(17));
        assert_eq!(ids.held_by("tracker"), Some(16));
    }

    #[test]
    fn when_every_number_is_held_fast_dds_numbers_the_process() {
        let t0 = Instant::now();
        let mut ids = ParticipantIds::new(20..=21, Duration::from_secs(15));
        assert_eq!(ids.take("a", t0), Some(20));
        assert_eq!(ids.take("b", t0), Some(21));
        assert_eq!(ids.take("c", t0), None);
        assert_eq!(ids.held_by("c"), None);
        // "a" restarts: its own number is released first, and is the only
        // one free, rested or not.
        assert_eq!(ids.take("a", at(t0, 1)), Some(20));
    }

    #[test]
    fn the_numbers_stay_where_localhost_discovery_looks_and_outlast_the_lease() {
        assert!(*IDS.end() < 32, "LOCALHOST discovery looks at 0-31 only");
        let profile = crate::cell::host::DDS_PROFILE;
        let lease = profile
            .split_once("<leaseDuration><sec>")
            .and_then(|(_, rest)| rest.split_once('<'))
            .and_then(|(sec, _)| sec.parse::<u64>().ok())
            .expect("params/fastdds.xml sets leaseDuration in whole seconds");
        assert!(QUARANTINE > Duration::from_secs(lease), "lease {lease} s");
    }

    #[test]
    fn the_cells_profile_gets_the_number_in_its_default_participant() {
        let profile = crate::cell::host::DDS_PROFILE;
        let with = with_participant_id(profile, 23).expect("a default participant with <rtps>");
        assert_eq!(with.matches("<participantID>23</participantID>").count(), 1);
        let (before, after) = with.split_once("<participantID>").unwrap();
        assert!(before.ends_with("<rtps>\n        "), "{before}");
        assert!(after.starts_with("23</participantID>\n"), "{after}");
        // Nothing else changed.
        assert_eq!(
            with.replace("\n        <participantID>23</participantID>", ""),
            profile
        );
        // Only once.
        assert_eq!(with_participant_id(&with, 24), None);
    }

    #[test]
    fn a_profile_without_a_default_participant_is_left_alone() {
        let only_named = r#"<dds><profiles><participant profile_name="x"><rtps></rtps></participant></profiles></dds>"#;
        assert_eq!(with_participant_id(only_named, 20), None);
        let no_rtps = r#"<dds><profiles><participant profile_name="x" is_default_profile="true"></participant><data_writer><rtps></rtps></data_writer></profiles></dds>"#;
        assert_eq!(with_participant_id(no_rtps, 20), None);
        let second = r#"<participant profile_name="a"><rtps></rtps></participant><participant profile_name="b" is_default_profile="true"><rtps></rtps></participant>"#;
        assert_eq!(
            with_participant_id(second, 20).unwrap(),
            r#"<participant profile_name="a"><rtps></rtps></participant><participant profile_name="b" is_default_profile="true"><rtps>
        <participantID>20</participantID></rtps></participant>"#
        );
    }
}
