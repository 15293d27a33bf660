//! Picks of moving objects, end to end below ROS: the simulated world
//! (belt, objects, vacuum physics), the GRBL emulator on a real PTY, our
//! GRBL client, the shared intercept model and the pick planner. An oracle
//! that reads the objects' true positions stands in for perception and the
//! scheduler, so what is measured is the motion layer alone: every pick it
//! starts must end with the object in its bin, by the world's own account.

mod common;

use cncpick::motion::grbl::client::{ClientConfig, Grbl};
use cncpick::motion::pick::{pick, Clock, Outcome, PickError};
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use common::PickCell as Cell;
use nalgebra::Vector3;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pick_started_ends_with_the_object_in_its_bin() {
    let p = SimParams {
        seed: 7,
        arrival_rate_per_min: 60.0,
        burst_probability: 0.0,
        ..SimParams::default()
    };
    let cell = Cell::start(p, 1.0);
    let picker = cell.picker();
    let mut config = ClientConfig::new(cell.emu.path());
    config.poll_period = Duration::from_millis(50);
    let g = Grbl::open(config).unwrap();
    g.soft_reset(Duration::from_secs(2)).await.unwrap();
    let clock = cell.clock;
    let now = move || clock.now().as_secs_f64();
    let clock = Clock {
        now_s: &now,
        time_scale: 1.0,
    };
    // Park inside the workspace at the safe height, as the node does after
    // configure (machine zero is on the soft limits).
    let mut at = Vector3::new(-300.0, -375.0, -70.0);
    assert_eq!(
        g.send_within("G0 X-300 Y-375 Z-70", Duration::from_secs(5))
            .await,
        Ok(cncpick::motion::grbl::client::Answer::Ok)
    );
    let (mut picked, mut late, mut tried) = (Vec::new(), 0, Vec::new());
    while picked.len() < 6 {
        assert!(tried.len() < 20, "too many attempts: {tried:?}");
        let Some((id, job)) = cell
            .next_target(&picker, at, &tried)
            .map(|(id, job, _)| (id, job))
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tried.push(id);
        match pick(
            &g,
            &picker,
            at,
            &job,
            &clock,
            Duration::from_secs(2),
            |_| {},
        )
        .await
        {
            Ok(done) => {
                assert_eq!(done.outcome, Outcome::Picked, "object {id}");
                at = done.at_mm;
                picked.push(id);
            }
            // Abandoned before contact: the window guard, not a failure of
            // the pick itself; the gantry is where the approach left it.
            Err(PickError::Late { by_s }) => {
                eprintln!("object {id}: approach late by {by_s:.3} s; abandoned");
                late += 1
            }
            Err(e) => panic!("object {id}: {e}"),
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
