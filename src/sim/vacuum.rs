//! Vacuum physics. A pick succeeds when, with vacuum on, the nozzle stays at
//! the object's top (within `z_tolerance`) and over its centre (within
//! `xy_tolerance`) for the dwell, following it as the belt moves. A held
//! object moves with the nozzle, may drop on the way (drop probability),
//! and when the vacuum goes off it is binned over a bin of its CNC, put
//! back over the belt, or dropped anywhere else.

use super::params::SimConfig;
use super::rng::stream;
use super::truth::{EventKind, TruthEvent};
use super::world::{Place, World};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One CNC's nozzle at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NozzleSample {
    pub t_s: f64,
    /// Nozzle tip, belt frame, m.
    pub tip_m: [f64; 3],
    pub vacuum_on: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Nozzle {
    Idle,
    Sucking {
        contact: Option<(u64, f64)>,
        /// The object it came closest to touching this cycle.
        near: Option<u64>,
    },
    Holding {
        id: u64,
        drop_at_s: Option<f64>,
    },
}

pub struct Vacuum {
    nozzles: Vec<Nozzle>,
    rng: ChaCha8Rng,
}

impl Vacuum {
    pub fn new(cfg: &SimConfig) -> Self {
        Vacuum {
            nozzles: vec![Nozzle::Idle; cfg.cncs.len()],
            rng: stream(cfg.seed, "vacuum"),
        }
    }

    /// What CNC `cnc` holds, if anything.
    pub fn holding(&self, cnc: usize) -> Option<u64> {
        match self.nozzles.get(cnc) {
            Some(Nozzle::Holding { id, .. }) => Some(*id),
            _ => None,
        }
    }

    /// Applies one nozzle sample (the world already advanced to its time).
    /// `failed`: a vacuum-failure fault is on, so there is no suction.
    pub fn sample(
        &mut self,
        world: &mut World,
        cnc: usize,
        s: NozzleSample,
        failed: bool,
    ) -> Vec<TruthEvent> {
        let cfg = world.cfg.clone();
        let v = cfg.vacuum;
        let cnc_id = cfg.cncs[cnc].id.clone();
        let event = |kind, id: u64, detail: &str| TruthEvent {
            t_s: s.t_s,
            object_id: id,
            kind,
            cnc: Some(cnc_id.clone()),
            detail: detail.to_string(),
        };
        let mut out = Vec::new();
        let state = self.nozzles[cnc];
        let next = match state {
            Nozzle::Holding { id, drop_at_s } => {
                world.carry(id, s.tip_m);
                let fell = failed || drop_at_s.is_some_and(|d| s.t_s >= d);
                if fell || !s.vacuum_on {
                    let [x, y, _] = s.tip_m;
                    let class = world.get(id).map(|o| o.class);
                    let bin = cfg
                        .bins
                        .iter()
                        .find(|b| b.cnc == cnc && (x - b.x_m).hypot(y - b.y_m) <= cfg.bin_radius_m);
                    let on_belt = (0.0..=cfg.belt_length_m).contains(&x)
                        && (0.0..=cfg.belt_width_m).contains(&y);
                    if fell {
                        world.remove(id);
                        let why = if failed {
                            "vacuum failure"
                        } else {
                            "fell from the nozzle"
                        };
                        out.push(event(EventKind::Dropped, id, why));
                    } else if let Some(b) = bin {
                        world.remove(id);
                        let what = &cfg.classes[b.class].name;
                        let detail = if Some(b.class) == class {
                            format!("bin {what}")
                        } else {
                            format!("bin {what} (wrong bin)")
                        };
                        out.push(event(EventKind::Binned, id, &detail));
                    } else if on_belt {
                        world.put_on_belt(id, x, y, s.t_s);
                        out.push(event(EventKind::PutBack, id, ""));
                    } else {
                        world.remove(id);
                        out.push(event(EventKind::Dropped, id, "released away from a bin"));
                    }
                    if s.vacuum_on {
                        Nozzle::Sucking {
                            contact: None,
                            near: None,
                        }
                    } else {
                        Nozzle::Idle
                    }
                } else {
                    state
                }
            }
            Nozzle::Idle | Nozzle::Sucking { .. } if !s.vacuum_on => {
                if let Nozzle::Sucking { near, .. } = state {
                    out.push(event(
                        EventKind::MissedPick,
                        near.unwrap_or(0),
                        "vacuum cycle took nothing",
                    ));
                }
                Nozzle::Idle
            }
            Nozzle::Idle | Nozzle::Sucking { .. } => {
                let (contact, near) = match state {
                    Nozzle::Sucking { contact, near } => (contact, near),
                    _ => (None, None),
                };
                // The object under the nozzle, if one is close enough.
                let [nx, ny, nz] = s.tip_m;
                let mut best: Option<(f64, u64, bool)> = None; // (xy distance, id, touching)
                for o in world.objects() {
                    if !matches!(o.place, Place::OnBelt { .. }) {
                        continue;
                    }
                    let [x, y, top] = world.position_m(o, s.t_s);
                    let d = (nx - x).hypot(ny - y);
                    let touching = d <= v.xy_tolerance_m && nz <= top + v.z_tolerance_m;
                    if d <= 0.1 && best.is_none_or(|(bd, _, _)| d < bd) {
                        best = Some((d, o.id, touching));
                    }
                }
                let near = best.map(|(_, id, _)| id).or(near);
                match best {
                    Some((d, id, true)) if !failed => {
                        let since = match contact {
                            Some((c, since)) if c == id => since,
                            _ => s.t_s,
                        };
                        if s.t_s - since >= v.dwell_s {
                            world.hold(id, cnc, s.tip_m);
                            // How far the nozzle was from the object's
                            // centre as it took it: the intercept error.
                            let detail = format!("xy offset {:.1} mm", d * 1000.0);
                            out.push(event(EventKind::PickedUp, id, &detail));
                            let drop_at_s = self
                                .rng
                                .random_bool(v.drop_probability)
                                .then(|| s.t_s + self.rng.random_range(0.05..0.5));
                            Nozzle::Holding { id, drop_at_s }
                        } else {
                            Nozzle::Sucking {
                                contact: Some((id, since)),
                                near,
                            }
                        }
                    }
                    _ => Nozzle::Sucking {
                        contact: None,
                        near,
                    },
                }
            }
        };
        self.nozzles[cnc] = next;
        out
    }
}
