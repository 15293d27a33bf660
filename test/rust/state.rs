//! The state manager's store on real SQLite files: compare-and-set, the
//! legal transitions only, epoch fencing, idempotent request ids, the audit
//! trail, and a property test with concurrent actors on one database.

mod common;

use cncpick::state::lifecycle::{legal, ObjState, ALL};
use cncpick::state::store::{
    Answer, Filter, Refusal, Registration, Reported, Seen, Store, StoreError, TransitionRequest,
    Write, Written,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// A CNC's next epoch (the objects its earlier epochs held settled).
fn bump(s: &mut Store, cnc: &str) -> u64 {
    s.begin_epoch(cnc, 0, f64::INFINITY, "test", &[])
        .unwrap()
        .epoch
}

fn id(k: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&k.to_le_bytes());
    b[15] = 0x5a;
    b
}

fn registration(k: u32, lane: u8, at_ns: i64) -> Registration {
    Registration {
        request_id: format!("reg-{k}"),
        object_id: id(k),
        actor: "tracker".into(),
        object: Seen {
            vision_id: format!("vision_{at_ns}_{lane}_{k}"),
            lane,
            class_id: "red_box".into(),
            confidence: 0.9,
            x_m: 0.5,
            y_m: 0.075 + 0.15 * lane as f64,
            velocity_x_mps: 0.2,
            detected_at_ns: at_ns,
        },
    }
}

fn request(
    rid: &str,
    k: u32,
    from: ObjState,
    to: ObjState,
    cnc: &str,
    epoch: u64,
) -> TransitionRequest {
    TransitionRequest {
        request_id: rid.into(),
        object_id: id(k),
        expected: from,
        new: to,
        actor: "test".into(),
        cnc_id: cnc.into(),
        epoch,
        reason: String::new(),
        belt_position_m: 2.0,
    }
}

/// A store in a fresh folder; the folder goes when the first is dropped.
fn open(tag: &str) -> (common::Scratch, std::path::PathBuf, Store) {
    let dir = common::temp_dir("state", tag);
    let path = dir.join("state.sqlite");
    let store = Store::open(&path).unwrap();
    (dir, path, store)
}

#[test]
fn compare_and_set_refuses_with_the_current_state_and_only_legal_transitions_pass() {
    use ObjState::*;
    let (_dir, _, mut s) = open("cas");
    let r = s.register(&registration(1, 0, 10), 10).unwrap();
    assert!(r.created);
    assert_eq!(
        r.event.as_ref().map(|e| (e.seq, e.from, e.to)),
        Some((1, None, Detected))
    );
    // Registering again changes nothing.
    let again = s.register(&registration(1, 0, 10), 11).unwrap();
    assert!(!again.created && again.event.is_none());
    assert_eq!(again.record, r.record);
    let e1 = bump(&mut s, "1");
    assert_eq!(e1, 1);

    // Wrong expected state: refused with the current one.
    let a = s
        .transition(&request("a", 1, Assigned, Picking, "1", e1), 20)
        .unwrap();
    assert_eq!(
        a,
        Answer::Refused(Refusal::NotInExpectedState { current: Detected })
    );
    // Illegal: DETECTED -> PICKED.
    let b = s
        .transition(&request("b", 1, Detected, Picked, "1", e1), 20)
        .unwrap();
    assert_eq!(b, Answer::Refused(Refusal::Illegal { current: Detected }));
    // Assigning needs a CNC, a known one, with its epoch.
    let c = s
        .transition(&request("c", 1, Detected, Assigned, "", 0), 20)
        .unwrap();
    assert_eq!(c, Answer::Refused(Refusal::NoCnc { current: Detected }));
    let d = s
        .transition(&request("d", 1, Detected, Assigned, "9", 1), 20)
        .unwrap();
    assert_eq!(
        d,
        Answer::Refused(Refusal::UnknownCnc { current: Detected })
    );
    // Unknown object.
    let u = s
        .transition(&request("u", 77, Detected, Assigned, "1", e1), 20)
        .unwrap();
    assert_eq!(u, Answer::Refused(Refusal::UnknownObject));
    assert_eq!(Refusal::UnknownObject.current(), None);

    // The lifecycle, step by step; each accepted step is the next seq.
    let steps = [(Detected, Assigned), (Assigned, Picking), (Picking, Picked)];
    for (n, (from, to)) in steps.into_iter().enumerate() {
        match s
            .transition(
                &request(&format!("ok{n}"), 1, from, to, "1", e1),
                30 + n as i64,
            )
            .unwrap()
        {
            Answer::Accepted(e) => {
                assert_eq!((e.seq, e.from, e.to), (2 + n as u64, Some(from), to))
            }
            other => panic!("{from} -> {to}: {other:?}"),
        }
    }
    // Another CNC cannot touch it, and nothing leaves a terminal state.
    let t = s
        .transition(&request("t", 1, Picked, Detected, "1", e1), 40)
        .unwrap();
    assert_eq!(t, Answer::Refused(Refusal::Illegal { current: Picked }));
    let rec = s.get(&id(1)).unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.cnc_id.as_str(), rec.epoch, rec.last_seq),
        (Picked, "1", 1, 4)
    );
    assert_eq!(s.last_seq().unwrap(), 4);
    // The audit trail replays to the same state, and to earlier ones by time.
    assert_eq!(s.replay(&id(1), None).unwrap(), Some(Picked));
    assert_eq!(s.replay(&id(1), Some(30)).unwrap(), Some(Assigned));
    assert_eq!(s.replay(&id(1), Some(5)).unwrap(), None);
    let h: Vec<_> = s.history(&id(1)).unwrap().iter().map(|e| e.to).collect();
    assert_eq!(h, vec![Detected, Assigned, Picking, Picked]);
}

