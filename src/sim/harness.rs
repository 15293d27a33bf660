//! A test and benchmark harness for motion: the simulated world (belt,
//! objects, vacuum physics) and CNC 0's GRBL emulator on a real PTY,
//! advanced together every 2 ms on one clock, with the truth events kept,
//! and an oracle that finds the next object the CNC can pick from the
//! objects' true positions (standing in for perception and the scheduler).
//! The board can be unplugged and plugged in again (a power cycle: a new
//! PTY behind the same symlink, the position lost).

use crate::kinematics::{Limits, Picker, Trajectory, Workspace};
use crate::motion::grbl::client::{Answer, ClientConfig, Grbl};
use crate::motion::pick::{pick, Clock, Done, Job, PickError};
use crate::sim::cell::SimCore;
use crate::sim::grbl::machine::Config;
use crate::sim::grbl::pty::{PtyEmulator, SimClock};
use crate::sim::params::SimParams;
use crate::sim::truth::TruthEvent;
use crate::sim::vacuum::NozzleSample;
use crate::sim::world::Place;
use nalgebra::Vector3;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Slot = Arc<Mutex<Option<Arc<PtyEmulator>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The simulated world and CNC 0's GRBL board on a real PTY, advanced
/// together every 2 ms: the stand-in hardware for motion tests.
pub struct PickCell {
    pub core: Arc<Mutex<SimCore>>,
    pub events: Arc<Mutex<Vec<TruthEvent>>>,
    board: Slot,
    /// Powers a board on with its gantry at a position (machine mm).
    power_on: Box<dyn Fn([f64; 3]) -> std::io::Result<PtyEmulator> + Send + Sync>,
    /// Where the gantry stood when the board was unplugged.
    unplugged_at_mm: Mutex<[f64; 3]>,
    pub clock: SimClock,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PickCell {
    /// The world and CNC 0's board, advanced together every 2 ms.
    pub fn start(p: SimParams, time_scale: f64) -> anyhow::Result<PickCell> {
        Self::start_with(p, time_scale, Config::default())
    }

    /// As `start`, with the board's timing.
    pub fn start_with(p: SimParams, time_scale: f64, board: Config) -> anyhow::Result<PickCell> {
        Self::start_linked(p, time_scale, board, None)
    }

    /// As `start_with`, with a symlink to the board's PTY at `link` (kept
    /// across unplugging and plugging in again).
    pub fn start_linked(
        p: SimParams,
        time_scale: f64,
        board: Config,
        link: Option<&Path>,
    ) -> anyhow::Result<PickCell> {
        let cfg = p.config().map_err(anyhow::Error::msg)?;
        let clock = SimClock::new(time_scale);
        let (settings, link) = (cfg.grbl_settings(0), link.map(Path::to_path_buf));
        let power_on = Box::new(move |at_mm: [f64; 3]| {
            PtyEmulator::start_at(
                board.clone(),
                settings.clone(),
                clock,
                link.as_deref(),
                at_mm,
            )
        });
        let board: Slot = Arc::new(Mutex::new(Some(Arc::new(power_on([0.0; 3])?))));
        let core = Arc::new(Mutex::new(SimCore::new(cfg)));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (core, events, board, stop) =
                (core.clone(), events.clone(), board.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last_tip = [0.0; 3];
                while !stop.load(Ordering::Acquire) {
                    let t = clock.now().as_secs_f64();
                    let mut c = lock(&core);
                    c.advance_to(t);
                    let emu = lock(&board).clone();
                    // Unplugged is powered off: the vacuum is off.
                    let (at, vacuum_on) = match &emu {
                        Some(emu) => {
                            let s = emu.snapshot();
                            let tip = c.cfg.cncs[0].frame.to_belt_m(Vector3::from(s.position_mm));
                            last_tip = [tip.x, tip.y, tip.z];
                            (s.at.as_secs_f64(), s.vacuum_on)
                        }
                        None => (t, false),
                    };
                    c.nozzle(
                        0,
                        NozzleSample {
                            t_s: at,
                            tip_m: last_tip,
                            vacuum_on,
                        },
                    );
                    if let Some(emu) = &emu {
                        emu.set_vacuum_sensor(c.holding(0));
                    }
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(c.take_events());
                    drop(c);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Ok(PickCell {
            core,
            events,
            board,
            power_on,
            unplugged_at_mm: Mutex::new([0.0; 3]),
            clock,
            stop,
            thread: Some(thread),
        })
    }

    /// The board (plugged in).
    ///
    /// # Panics
    /// While it is unplugged: a harness misused.
    pub fn emu(&self) -> Arc<PtyEmulator> {
        lock(&self.board).clone().expect("the board is unplugged")
    }

    /// Unplugs the board: its PTY closes, its link goes, and it powers off.
    pub fn unplug(&self) {
        let Some(mut emu) = lock(&self.board).take() else {
            return;
        };
        *lock(&self.unplugged_at_mm) = emu.snapshot().position_mm;
        // Powered off here, not by a late holder's drop (which would take
        // away the link of a board plugged in since).
        for _ in 0..1000 {
            match Arc::try_unwrap(emu) {
                Ok(mut e) => return e.stop(),
                Err(shared) => emu = shared,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::warn!("the unplugged board is still held; it powers off when let go");
    }

    /// Plugs a freshly powered board in behind the same link.
    pub fn plug_in(&self) -> std::io::Result<()> {
        let at_mm = *lock(&self.unplugged_at_mm);
        let emu = Arc::new((self.power_on)(at_mm)?);
        *lock(&self.board) = Some(emu);
        Ok(())
    }

    pub fn picker(&self) -> Picker {
        let c = self.core.lock().unwrap_or_else(|e| e.into_inner());
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

    /// A GRBL client on the board, reset and parked inside the workspace at
    /// the safe height; returns it and where it is (machine mm).
    pub async fn connect(&self) -> anyhow::Result<(Grbl, Vector3<f64>)> {
        let mut config = ClientConfig::new(self.emu().path());
        config.poll_period = Duration::from_millis(50);
        let g = Grbl::open(config)?;
        g.soft_reset(Duration::from_secs(2)).await?;
        let park = "G0 X-300 Y-375 Z-70";
        let answer = g.send_within(park, Duration::from_secs(5)).await?;
        anyhow::ensure!(answer == Answer::Ok, "{park}: {answer:?}");
        Ok((g, Vector3::new(-300.0, -375.0, -70.0)))
    }

    /// Waits for the next object the CNC can reach (not in `skip`), adds
    /// it to `skip`, and picks it: its truth id, how the pick ended, and how
    /// long it took, s.
    pub async fn pick_next(
        &self,
        g: &Grbl,
        at_mm: Vector3<f64>,
        skip: &mut Vec<u64>,
    ) -> (u64, Result<Done, PickError>, f64) {
        let picker = self.picker();
        let (id, job) = loop {
            if let Some((id, job, _)) = self.next_target(&picker, at_mm, skip) {
                break (id, job);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        skip.push(id);
        let sim = self.clock;
        let now = move || sim.now().as_secs_f64();
        let clock = Clock {
            now_s: &now,
            time_scale: sim.time_scale,
        };
        let t0 = std::time::Instant::now();
        let r = pick(
            g,
            &picker,
            at_mm,
            &job,
            &clock,
            Duration::from_secs(2),
            |_| {},
        )
        .await;
        (id, r, t0.elapsed().as_secs_f64())
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
        let c = self.core.lock().unwrap_or_else(|e| e.into_inner());
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
