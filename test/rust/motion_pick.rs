//! Picks of moving objects, end to end below ROS: the simulated world
//! (belt, objects, vacuum physics), the GRBL emulator on a real PTY, our
//! GRBL client, the shared intercept model and the pick planner. An oracle
//! that reads the objects' true positions stands in for perception and the
//! scheduler, so what is measured is the motion layer alone: every pick it
//! starts must end with the object in its bin, by the world's own account.

use cncpick::motion::pick::{Outcome, PickError};
use cncpick::sim::harness::PickCell as Cell;
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pick_started_ends_with_the_object_in_its_bin() {
    let p = SimParams {
        seed: 7,
        arrival_rate_per_min: 60.0,
        burst_probability: 0.0,
        ..SimParams::default()
    };
    let cell = Cell::start(p, 1.0).unwrap();
    let (g, mut at) = cell.connect().await.unwrap();
    let (mut picked, mut late, mut tried) = (Vec::new(), 0, Vec::new());
    while picked.len() < 6 {
        assert!(tried.len() < 20, "too many attempts: {tried:?}");
        match cell.pick_next(&g, at, &mut tried).await {
            (id, Ok(done), _) => {
                assert_eq!(done.outcome, Outcome::Picked, "object {id}");
                at = done.at_mm;
                picked.push(id);
            }
            // Abandoned before contact: the window guard, not a failure of
            // the pick itself; the gantry is where the approach left it.
            (id, Err(PickError::Late { by_s }), _) => {
                eprintln!("object {id}: approach late by {by_s:.3} s; abandoned");
                late += 1
            }
            (id, Err(e), _) => panic!("object {id}: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = cell.events.lock().unwrap().clone();
    for id in &picked {
        let kinds: Vec<EventKind> = events
            .iter()
            .filter(|e| e.object_id == *id)
            .map(|e| e.kind)
            .collect();
        assert!(
            kinds.contains(&EventKind::PickedUp) && kinds.contains(&EventKind::Binned),
            "object {id}: {kinds:?}"
        );
    }
    assert!(late <= 1, "{late} picks abandoned late");
}