#[test]
fn a_held_object_is_fenced_from_other_cncs_and_from_stale_epochs_after_a_reactivation() {
    use ObjState::*;
    let (_dir, _, mut s) = open("epochs");
    s.register(&registration(1, 0, 10), 10).unwrap();
    s.register(&registration(2, 1, 10), 10).unwrap();
    let e1 = bump(&mut s, "1");
    bump(&mut s, "2");
    assert!(matches!(
        s.transition(&request("a1", 1, Detected, Assigned, "1", e1), 20)
            .unwrap(),
        Answer::Accepted(_)
    ));
    assert!(matches!(
        s.transition(&request("a2", 2, Detected, Assigned, "1", e1), 20)
            .unwrap(),
        Answer::Accepted(_)
    ));
    // CNC 2 cannot start CNC 1's pick.
    let other = s
        .transition(&request("x", 1, Assigned, Picking, "2", 1), 21)
        .unwrap();
    assert_eq!(
        other,
        Answer::Refused(Refusal::HeldByOther {
            current: Assigned,
            holder: "1".into()
        })
    );
    // CNC 1 starts picking object 2, then restarts: its epoch rises, and
    // what its old epoch held is settled in the same transaction (the
    // assignment revoked, the pick in flight MISSED: its outcome is
    // unknown), so its old epoch can do nothing more.
    assert!(matches!(
        s.transition(&request("p2", 2, Assigned, Picking, "1", e1), 21)
            .unwrap(),
        Answer::Accepted(_)
    ));
    // A report of that pick, but from an epoch it did not run in: not
    // taken, and named with the state the settling leaves it in.
    let misreported = Reported {
        object_id: id(2),
        epoch: e1 + 7,
        to: Picked,
        reason: String::new(),
        actor: "cnc_1".into(),
    };
    let b = s
        .begin_epoch(
            "1",
            22,
            f64::INFINITY,
            "state_manager",
            std::slice::from_ref(&misreported),
        )
        .unwrap();
    assert_eq!(b.unrecorded, vec![(misreported, Some(Missed))]);
    let (e2, settled) = (b.epoch, b.events);
    assert_eq!(
        (e2, s.epoch("1").unwrap(), s.epoch("never").unwrap()),
        (2, 2, 0)
    );
    let moves: Vec<_> = settled
        .iter()
        .map(|e| (e.object_id, e.from, e.to, e.cnc_id.as_str(), e.epoch))
        .collect();
    assert_eq!(
        moves,
        vec![
            (id(1), Some(Assigned), Detected, "1", e1),
            (id(2), Some(Picking), Missed, "1", e1),
        ]
    );
    assert!(settled.iter().all(|e| e.reason.starts_with("recovery: ")));
    let stale = s
        .transition(&request("s", 1, Detected, Assigned, "1", e1), 23)
        .unwrap();
    assert_eq!(
        stale,
        Answer::Refused(Refusal::StaleEpoch {
            current: Detected,
            given: 1,
            epoch: 2
        })
    );
    assert!(Refusal::StaleEpoch {
        current: Detected,
        given: 1,
        epoch: 2
    }
    .describe(&request("s", 1, Detected, Assigned, "1", e1))
    .contains("stale epoch 1"));
    // The old epoch's late report of its pick is refused; the record stays.
    assert!(matches!(
        s.transition(&request("late", 2, Picking, Picked, "1", e1), 24)
            .unwrap(),
        Answer::Refused(_)
    ));
    let rec = s.get(&id(1)).unwrap().unwrap();
    assert_eq!((rec.state, rec.cnc_id.as_str()), (Detected, ""));
    assert_eq!(s.get(&id(2)).unwrap().unwrap().state, Missed);
    // CNC 2's objects were not touched; anyone may assign object 1 again.
    assert!(matches!(
        s.transition(&request("a3", 1, Detected, Assigned, "2", 1), 25)
            .unwrap(),
        Answer::Accepted(_)
    ));
    assert_eq!(s.replay(&id(2), None).unwrap(), Some(Missed));
}

#[test]
fn a_repeated_request_id_gets_the_first_answer_even_after_a_restart() {
    use ObjState::*;
    let (_dir, path, mut s) = open("idempotent");
    s.register(&registration(1, 0, 10), 10).unwrap();
    let e = bump(&mut s, "1");
    let first = s
        .transition(&request("once", 1, Detected, Assigned, "1", e), 20)
        .unwrap();
    assert!(matches!(first, Answer::Accepted(_)));
    // The same request again: the same answer, no second event.
    assert_eq!(
        s.transition(&request("once", 1, Detected, Assigned, "1", e), 21)
            .unwrap(),
        first
    );
    assert_eq!(s.last_seq().unwrap(), 2);
    // A refusal is remembered too.
    let refused = s
        .transition(&request("no", 1, Detected, Bypassed, "", 0), 22)
        .unwrap();
    assert_eq!(
        refused,
        Answer::Refused(Refusal::NotInExpectedState { current: Assigned })
    );
    drop(s);
    let mut s = Store::open(&path).unwrap();
    assert_eq!(
        s.transition(&request("once", 1, Detected, Assigned, "1", e), 30)
            .unwrap(),
        first
    );
    assert_eq!(
        s.transition(&request("no", 1, Detected, Bypassed, "", 0), 30)
            .unwrap(),
        refused
    );
    assert_eq!(s.last_seq().unwrap(), 2);
}

