//! Picks of moving objects, end to end below ROS: the simulated world
//! (belt, objects, vacuum physics), the GRBL emulator on a real PTY, our
//! GRBL client, the shared intercept model and the pick planner. An oracle
//! that reads the objects' true positions stands in for perception and the
//! scheduler, so what is measured is the motion layer alone: every pick it
//! starts must end with the object in its bin, by the world's own account.

use cncpick::kinematics::{Limits, Picker, Trajectory, Workspace};
use cncpick::motion::grbl::client::{ClientConfig, Grbl};
use cncpick::motion::pick::{pick, Clock, Job, Outcome, PickError};
use cncpick::sim::cell::SimCore;
use cncpick::sim::grbl::machine::Config;
use cncpick::sim::grbl::pty::{PtyEmulator, SimClock};
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::{EventKind, TruthEvent};
use cncpick::sim::vacuum::NozzleSample;
use cncpick::sim::world::Place;
use nalgebra::Vector3;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Cell {
    core: Arc<Mutex<SimCore>>,
    events: Arc<Mutex<Vec<TruthEvent>>>,
    emu: Arc<PtyEmulator>,
    clock: SimClock,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cell {
    /// The world and CNC 0's board, advanced together every 2 ms.
    fn start(p: SimParams, time_scale: f64) -> Cell {
        let cfg = p.config().unwrap();
        let clock = SimClock::new(time_scale);
        let emu = Arc::new(
            PtyEmulator::start_on(Config::default(), cfg.grbl_settings(0), clock, None).unwrap(),
        );
        let core = Arc::new(Mutex::new(SimCore::new(cfg)));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (core, events, emu, stop) =
                (core.clone(), events.clone(), emu.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let t = clock.now().as_secs_f64();
                    let mut c = core.lock().unwrap();
                    c.advance_to(t);
                    let s = emu.snapshot();
                    let tip = c.cfg.cncs[0].frame.to_belt_m(Vector3::from(s.position_mm));
                    c.nozzle(
                        0,
                        NozzleSample {
                            t_s: s.at.as_secs_f64(),
                            tip_m: [tip.x, tip.y, tip.z],
                            vacuum_on: s.vacuum_on,
                        },
                    );
                    emu.set_vacuum_sensor(c.holding(0));
                    events.lock().unwrap().extend(c.take_events());
                    drop(c);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Cell {
            core,
            events,
            emu,
            clock,
            stop,
            thread: Some(thread),
        }
    }

    fn picker(&self) -> Picker {
        let c = self.core.lock().unwrap();
        let cnc = &c.cfg.cncs[0];
        let s = c.cfg.grbl_settings(0);
        Picker {
            frame: cnc.frame,
            limits: Limits {
                max_rate_mm_per_min: [0, 1, 2].map(|a| s.max_rate_mm_min(a)),
                accel_mm_per_s2: [0, 1, 2].map(|a| s.accel_mm_s2(a)),
            },
            workspace: Workspace::from_travel([0, 1, 2].map(|a| s.travel_mm(a)), 1.0),
            reach_x_min_m: cnc.x_min_m,
            reach_x_max_m: cnc.x_max_m,
            approach_height_m: 0.02,
            safe_z_m: 0.08,
            descend_s: 0.2,
            track_s: 0.25,
            lag_s: 0.05,
        }
    }

    /// The next object of a class this CNC bins that it can still meet.
    fn next_target(
        &self,
        picker: &Picker,
        at_mm: Vector3<f64>,
        skip: &[u64],
    ) -> Option<(u64, Job)> {
        let c = self.core.lock().unwrap();
        let now = self.clock.now().as_secs_f64();
        let v = c.world.belt.speed_mps(now);
        let mut best: Option<(f64, u64, Job)> = None;
        for o in c.world.objects() {
            if !matches!(o.place, Place::OnBelt { .. }) || skip.contains(&o.id) {
                continue;
            }
            let Some(bin) = c.cfg.bins.iter().find(|b| b.cnc == 0 && b.class == o.class) else {
                continue;
            };
            let [x, y, top] = c.world.position_m(o, now);
            let traj = Trajectory {
                x_m: x,
                y_m: y,
                t0_s: now,
                vx_mps: v,
            };
            if let Ok(i) = picker.intercept(&traj, top, at_mm, now) {
                let job = Job {
                    traj,
                    height_m: top,
                    bin_m: (bin.x_m, bin.y_m),
                    belt_mps: v,
                    release_dwell_s: 0.05,
                };
                if best.as_ref().is_none_or(|(t, _, _)| i.contact_at_s < *t) {
                    best = Some((i.contact_at_s, o.id, job));
                }
            }
        }
        best.map(|(_, id, job)| (id, job))
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
        let Some((id, job)) = cell.next_target(&picker, at, &tried) else {
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
