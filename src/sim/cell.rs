//! The simulated cell's core: the world, the vacuum physics and the fault
//! plan, on simulated time passed in. No ROS, no wall clock; the shell
//! (`node.rs`, `record.rs`, the benchmark) feeds it time and nozzle samples
//! and carries out the fault actions it returns on the emulators.

use super::faults::{FaultKind, FaultPlan};
use super::params::SimConfig;
use super::render::Drawn;
use super::rng::stream;
use super::truth::{EventKind, FrameTruth, TruthEvent};
use super::vacuum::{NozzleSample, Vacuum};
use super::world::{Place, World};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A fault for the shell to carry out on an emulator.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    Alarm {
        cnc: usize,
        code: u8,
    },
    /// Close the PTY; open a new one (a fresh board) at `until_s`.
    Disconnect {
        cnc: usize,
        until_s: f64,
    },
    Garbage {
        cnc: usize,
        bytes: Vec<u8>,
    },
}

pub struct SimCore {
    pub cfg: Arc<SimConfig>,
    pub world: World,
    vacuum: Vacuum,
    faults: FaultPlan,
    garbage: ChaCha8Rng,
    events: Vec<TruthEvent>,
}

impl SimCore {
    pub fn new(cfg: SimConfig) -> Self {
        let cfg = Arc::new(cfg);
        let faults = FaultPlan::new(
            &cfg.faults,
            cfg.seed,
            cfg.fault_rate_per_min,
            &cfg.fault_kinds,
            cfg.cncs.len(),
            cfg.fault_horizon_s,
        );
        SimCore {
            world: World::new(cfg.clone(), faults.belt_stops()),
            vacuum: Vacuum::new(&cfg),
            garbage: stream(cfg.seed, "garbage"),
            faults,
            cfg,
            events: Vec::new(),
        }
    }

    pub fn now_s(&self) -> f64 {
        self.world.now_s()
    }

    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    /// Exposure time of frame `k`, s.
    pub fn frame_time_s(&self, k: u64) -> f64 {
        k as f64 / self.cfg.camera.fps
    }

    /// Injects a fault (`"<kind> [key=value ...]"`) now, at `t_s`.
    pub fn inject(&mut self, entry: &str, t_s: f64) -> Result<(), String> {
        let ids: Vec<&str> = self.cfg.cncs.iter().map(|c| c.id.as_str()).collect();
        let f = super::faults::parse_injected(entry, t_s, &ids)?;
        self.faults.inject(f);
        Ok(())
    }

    /// Runs the world to `t_s`; returns the faults that fall due.
    pub fn advance_to(&mut self, t_s: f64) -> Vec<FaultAction> {
        let evs = self.world.advance_to(t_s);
        self.events.extend(evs);
        let mut actions = Vec::new();
        for f in self.faults.due(t_s) {
            let mut e = TruthEvent::new(f.at_s, 0, EventKind::Fault);
            e.cnc = f.cnc().map(|i| self.cfg.cncs[i].id.clone());
            e.detail = f.name().to_string();
            self.events.push(e);
            match f.kind {
                FaultKind::GrblAlarm { cnc, code } => {
                    actions.push(FaultAction::Alarm { cnc, code })
                }
                FaultKind::Disconnect { cnc, .. } => actions.push(FaultAction::Disconnect {
                    cnc,
                    until_s: f.until_s(),
                }),
                FaultKind::Garbage { cnc, bytes } => {
                    let bytes = (0..bytes).map(|_| self.garbage.random::<u8>()).collect();
                    actions.push(FaultAction::Garbage { cnc, bytes })
                }
                _ => {}
            }
        }
        actions
    }

    /// The truth events since the last call (or the last frame), in order.
    pub fn take_events(&mut self) -> Vec<TruthEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.object_id.cmp(&b.object_id)));
        events
    }

    /// Whether CNC `cnc`'s nozzle holds an object (its vacuum sensor).
    pub fn holding(&self, cnc: usize) -> bool {
        self.vacuum.holding(cnc).is_some()
    }

    /// A nozzle sample from CNC `cnc`'s emulator.
    pub fn nozzle(&mut self, cnc: usize, s: NozzleSample) {
        let s = NozzleSample {
            t_s: s.t_s.max(self.world.now_s()),
            ..s
        };
        let failed = self.faults.vacuum_failed(cnc, s.t_s);
        let evs = self.vacuum.sample(&mut self.world, cnc, s, failed);
        self.events.extend(evs);
    }

    /// The truth at frame `k`'s exposure and the objects the camera sees.
    /// Call before any nozzle sample later than its exposure.
    pub fn frame(&mut self, k: u64) -> (FrameTruth, Vec<Drawn>) {
        let t = self.frame_time_s(k);
        // Faults are left for advance_to, whose caller carries them out.
        let evs = self.world.advance_to(t);
        self.events.extend(evs);
        let drawn = self.drawn_at(t);
        let events = self.take_events();
        let truth = FrameTruth {
            frame: k,
            t_s: t,
            belt_speed_mps: self.world.belt.speed_mps(t),
            belt_travel_m: self.world.belt.travel_m(t),
            delivered: !self.faults.frame_dropped(t),
            objects: self.world.truth(t),
            events,
        };
        (truth, drawn)
    }

    /// The objects on the belt now, where the belt will have carried them
    /// by frame `k`'s exposure (not yet reached): what the camera will see
    /// unless an object is put on, picked or pushed before then. For
    /// [`super::render::Renderer::render_ahead`]; nothing is advanced.
    pub fn drawn_ahead(&self, k: u64) -> Vec<Drawn> {
        self.drawn_at(self.frame_time_s(k))
    }

    /// The objects on the belt, as the camera sees them at `t_s`.
    fn drawn_at(&self, t_s: f64) -> Vec<Drawn> {
        self.world
            .objects()
            .filter(|o| matches!(o.place, Place::OnBelt { .. }))
            .map(|o| {
                let [x, y, _] = self.world.position_m(o, t_s);
                Drawn {
                    class: o.class,
                    x_m: x,
                    y_m: y,
                    yaw_rad: o.yaw_rad,
                }
            })
            .collect()
    }

    /// How late frame `k` is delivered (frame_late faults), s.
    pub fn frame_delay_s(&self, k: u64) -> f64 {
        self.faults.frame_delay_s(self.frame_time_s(k))
    }
}