#[test]
fn objects_are_listed_by_state_lane_and_time() {
    use ObjState::*;
    let (_dir, _, mut s) = open("list");
    for k in 0..20u32 {
        s.register(&registration(k, (k % 4) as u8, 100 + k as i64), 100)
            .unwrap();
    }
    let e = bump(&mut s, "1");
    for k in [0u32, 4, 8] {
        s.transition(
            &request(&format!("a{k}"), k, Detected, Assigned, "1", e),
            200,
        )
        .unwrap();
    }
    let ids = |f: Filter| -> Vec<[u8; 16]> {
        s.list(&f).unwrap().0.iter().map(|r| r.object_id).collect()
    };
    assert_eq!(
        ids(Filter {
            states: vec![Assigned],
            ..Filter::default()
        }),
        vec![id(0), id(4), id(8)]
    );
    assert_eq!(
        ids(Filter {
            states: vec![Detected],
            lane: Some(0),
            ..Filter::default()
        }),
        vec![id(12), id(16)]
    );
    assert_eq!(
        ids(Filter {
            detected_after_ns: Some(110),
            detected_before_ns: Some(114),
            ..Filter::default()
        }),
        vec![id(11), id(12), id(13)]
    );
    let (first, truncated) = s
        .list(&Filter {
            limit: 5,
            ..Filter::default()
        })
        .unwrap();
    assert_eq!((first.len(), truncated), (5, true));
    let (all, truncated) = s.list(&Filter::default()).unwrap();
    assert_eq!((all.len(), truncated), (20, false));
}

#[test]
fn a_corrupt_or_foreign_file_is_refused_and_left_untouched() {
    let dir = common::temp_dir("state", "corrupt");
    // Not SQLite at all.
    let text = dir.join("notes.sqlite");
    std::fs::write(&text, b"these are someone's notes, not a database\n").unwrap();
    let err = Store::open(&text).err().expect("a text file was accepted");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("notes.sqlite") && err.to_string().contains("left untouched"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&text).unwrap(),
        b"these are someone's notes, not a database\n"
    );
    // A real database with damaged pages.
    let path = dir.join("state.sqlite");
    {
        let mut s = Store::open(&path).unwrap();
        for k in 0..500u32 {
            s.register(&registration(k, 0, k as i64), 1).unwrap();
        }
        // Leave no WAL behind, so the damage is in the main file.
        drop(s);
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 7 * 4096, "{} bytes", bytes.len());
    for b in &mut bytes[4096 * 2..4096 * 6] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path)
        .err()
        .expect("a damaged database was accepted");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the damaged file was changed"
    );
}

#[test]
fn a_full_disk_refuses_new_work_and_keeps_everything_accepted() {
    use ObjState::*;
    let (_dir, path, mut s) = open("full");
    let e = bump(&mut s, "1");
    let cap = s.limit_size(64 * 1024).unwrap();
    assert!(cap <= 64 * 1024, "{cap}");
    let mut accepted = 0u32;
    let full = loop {
        match s.register(&registration(accepted, 0, accepted as i64), 1) {
            Ok(_) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted < 100_000, "the size limit never bit");
    };
    assert!(matches!(full, StoreError::DiskFull { .. }), "{full}");
    assert!(
        full.to_string().contains("disk is full")
            && full.to_string().contains("nothing was changed")
    );
    assert!(accepted > 50, "{accepted}");
    // At the cap, a transition (it adds an audit row) is refused the same
    // way, at once: the slack left in the last pages is not used.
    let t = s.transition(&request("t0", 0, Detected, Assigned, "1", e), 2);
    assert!(matches!(t, Err(StoreError::DiskFull { .. })), "{t:?}");
    let assigned = 0u32;
    // So is expiry with something to expire (every object here is past a
    // reach window ending far upstream).
    let x = s.expire(1_000_000_000_000, 0, -1e9, "state_manager");
    assert!(matches!(x, Err(StoreError::DiskFull { .. })), "{x:?}");
    // Everything accepted is there, unchanged, and nothing half-written.
    assert_eq!(s.last_seq().unwrap(), (accepted + assigned) as u64);
    assert!(s.get(&id(accepted)).unwrap().is_none());
    assert_eq!(s.get(&id(assigned)).unwrap().unwrap().state, Detected);
    assert_eq!(s.replay(&id(assigned), None).unwrap(), Some(Detected));
    // Lifting the cap in the same process (a parameter update does this)
    // gives room at once; capping again below what is used fills it again.
    s.limit_size(0).unwrap();
    s.register(&registration(accepted, 0, accepted as i64), 1)
        .expect("room again once the cap is lifted");
    let cap = s.limit_size(1).unwrap();
    assert!(
        cap >= 64 * 1024,
        "the cap went below the pages in use: {cap}"
    );
    let again = s.register(&registration(accepted + 1, 0, accepted as i64 + 1), 1);
    assert!(
        matches!(again, Err(StoreError::DiskFull { .. })),
        "a cap below what is in use did not fill the store at once: {again:?}"
    );
    let accepted = s.last_seq().unwrap() as u32 - assigned;
    drop(s);
    // Room again (a new process has no cap): work goes on from where it stopped.
    let mut s = Store::open(&path).unwrap();
    assert_eq!(
        s.list(&Filter {
            limit: 100_000,
            ..Filter::default()
        })
        .unwrap()
        .0
        .len(),
        accepted as usize
    );
    let rid = format!("t{assigned}");
    assert!(matches!(
        s.transition(&request(&rid, assigned, Detected, Assigned, "1", e), 3).unwrap(),
        Answer::Accepted(ev) if ev.seq == (accepted + assigned) as u64 + 1
    ));
}

