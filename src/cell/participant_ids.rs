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
//!
//! Two supervisors use it: the process table of `cncpick run --processes`
//! and `cncpick chaos` (cell/host.rs, which sees its children die), and,
//! under `ros2 launch`, each node process itself before it starts
//! ([`take_shared`], kept in a file that every process of the host and
//! domain shares: cell/launch_ids.rs).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant, SystemTime};

/// The participant numbers restarted processes get.
pub const IDS: RangeInclusive<u8> = 16..=31;

/// How long a number rests after its process died: longer than the
/// participant lease in `params/fastdds.xml` (10 s), so that no peer still
/// holds the dead participant when the number is given again.
pub const QUARANTINE: Duration = Duration::from_secs(15);

/// The clock numbers are released on: the supervisor's monotonic one, or
/// the wall clock in a file that separate processes share.
pub trait Stamp: Copy + Ord {
    /// How long after `earlier` this is (zero if before it).
    fn since(self, earlier: Self) -> Duration;
}

impl Stamp for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Stamp for SystemTime {
    fn since(self, earlier: Self) -> Duration {
        self.duration_since(earlier).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot<T> {
    Held(String),
    Released(T),
}

/// Which restarted process holds which participant number.
#[derive(Debug, Clone)]
pub struct ParticipantIds<T = Instant> {
    ids: RangeInclusive<u8>,
    quarantine: Duration,
    slots: BTreeMap<u8, Slot<T>>,
}

impl<T: Stamp> Default for ParticipantIds<T> {
    fn default() -> Self {
        ParticipantIds::new(IDS, QUARANTINE)
    }
}

impl<T: Stamp> ParticipantIds<T> {
    pub fn new(ids: RangeInclusive<u8>, quarantine: Duration) -> Self {
        ParticipantIds {
            ids,
            quarantine,
            slots: BTreeMap::new(),
        }
    }

    /// The number `node`'s process held, if any, is free from `at` (its
    /// process died then, or was first seen dead then).
    pub fn release(&mut self, node: &str, at: T) {
        for slot in self.slots.values_mut() {
            if matches!(slot, Slot::Held(n) if n == node) {
                *slot = Slot::Released(at);
            }
        }
    }

    /// A number for `node`'s new process, started at `now`. The number its
    /// last process held (if any) is released at `now`. The lowest number
    /// nobody holds that was never given or was released at least the
    /// quarantine before `now`; failing that, the one released longest
    /// ago; None when every number is held (Fast DDS then numbers the
    /// process itself).
    pub fn take(&mut self, node: &str, now: T) -> Option<u8> {
        self.release(node, now);
        let rested = |at: &T| now.since(*at) >= self.quarantine;
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

/// The numbers of a host and domain, kept in a file every node process
/// started by `ros2 launch` reads and writes in turn (cell/launch_ids.rs):
/// who holds which, and the process of each node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedIds {
    pub slots: BTreeMap<u8, Slot<SystemTime>>,
    pub pids: BTreeMap<String, u32>,
}

/// What `node`'s new process `pid`, starting at `now`, takes from `state`.
/// A node's process that is no longer `alive` frees its number from the
/// moment it is first seen dead. A node started before (its name is in
/// the file) is a restart and gets a number as the process table gives
/// one ([`ParticipantIds::take`]); a first start gets none (Fast DDS
/// numbers it from 0, as in a cell without restarts).
pub fn take_shared(
    state: &mut SharedIds,
    node: &str,
    pid: u32,
    now: SystemTime,
    alive: impl Fn(u32) -> bool,
) -> Option<u8> {
    let mut ids = ParticipantIds {
        ids: IDS,
        quarantine: QUARANTINE,
        slots: std::mem::take(&mut state.slots),
    };
    for (other, &was) in &state.pids {
        if other != node && !alive(was) {
            ids.release(other, now);
        }
    }
    let id = if state.pids.contains_key(node) {
        ids.take(node, now)
    } else {
        None
    };
    state.slots = ids.slots;
    state.pids.insert(node.to_string(), pid);
    id
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

/// Writes `base` (a Fast DDS profiles file) numbered `id`
/// ([`with_participant_id`]) to `out`. Ok(false): `base` has nothing to
/// number (no default participant profile, or a number of its own), and
/// nothing is written. Errors name the file.
pub fn write_numbered_profile(
    base: &std::path::Path,
    id: u8,
    out: &std::path::Path,
) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(base).map_err(|e| anyhow::anyhow!("{}: {e}", base.display()))?;
    let Some(numbered) = with_participant_id(&text, id) else {
        return Ok(false);
    };
    std::fs::write(out, numbered).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    Ok(true)
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

    fn wall(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn under_launch_a_restart_gets_a_number_nobody_held_lately_and_a_first_start_none() {
        let mut state = SharedIds::default();
        let live = |pids: &'static [u32]| move |pid: u32| pids.contains(&pid);
        assert_eq!(
            take_shared(&mut state, "camera", 100, wall(0), live(&[100])),
            None
        );
        assert_eq!(
            take_shared(&mut state, "tracker", 101, wall(0), live(&[100, 101])),
            None
        );
        // The camera's process died; launch starts it again: a restart.
        assert_eq!(
            take_shared(&mut state, "camera", 200, wall(5), live(&[101, 200])),
            Some(16)
        );
        assert_eq!(state.pids["camera"], 200);
        assert_eq!(
            take_shared(&mut state, "tracker", 201, wall(6), live(&[200, 201])),
            Some(17)
        );
        // The camera dies again at 10 s: 16 rests, 18 was never given.
        assert_eq!(
            take_shared(&mut state, "camera", 300, wall(10), live(&[201, 300])),
            Some(18)
        );
        // At 26 s, 16 (released at 10 s) has rested 16 s.
        assert_eq!(
            take_shared(&mut state, "camera", 400, wall(26), live(&[201, 400])),
            Some(16)
        );
        // What the file keeps comes back the same from JSON.
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<SharedIds>(&json).unwrap(), state);
    }

    #[test]
    fn a_dead_node_frees_its_number_from_when_it_is_first_seen_dead() {
        let mut state = SharedIds::default();
        let all = |_: u32| true;
        take_shared(&mut state, "camera", 1, wall(0), all);
        take_shared(&mut state, "tracker", 2, wall(0), all);
        assert_eq!(take_shared(&mut state, "camera", 3, wall(1), all), Some(16));
        // The camera's process (3) dies and is not started again. The
        // tracker's restart at 20 s is the first to see it dead.
        let not_3 = |pid: u32| pid != 3;
        assert_eq!(
            take_shared(&mut state, "tracker", 4, wall(20), not_3),
            Some(17)
        );
        // At 30 s 16 has rested 10 s (not 30 s from the camera's start,
        // nor 0 s from being seen dead again): 18 is the rested one.
        let alive = |pid: u32| pid != 3 && pid != 4;
        assert_eq!(
            take_shared(&mut state, "tracker", 5, wall(30), alive),
            Some(18)
        );
        // At 40 s 16 has rested 20 s.
        let alive = |pid: u32| pid != 3 && pid != 5;
        assert_eq!(
            take_shared(&mut state, "tracker", 6, wall(40), alive),
            Some(16)
        );
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
    fn the_cells_profiles_get_the_number_in_their_default_participant() {
        for profile in [
            crate::cell::host::DDS_PROFILE,
            crate::cell::host::DDS_CONTROL_PROFILE,
        ] {
            numbered_once(profile);
        }
    }

    fn numbered_once(profile: &str) {
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

    #[test]
    fn a_numbered_profile_is_written_once_and_a_missing_base_is_named() {
        let dir = std::env::temp_dir().join(format!("cncpick-numbered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (base, out) = (dir.join("base.xml"), dir.join("out.xml"));
        std::fs::write(&base, crate::cell::host::DDS_PROFILE).unwrap();
        assert!(write_numbered_profile(&base, 21, &out).unwrap());
        let written = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            Some(written.clone()),
            with_participant_id(crate::cell::host::DDS_PROFILE, 21)
        );
        // A base that numbers itself: nothing written.
        std::fs::remove_file(&out).unwrap();
        std::fs::write(&base, &written).unwrap();
        assert!(!write_numbered_profile(&base, 22, &out).unwrap());
        assert!(!out.exists());
        let missing = dir.join("missing.xml");
        let e = write_numbered_profile(&missing, 22, &out).unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
