//! The scheduler node on real DDS, in the simulated cell's graph (sim with
//! two GRBL emulators on PTYs, state manager, cnc_1, cnc_2, tracker,
//! scheduler; a truth detector in place of camera and detector). Objects
//! are assigned and picked through the PickObject action; cnc_1 is killed
//! while it holds an object it has not started: that object is revoked
//! and given to cnc_2 within 1 s, nothing is left ASSIGNED, nothing is
//! picked twice (state manager and sim truth), and the scheduler's input
//! log replays to the assignments the state manager recorded.

mod common;

use cncpick::kit::testing::DomainLease;
use cncpick::kit::time::wall_now_s;
use cncpick::sched::core::{Core, Input, Logged, Output};
use cncpick::sched::params::SchedParams;
use cncpick::sim::graph::SimGraph;
use cncpick::sim::params::SimParams;
use cncpick::state::lifecycle::ObjState;
use cncpick::state::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BINNED: u8 = 2;

fn sim() -> SimParams {
    let classes = ["red_box", "green_disc", "blue_bar"];
    SimParams {
        seed: 5,
        arrival_rate_per_min: 40.0,
        burst_probability: 0.0,
        // Both CNCs bin every class, so either can take any object.
        bin_cnc_ids: ["1", "1", "1", "2", "2", "2"].map(String::from).to_vec(),
        bin_classes: classes
            .iter()
            .chain(&classes)
            .map(|c| c.to_string())
            .collect(),
        bin_x_m: vec![2.3, 2.3, 2.3, 3.1, 3.1, 3.1],
        bin_y_m: vec![0.68; 6],
        ..SimParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_cnc_loses_its_unstarted_object_to_the_other_within_a_second() {
    cncpick::kit::app::init_tracing_at(Some("info"));
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    let dir = common::temp_dir("sched_node", "kill");
    let log_path = dir.join("scheduler_inputs.jsonl");
    let sched = SchedParams {
        input_log_path: log_path.display().to_string(),
        ..SchedParams::default()
    };
    let mut g = SimGraph::start(&dir, sim(), sched).await.unwrap();

    // Wait (at most 90 s) for cnc_1, once it has picked an object, to hold
    // one it has not started while it picks another, then kill it. Both
    // read from one snapshot of the events: read apart, a pick that ended
    // between the two reads counted both as the pick under way and as the
    // one picked before, and cnc_1 was killed about to start an object
    // that no other CNC could reach any more (a dry run, 12-07).
    let held_unstarted = |events: &[cncpick::sim::graph::Heard]| -> Vec<[u8; 16]> {
        let mut last: BTreeMap<[u8; 16], (u8, &str)> = BTreeMap::new();
        for e in events {
            last.insert(e.object_id, (e.to, e.cnc_id.as_str()));
        }
        let of_1 = |s: ObjState| {
            last.iter()
                .filter(|(_, (to, c))| *to == s.id() && *c == "1")
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        };
        let picked = events
            .iter()
            .filter(|e| e.to == ObjState::Picked.id() && e.cnc_id == "1")
            .count();
        if picked == 0 || of_1(ObjState::Picking).is_empty() {
            return Vec::new();
        }
        of_1(ObjState::Assigned)
    };
    let deadline = wall_now_s() + 90.0;
    let held = loop {
        let h = held_unstarted(&g.events.lock().unwrap());
        if !h.is_empty() {
            break h;
        }
        assert!(
            wall_now_s() < deadline,
            "cnc_1 never held an unstarted object"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let kill_s = wall_now_s();
    g.kill_cnc("1").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let heard = g.events.lock().unwrap().clone();
    let truth = g.truth.lock().unwrap().clone();
    g.stop().await;

    // What cnc_1 held unstarted went back and on to cnc_2 within 1 s.
    for id in &held {
        let after: Vec<_> = heard
            .iter()
            .filter(|e| e.object_id == *id && e.at_s >= kill_s - 0.05)
            .collect();
        let revoked = after
            .iter()
            .find(|e| e.to == ObjState::Detected.id())
            .unwrap_or_else(|| panic!("not revoked: {after:?}"));
        let to_2 = after
            .iter()
            .find(|e| e.to == ObjState::Assigned.id() && e.cnc_id == "2")
            .unwrap_or_else(|| panic!("not given to cnc_2: {after:?}"));
        assert!(
            revoked.at_s - kill_s <= 1.0,
            "revoked {:.3} s on",
            revoked.at_s - kill_s
        );
        if to_2.at_s - kill_s > 1.0 {
            for e in heard
                .iter()
                .filter(|e| e.at_s > kill_s - 3.0 && e.at_s < kill_s + 4.0)
            {
                eprintln!(
                    "{:.3} {:?} {} {}",
                    e.at_s - kill_s,
                    &e.object_id[..1],
                    e.to,
                    e.cnc_id
                );
            }
        }
        assert!(
            to_2.at_s - kill_s <= 1.0,
            "given to cnc_2 {:.3} s on",
            to_2.at_s - kill_s
        );
    }

    // The state manager's audit trail: nothing left ASSIGNED to the dead
    // CNC, or to the live one for longer than a pick takes; no object
    // started twice; cnc_2 picked after the kill.
    let store = Store::open(&dir.join("state.sqlite")).unwrap();
    let trail = store.events_after(0, 1_000_000).unwrap();
    let mut last: BTreeMap<[u8; 16], &cncpick::state::store::Event> = BTreeMap::new();
    let mut started: BTreeMap<[u8; 16], usize> = BTreeMap::new();
    for e in &trail {
        last.insert(e.object_id, e);
        if e.to == ObjState::Picking {
            *started.entry(e.object_id).or_default() += 1;
        }
    }
    let end_ns = trail.last().unwrap().at_ns;
    for (id, e) in &last {
        if e.to == ObjState::Assigned {
            assert_eq!(e.cnc_id, "2", "{id:?} left ASSIGNED to {}", e.cnc_id);
            assert!(
                end_ns - e.at_ns < 6_000_000_000,
                "{id:?} ASSIGNED for too long"
            );
        }
    }
    assert!(
        started.values().all(|&n| n == 1),
        "an object was started twice"
    );
    let kill_ns = (kill_s * 1e9) as i64;
    let picked_by_2 = trail
        .iter()
        .filter(|e| e.to == ObjState::Picked && e.cnc_id == "2" && e.at_ns > kill_ns)
        .count();
    assert!(
        picked_by_2 >= 2,
        "cnc_2 picked {picked_by_2} after the kill"
    );
    // The world's truth: no object binned twice.
    let mut binned = BTreeSet::new();
    for (_, sim_id, kind, _) in &truth {
        if *kind == BINNED {
            assert!(binned.insert(*sim_id), "sim object {sim_id} binned twice");
        }
    }
    assert!(binned.len() >= 3, "only {} objects binned", binned.len());

    // The scheduler's decisions depend only on its inputs: its input log,
    // replayed through a fresh core, makes exactly the assignments the
    // state manager accepted from it.
    let log: Vec<Logged> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cfg = SchedParams {
        cnc_ids: vec!["1".into(), "2".into()],
        ..SchedParams::default()
    }
    .config()
    .unwrap();
    // Each Assign the replay makes, paired with the logged answer to it.
    let mut core = Core::new(cfg);
    let mut asked: BTreeMap<[u8; 16], (String, u64)> = BTreeMap::new();
    let mut replayed: Vec<([u8; 16], String, u64)> = Vec::new();
    for l in &log {
        if let Input::AssignAnswer {
            id,
            accepted: Some(true),
        } = &l.input
        {
            let (cnc, epoch) = asked
                .remove(id)
                .expect("an answer to an Assign the replay made");
            replayed.push((*id, cnc, epoch));
        }
        for o in core.step(l.now_s, l.input.clone()) {
            if let Output::Assign { id, cnc, epoch, .. } = o {
                asked.insert(id, (cnc, epoch));
            }
        }
    }
    let mut recorded: Vec<([u8; 16], String, u64)> = trail
        .iter()
        .filter(|e| e.to == ObjState::Assigned && e.actor == "scheduler")
        .map(|e| (e.object_id, e.cnc_id.clone(), e.epoch))
        .collect();
    replayed.sort();
    recorded.sort();
    assert!(!recorded.is_empty());
    assert_eq!(replayed, recorded);
}