/// One actor's random stream against the shared database: transitions
/// from any state to any state, any CNC (or none, or an unknown one), the
/// current epoch or a stale one, repeated request ids, and CNC restarts.
fn actor(
    path: std::path::PathBuf,
    seed: u64,
    steps: usize,
    objects: u32,
) -> Vec<(TransitionRequest, Answer)> {
    let mut s = Store::open(&path).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let cncs = ["1", "2", "3", "", "unknown"];
    let mut out: Vec<(TransitionRequest, Answer)> = Vec::new();
    for n in 0..steps {
        if rng.random_bool(0.03) {
            bump(&mut s, cncs[rng.random_range(0..3)]);
            continue;
        }
        let req = if !out.is_empty() && rng.random_bool(0.1) {
            out[rng.random_range(0..out.len())].0.clone()
        } else {
            let k = rng.random_range(0..objects);
            let cnc = cncs[rng.random_range(0..cncs.len())];
            let current = s.epoch(cnc).unwrap();
            let epoch = if rng.random_bool(0.8) {
                current
            } else {
                current.saturating_sub(1)
            };
            // Mostly plausible moves (from the state it was last seen in), some wild ones.
            let seen = s
                .get(&id(k))
                .unwrap()
                .map(|r| r.state)
                .unwrap_or(ObjState::Detected);
            let from = if rng.random_bool(0.7) {
                seen
            } else {
                ALL[rng.random_range(0..ALL.len())]
            };
            let next: Vec<ObjState> = ALL.iter().copied().filter(|&t| legal(from, t)).collect();
            let to = if !next.is_empty() && rng.random_bool(0.8) {
                next[rng.random_range(0..next.len())]
            } else {
                ALL[rng.random_range(0..ALL.len())]
            };
            request(&format!("{seed}-{n}"), k, from, to, cnc, epoch)
        };
        let answer = s.transition(&req, n as i64).unwrap();
        out.push((req, answer));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_actors_never_double_assign_or_break_the_lifecycle_and_the_trail_replays(
        seed in any::<u64>(),
        actors in 2usize..5,
        objects in 3u32..8,
    ) {
        let (_dir, path, mut s) = open(&format!("property-{seed:x}"));
        for k in 0..objects {
            s.register(&registration(k, (k % 4) as u8, k as i64), 0).unwrap();
        }
        for cnc in ["1", "2", "3"] {
            bump(&mut s, cnc);
        }
        let threads: Vec<_> = (0..actors)
            .map(|a| {
                let path = path.clone();
                std::thread::spawn(move || actor(path, seed.wrapping_add(a as u64), 150, objects))
            })
            .collect();
        let answers: Vec<(TransitionRequest, Answer)> =
            threads.into_iter().flat_map(|t| t.join().unwrap()).collect();

        // Every request id got one answer, however often it was sent.
        let mut by_id: HashMap<&str, &Answer> = HashMap::new();
        for (req, ans) in &answers {
            let first = by_id.entry(req.request_id.as_str()).or_insert(ans);
            prop_assert_eq!(*first, ans);
        }
        // Gap-free sequence numbers; every accepted answer is in the trail as answered.
        let trail = s.events_after(0, 1_000_000).unwrap();
        let seqs: Vec<u64> = trail.iter().map(|e| e.seq).collect();
        prop_assert_eq!(seqs, (1..=trail.len() as u64).collect::<Vec<_>>());
        let by_seq: HashMap<u64, _> = trail.iter().map(|e| (e.seq, e)).collect();
        for ans in by_id.values() {
            if let Answer::Accepted(e) = ans {
                prop_assert_eq!(by_seq.get(&e.seq).copied(), Some(e));
            }
        }
        // Per object: a chain of legal transitions, never assigned twice
        // without a revoke, and the stored state is the replay of its trail.
        for k in 0..objects {
            let h = s.history(&id(k)).unwrap();
            let mut state: Option<ObjState> = None;
            let mut holder: Option<String> = None;
            for e in &h {
                prop_assert_eq!(e.from, state, "object {}: broken chain at seq {}", k, e.seq);
                if let Some(from) = e.from {
                    prop_assert!(legal(from, e.to), "object {}: {} -> {}", k, from, e.to);
                }
                if e.to == ObjState::Assigned {
                    prop_assert!(holder.is_none(), "object {} assigned twice", k);
                    holder = Some(e.cnc_id.clone());
                } else if e.to == ObjState::Detected {
                    holder = None;
                } else if e.from.is_some_and(|f| f.held_by_cnc()) {
                    prop_assert_eq!(Some(&e.cnc_id), holder.as_ref(), "object {} touched by another CNC", k);
                }
                state = Some(e.to);
            }
            let rec = s.get(&id(k)).unwrap().unwrap();
            prop_assert_eq!(Some(rec.state), state);
            prop_assert_eq!(s.replay(&id(k), None).unwrap(), state);
        }
        // The streams did exercise both outcomes, and every object moved.
        let accepted = by_id.values().filter(|a| matches!(a, Answer::Accepted(_))).count();
        prop_assert!(accepted >= 1 && accepted < by_id.len(), "{} of {}", accepted, by_id.len());
        prop_assert!(
            (0..objects).all(|k| s.history(&id(k)).unwrap().len() >= 2),
            "an object never moved"
        );
    }
}

const S: i64 = 1_000_000_000;

fn accept(s: &mut Store, t: TransitionRequest, at_ns: i64) {
    match s.transition(&t, at_ns).unwrap() {
        Answer::Accepted(_) => {}
        other => panic!("{}: {other:?}", t.request_id),
    }
}

/// Expiry: an open object nobody settled (its track lost with a tracker
/// restart, its scheduler gone) goes MISSED once it is both unchanged for
/// the timeout and predicted past the last reach window; nothing else
/// moves, and a pick in flight is left to its CNC for three times the
/// timeout.
#[test]
fn expiry_misses_open_objects_that_left_the_cell_unsettled_and_nothing_else() {
    use ObjState::*;
    let (_dir, _, mut s) = open("expiry");
    let e1 = bump(&mut s, "1");
    // Seen at x 0.5 m moving 0.2 m/s: past the reach end (3.4 m) 14.5 s later.
    for k in 1..=5 {
        s.register(&registration(k, 0, 0), 0).unwrap();
    }
    s.register(&registration(6, 0, 10 * S), 10 * S).unwrap();
    accept(&mut s, request("a2", 2, Detected, Assigned, "1", e1), S);
    accept(&mut s, request("a3", 3, Detected, Assigned, "1", e1), S);
    accept(&mut s, request("p3", 3, Assigned, Picking, "1", e1), S);
    accept(
        &mut s,
        request("a4", 4, Detected, Assigned, "1", e1),
        15 * S,
    );
    accept(
        &mut s,
        request("r4", 4, Assigned, Detected, "1", e1),
        15 * S,
    );
    // At 16 s, past the reach end but changed within 20 s: nothing yet.
    assert!(s
        .expire(16 * S, 20 * S, 3.4, "state_manager")
        .unwrap()
        .is_empty());
    // Within reach (a belt that stood still for long): never, however old.
    assert!(s
        .expire(21 * S, 20 * S, 1e9, "state_manager")
        .unwrap()
        .is_empty());
    let before = s.last_seq().unwrap();
    let moved: Vec<(u32, ObjState, ObjState)> = s
        .expire(21 * S, 20 * S, 3.4, "state_manager")
        .unwrap()
        .iter()
        .map(|e| {
            assert!(legal(e.from.unwrap(), e.to));
            assert!(e.reason.starts_with("expired:"), "{}", e.reason);
            (
                u32::from_le_bytes(e.object_id[..4].try_into().unwrap()),
                e.from.unwrap(),
                e.to,
            )
        })
        .collect();
    assert_eq!(
        moved,
        vec![
            (1, Detected, Missed),
            (5, Detected, Missed),
            (2, Assigned, Detected),
            (2, Detected, Missed),
        ]
    );
    assert_eq!(s.last_seq().unwrap(), before + 4);
    let want = [
        (1, Missed),
        (2, Missed),
        (3, Picking),
        (4, Detected),
        (5, Missed),
        (6, Detected),
    ];
    for (k, state) in want {
        assert_eq!(s.get(&id(k)).unwrap().unwrap().state, state, "object {k}");
        assert_eq!(s.replay(&id(k), None).unwrap(), Some(state), "object {k}");
    }
    // Done once: nothing left to expire at the same time.
    assert!(s
        .expire(21 * S, 20 * S, 3.4, "state_manager")
        .unwrap()
        .is_empty());
    // A pick unchanged for three times the timeout lost its CNC's answer.
    assert!(s
        .expire(60 * S, 20 * S, 3.4, "state_manager")
        .unwrap()
        .iter()
        .all(|e| e.object_id != id(3)));
    let late = s.expire(61 * S, 20 * S, 3.4, "state_manager").unwrap();
    assert_eq!(
        late.iter()
            .map(|e| (e.object_id, e.from.unwrap(), e.to))
            .collect::<Vec<_>>(),
        vec![(id(3), Picking, Missed)]
    );
}

/// Recovery after a crash: epochs rise, assigned objects are released by
/// legal transitions, objects whose time has passed are MISSED, reachable
/// ones are DETECTED again, and a CNC's in-flight request with its old
/// epoch is refused. A pick in flight stays PICKING: its CNC's next epoch
/// records the outcome the old epoch could not, and nothing else.
#[test]
fn recovery_reconciles_open_objects_and_fences_the_old_epochs() {
    use ObjState::*;
    let (_dir, path, mut s) = open("recovery");
    let (e1, e2) = (bump(&mut s, "1"), bump(&mut s, "2"));
    let now = 100 * S;
    // Seen at x 0.5 m moving 0.2 m/s: 10 s ago it is at 2.5 m now (upstream
    // of the reach end, 3.4 m); 20 s ago, at 4.5 m (past it).
    let (near, far) = (now - 10 * S, now - 20 * S);
    for (k, at) in [
        (1, near),
        (2, far),
        (3, near),
        (4, far),
        (5, near),
        (6, far),
    ] {
        s.register(&registration(k, 0, at), at).unwrap();
    }
    accept(&mut s, request("a3", 3, Detected, Assigned, "1", e1), near);
    accept(&mut s, request("a4", 4, Detected, Assigned, "1", e1), far);
    accept(&mut s, request("a5", 5, Detected, Assigned, "2", e2), near);
    accept(&mut s, request("p5", 5, Assigned, Picking, "2", e2), near);
    accept(&mut s, request("a6", 6, Detected, Assigned, "2", e2), far);
    accept(&mut s, request("p6", 6, Assigned, Picking, "2", e2), far);
    accept(&mut s, request("d6", 6, Picking, Picked, "2", e2), far);
    let before = s.last_seq().unwrap();
    drop(s); // the crash

    let mut s = Store::open(&path).unwrap();
    let r = s.recover(now, 3.4, "state_manager").unwrap();
    assert_eq!(r.epochs, vec![("1".into(), 2), ("2".into(), 2)]);
    // Object 5's pick is in flight: left PICKING, for CNC 2's next epoch.
    assert_eq!((r.open, r.kept, r.in_flight), (5, 2, 1));
    let moves: Vec<(u32, ObjState, ObjState)> = r
        .events
        .iter()
        .map(|e| {
            (
                u32::from_le_bytes(e.object_id[..4].try_into().unwrap()),
                e.from.unwrap(),
                e.to,
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (2, Detected, Missed),
            (3, Assigned, Detected),
            (4, Assigned, Detected),
            (4, Detected, Missed),
        ]
    );
    // Gap-free after the events before the crash, each one legal.
    for (n, e) in r.events.iter().enumerate() {
        assert_eq!(e.seq, before + 1 + n as u64);
        assert!(legal(e.from.unwrap(), e.to));
        assert_eq!(e.actor, "state_manager");
    }
    let want = [
        (1, Detected),
        (2, Missed),
        (3, Detected),
        (4, Missed),
        (5, Picking),
        (6, Picked),
    ];
    for (k, state) in want {
        let rec = s.get(&id(k)).unwrap().unwrap();
        assert_eq!(rec.state, state, "object {k}");
        assert_eq!(s.replay(&id(k), None).unwrap(), Some(state), "object {k}");
        if state == Detected {
            assert_eq!(rec.cnc_id, "", "object {k} is held by nobody");
        }
    }
    // CNC 2 finishing its pick of 5 with the old epoch: refused as stale.
    let late = s
        .transition(&request("late", 5, Picking, Picked, "2", e2), now)
        .unwrap();
    assert_eq!(
        late,
        Answer::Refused(Refusal::StaleEpoch {
            current: Picking,
            given: 1,
            epoch: 2
        })
    );
    // CNC 2's next epoch reports it, with three reports it cannot take: a
    // pick of object 1 (never its pick), one of an object that does not
    // exist, and one of object 6 that the store holds as reported already.
    let report = |k: u32, to: ObjState| Reported {
        object_id: id(k),
        epoch: e2,
        to,
        reason: String::new(),
        actor: "cnc_2".into(),
    };
    let reports = [
        report(5, Picked),
        report(1, Dropped),
        report(99, Picked),
        report(6, Picked),
    ];
    let b = s
        .begin_epoch("2", now + 1, 3.4, "state_manager", &reports)
        .unwrap();
    assert_eq!(b.epoch, 3);
    let moves: Vec<_> = b
        .events
        .iter()
        .map(|e| (e.object_id, e.from, e.to, e.actor.as_str(), e.epoch))
        .collect();
    assert_eq!(moves, vec![(id(5), Some(Picking), Picked, "cnc_2", e2)]);
    assert!(
        b.events[0].reason.contains("reported with epoch 3"),
        "{}",
        b.events[0].reason
    );
    assert_eq!(
        b.unrecorded,
        vec![
            (reports[1].clone(), Some(Detected)),
            (reports[2].clone(), None)
        ]
    );
    assert_eq!(s.get(&id(5)).unwrap().unwrap().state, Picked);
    assert_eq!(s.replay(&id(5), None).unwrap(), Some(Picked));
    // CNC 1 taking object 1 with its old epoch: refused, naming the new one.
    let stale = s
        .transition(&request("stale", 1, Detected, Assigned, "1", e1), now)
        .unwrap();
    assert_eq!(
        stale,
        Answer::Refused(Refusal::StaleEpoch {
            current: Detected,
            given: 1,
            epoch: 2
        })
    );
    accept(&mut s, request("fresh", 1, Detected, Assigned, "1", 2), now);
    // Recovering again at once moves only what is held (object 1 again).
    let again = s.recover(now, 3.4, "state_manager").unwrap();
    assert_eq!(again.events.len(), 1);
    assert_eq!(again.epochs, vec![("1".into(), 3), ("2".into(), 4)]);
}

/// Retention removes old terminal objects, their history and old request
/// answers, in batches; open and recent objects stay; and a seq is never
/// handed out twice, even once every row of the audit trail is gone.
#[test]
fn retention_prunes_old_terminal_objects_in_batches_and_never_reuses_a_seq() {
    use ObjState::*;
    let (_dir, _, mut s) = open("retention");
    for k in 1..=12 {
        s.register(&registration(k, 0, S), S).unwrap();
    }
    for k in 1..=8 {
        let at = if k <= 6 { 2 * S } else { 100 * S };
        accept(
            &mut s,
            request(&format!("b{k}"), k, Detected, Bypassed, "", 0),
            at,
        );
    }
    let mut batches = Vec::new();
    loop {
        let p = s.prune(50 * S, 4).unwrap();
        batches.push(p);
        if !p.more {
            break;
        }
    }
    assert_eq!(batches.iter().map(|p| p.objects).sum::<usize>(), 6);
    assert_eq!(batches.iter().map(|p| p.transitions).sum::<usize>(), 12);
    assert_eq!(batches.iter().map(|p| p.requests).sum::<usize>(), 6);
    assert!(batches.iter().all(|p| p.objects <= 4 && p.requests <= 4));
    for k in 1..=12 {
        let rec = s.get(&id(k)).unwrap();
        assert_eq!(rec.is_some(), k > 6, "object {k}");
        assert_eq!(s.history(&id(k)).unwrap().is_empty(), k <= 6, "object {k}");
    }
    // Everything old and terminal: the audit trail empties, the seq goes on.
    let last = s.last_seq().unwrap();
    assert_eq!(last, 20);
    for k in 9..=12 {
        accept(
            &mut s,
            request(&format!("m{k}"), k, Detected, Missed, "", 0),
            100 * S,
        );
    }
    while s.prune(1000 * S, 3).unwrap().more {}
    assert!(s.events_after(0, 100).unwrap().is_empty());
    assert_eq!(s.last_seq().unwrap(), 24);
    let r = s.register(&registration(13, 1, 200 * S), 200 * S).unwrap();
    assert_eq!(r.event.unwrap().seq, 25);
}

/// Snapshots taken while another connection keeps writing are each a
/// consistent database: they open, their audit trail is gap-free up to
/// their last seq, and every object's state equals its replay.
#[test]
fn snapshots_taken_under_writes_are_consistent_and_only_the_newest_are_kept() {
    use cncpick::state::snapshot;
    use ObjState::*;
    let (_dir, path, mut s) = open("snapshots");
    let dir = path.with_extension("snapshots");
    let e1 = bump(&mut s, "1");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut w = Store::open(&path).unwrap();
            for k in 1..=300u32 {
                let at = k as i64 * S;
                w.register(&registration(k, (k % 4) as u8, at), at).unwrap();
                accept(
                    &mut w,
                    request(&format!("a{k}"), k, Detected, Assigned, "1", e1),
                    at,
                );
                accept(
                    &mut w,
                    request(&format!("p{k}"), k, Assigned, Picking, "1", e1),
                    at,
                );
            }
            w.last_seq().unwrap()
        })
    };
    let mut taken = Vec::new();
    while !writer.is_finished() || taken.is_empty() {
        if let Some(snap) = snapshot::take(&path, &dir, 3).unwrap() {
            taken.push(snap);
        }
    }
    let last = writer.join().unwrap();
    taken.extend(snapshot::take(&path, &dir, 3).unwrap());
    assert_eq!(taken.last().unwrap().last_seq, last);
    // Nothing changed since: no new snapshot.
    assert_eq!(snapshot::take(&path, &dir, 3).unwrap(), None);
    let kept = snapshot::list(&dir);
    assert!(kept.len() <= 3 && !kept.is_empty());
    assert_eq!(kept.last().unwrap(), &taken.last().unwrap().path);
    for p in &kept {
        let snap = Store::open(p).unwrap();
        let n = snap.last_seq().unwrap();
        let events = snap.events_after(0, 10_000).unwrap();
        assert_eq!(events.len() as u64, n, "{}", p.display());
        assert!(events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1));
        let (objects, _) = snap
            .list(&Filter {
                limit: 10_000,
                ..Default::default()
            })
            .unwrap();
        for o in &objects {
            assert_eq!(snap.replay(&o.object_id, None).unwrap(), Some(o.state));
        }
    }
}

