//! Helpers the integration tests share (each test binary uses some).
#![allow(dead_code)]

use cncpick::kinematics::{Limits, Picker, Trajectory, Workspace};
use cncpick::motion::pick::Job;
use cncpick::sim::cell::SimCore;
use cncpick::sim::grbl::machine::Config;
use cncpick::sim::grbl::pty::{PtyEmulator, SimClock};
use cncpick::sim::params::SimParams;
use cncpick::sim::render::Renderer;
use cncpick::sim::truth::TruthEvent;
use cncpick::sim::vacuum::NozzleSample;
use cncpick::sim::world::Place;
use nalgebra::Vector3;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fresh, empty directory for test `tag` of suite `suite` (per process).
pub fn temp_dir(suite: &str, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cncpick-{suite}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The camera of `core`'s cell.
pub fn renderer(core: &SimCore) -> Renderer {
    Renderer::for_config(&core.cfg).unwrap()
}

/// The simulated world and CNC 0's GRBL board on a real PTY, advanced
/// together every 2 ms: the stand-in hardware for motion tests.
pub struct PickCell {
    pub core: Arc<Mutex<SimCore>>,
    pub events: Arc<Mutex<Vec<TruthEvent>>>,
    pub emu: Arc<PtyEmulator>,
    pub clock: SimClock,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PickCell {
    /// The world and CNC 0's board, advanced together every 2 ms.
    pub fn start(p: SimParams, time_scale: f64) -> PickCell {
        Self::start_with(p, time_scale, Config::default())
    }

    /// As `start`, with the board's timing.
    pub fn start_with(p: SimParams, time_scale: f64, board: Config) -> PickCell {
        let cfg = p.config().unwrap();
        let clock = SimClock::new(time_scale);
        let emu =
            Arc::new(PtyEmulator::start_on(board, cfg.grbl_settings(0), clock, None).unwrap());
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
        PickCell {
            core,
            events,
            emu,
            clock,
            stop,
            thread: Some(thread),
        }
    }

    pub fn picker(&self) -> Picker {
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
    /// The next object of a class this CNC bins that it can still meet:
    /// its id, the job, and its class's name.
    pub fn next_target(
        &self,
        picker: &Picker,
        at_mm: Vector3<f64>,
        skip: &[u64],
    ) -> Option<(u64, Job, String)> {
        let c = self.core.lock().unwrap();
        let now = self.clock.now().as_secs_f64();
        let v = c.world.belt.speed_mps(now);
        let mut best: Option<(f64, u64, Job, String)> = None;
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
                if best.as_ref().is_none_or(|(t, ..)| i.contact_at_s < *t) {
                    let class = c.cfg.classes[o.class].name.clone();
                    best = Some((i.contact_at_s, o.id, job, class));
                }
            }
        }
        best.map(|(_, id, job, class)| (id, job, class))
    }
}

impl Drop for PickCell {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