/// The commits in a database's WAL since it last started over: the frames
/// that end a transaction (a nonzero page count after the commit) whose
/// salts are the header's.
fn wal_commits(db: &std::path::Path) -> usize {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let b = std::fs::read(std::path::Path::new(&wal)).unwrap_or_default();
    if b.len() < 32 {
        return 0;
    }
    let page = u32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
    let salts = &b[16..24];
    b[32..]
        .chunks_exact(24 + page)
        .take_while(|f| &f[8..16] == salts)
        .filter(|f| f[4..8] != [0, 0, 0, 0])
        .count()
}

fn writes_of_every_kind(e: u64) -> Vec<Write> {
    use ObjState::*;
    vec![
        Write::Register(registration(1, 0, 10), 10),
        Write::Register(registration(2, 1, 10), 10),
        // Already registered: not created again.
        Write::Register(registration(1, 0, 10), 11),
        Write::Transition(request("a", 1, Detected, Assigned, "1", e), 20),
        // The same request again: the first answer, nothing new.
        Write::Transition(request("a", 1, Detected, Assigned, "1", e), 21),
        // Now refused: no longer DETECTED.
        Write::Transition(request("b", 1, Detected, Assigned, "1", e), 22),
        Write::Transition(request("c", 2, Detected, Picked, "1", e), 23),
        Write::Transition(request("d", 77, Detected, Assigned, "1", e), 24),
        Write::Transition(request("f", 2, Detected, Assigned, "9", 1), 25),
        Write::Transition(request("g", 2, Detected, Assigned, "1", e), 26),
        Write::Register(registration(3, 2, 30), 30),
    ]
}

#[test]
fn a_group_of_writes_is_one_commit_and_each_gets_the_answer_it_would_alone() {
    use ObjState::*;
    let (_d1, gpath, mut g) = open("group");
    let (_d2, _apath, mut a) = open("alone");
    let e = bump(&mut g, "1");
    assert_eq!(bump(&mut a, "1"), e);
    let writes = writes_of_every_kind(e);
    let before = wal_commits(&gpath);
    let grouped = g.write_group(&writes);
    assert_eq!(
        wal_commits(&gpath),
        before + 1,
        "the group was not one commit"
    );
    let alone: Vec<_> = writes
        .iter()
        .map(|w| match w {
            Write::Register(r, at) => a.register(r, *at).map(Written::Registered),
            Write::Transition(t, at) => a.transition(t, *at).map(Written::Transitioned),
        })
        .collect();
    assert_eq!(grouped.len(), writes.len());
    for (k, (g, a)) in grouped.iter().zip(&alone).enumerate() {
        assert_eq!(g.as_ref().unwrap(), a.as_ref().unwrap(), "write {k}");
    }
    // What the answers say, from the requests alone.
    let created: Vec<bool> = grouped
        .iter()
        .filter_map(|w| match w {
            Ok(Written::Registered(r)) => Some(r.created),
            _ => None,
        })
        .collect();
    assert_eq!(created, [true, true, false, true]);
    let answers: Vec<&Answer> = grouped
        .iter()
        .filter_map(|w| match w {
            Ok(Written::Transitioned(a)) => Some(a),
            _ => None,
        })
        .collect();
    assert!(matches!(answers[0], Answer::Accepted(ev) if ev.seq == 3 && ev.to == Assigned));
    assert_eq!(answers[1], answers[0]);
    assert_eq!(
        answers[2],
        &Answer::Refused(Refusal::NotInExpectedState { current: Assigned })
    );
    assert!(matches!(
        answers[3],
        Answer::Refused(Refusal::Illegal { .. })
    ));
    assert_eq!(answers[4], &Answer::Refused(Refusal::UnknownObject));
    assert!(matches!(
        answers[5],
        Answer::Refused(Refusal::UnknownCnc { .. })
    ));
    assert!(matches!(answers[6], Answer::Accepted(ev) if ev.seq == 4));
    // Durable, and the trail the same as one at a time, seq for seq.
    drop(g);
    let g = Store::open(&gpath).unwrap();
    assert_eq!(g.last_seq().unwrap(), 5);
    assert_eq!(
        g.events_after(0, 100).unwrap(),
        a.events_after(0, 100).unwrap()
    );
    assert_eq!(g.get(&id(2)).unwrap().unwrap().state, Assigned);
}

#[test]
fn a_group_cut_short_by_a_full_disk_keeps_exactly_what_it_answered_accepted() {
    for cap_kb in [48u64, 64, 96] {
        let (_dir, path, mut s) = open(&format!("group-full-{cap_kb}"));
        s.limit_size(cap_kb * 1024).unwrap();
        let writes: Vec<Write> = (0..400)
            .map(|k| Write::Register(registration(k, (k % 4) as u8, k as i64), k as i64))
            .collect();
        let answers = s.write_group(&writes);
        let ok: Vec<u32> = (0..400u32)
            .filter(|&k| answers[k as usize].is_ok())
            .collect();
        let full = answers
            .iter()
            .filter(|a| matches!(a, Err(StoreError::DiskFull { .. })));
        assert!(
            !ok.is_empty() && full.count() == 400 - ok.len(),
            "cap {cap_kb} kB: {} accepted, and every other one not for a full disk",
            ok.len()
        );
        drop(s);
        let s = Store::open(&path).unwrap();
        for k in 0..400 {
            assert_eq!(
                s.get(&id(k)).unwrap().is_some(),
                ok.contains(&k),
                "cap {cap_kb} kB: object {k} answered {:?}",
                answers[k as usize].as_ref().map(|_| ())
            );
        }
        // Gap-free: one seq per object kept.
        assert_eq!(s.last_seq().unwrap(), ok.len() as u64);
    }
}

#[test]
fn a_group_that_sqlite_rolls_back_whole_is_done_again_one_write_at_a_time() {
    let (_dir, path, mut s) = open("group-rollback");
    // A trigger that rolls back the whole transaction when object 7 is
    // registered, as SQLite does on some I/O errors mid-transaction.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON objects \
             WHEN NEW.vision_id = 'vision_7_3_7' \
             BEGIN SELECT RAISE(ROLLBACK, 'injected'); END;",
        )
        .unwrap();
    let writes: Vec<Write> = (0..10)
        .map(|k| Write::Register(registration(k, (k % 4) as u8, k as i64), k as i64))
        .collect();
    let answers = s.write_group(&writes);
    for (k, a) in answers.iter().enumerate() {
        if k == 7 {
            let e = a.as_ref().unwrap_err().to_string();
            assert!(e.contains("injected") && e.contains("registering"), "{e}");
        } else {
            assert!(
                matches!(a, Ok(Written::Registered(r)) if r.created),
                "object {k}: {a:?}"
            );
        }
    }
    drop(s);
    let s = Store::open(&path).unwrap();
    for k in 0..10 {
        assert_eq!(s.get(&id(k)).unwrap().is_some(), k != 7, "object {k}");
    }
    assert_eq!(s.last_seq().unwrap(), 9);
}
