//! The reach model: for each CNC, when an object can be touched and how
//! long the whole pick keeps the gantry busy, from the motion controller's
//! own intercept model ([`Picker::intercept`], [`Picker::travel_s`]): the
//! scheduler and the motion controller ask the same questions of one
//! implementation.

use crate::kinematics::{Picker, Trajectory};
use crate::motion::params::MotionParams;
use nalgebra::Vector3;

/// An object as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj {
    /// The scheduler's key for it (stable for the object's life).
    pub key: u64,
    pub class: String,
    /// Where it was at a stamp, and its speed along the belt.
    pub traj: Trajectory,
    /// Its top above the belt, m.
    pub height_m: f64,
    /// The detector's confidence, 0..1.
    pub confidence: f64,
}

/// One CNC as the scheduler plans for it.
#[derive(Debug, Clone, PartialEq)]
pub struct CncModel {
    pub id: String,
    pub picker: Picker,
    /// The classes it has a bin for, and where each bin is (belt x, y, m).
    pub bins: Vec<(String, (f64, f64))>,
    /// Vacuum-off dwell over the bin as GRBL carries it out (in whole
    /// 50 ms steps: [`crate::motion::grbl::dwell`]), s.
    pub release_dwell_s: f64,
}

/// One pick as planned: when the nozzle meets the object, and when and
/// where the gantry is free again (over the bin, at the safe height); or,
/// if the grip fails at the contact (the vacuum sensor says so and the
/// motion controller ends the pick there), free sooner, lifted to the
/// safe height over where the ride ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub contact_at_s: f64,
    pub done_at_s: f64,
    pub end_mm: Vector3<f64>,
    pub no_grip_done_at_s: f64,
    pub no_grip_end_mm: Vector3<f64>,
}

impl CncModel {
    /// The model of the CNC a motion controller's params describe.
    pub fn from_params(p: &MotionParams) -> CncModel {
        CncModel {
            id: p.cnc_id.clone(),
            picker: p.picker(),
            bins: p
                .bin_classes
                .iter()
                .zip(p.bin_x_m.iter().zip(&p.bin_y_m))
                .map(|(c, (&x, &y))| (c.clone(), (x, y)))
                .collect(),
            release_dwell_s: crate::motion::grbl::dwell(p.release_dwell_s).1,
        }
    }

    /// Its bin for `class`, if it has one.
    pub fn bin(&self, class: &str) -> Option<(f64, f64)> {
        self.bins.iter().find(|(c, _)| c == class).map(|(_, b)| *b)
    }

    /// Where the gantry waits over the bin for `class` (machine mm).
    fn bin_mm(&self, bin: (f64, f64)) -> Vector3<f64> {
        self.picker
            .frame
            .to_machine_mm(Vector3::new(bin.0, bin.1, self.picker.safe_z_m))
    }

    /// When `traj` may be touched by this CNC: from entering its window to
    /// the last contact that leaves room to ride with it. None if it does
    /// not move downstream.
    pub fn window(&self, traj: &Trajectory) -> Option<(f64, f64)> {
        let v = traj.vx_mps;
        if v <= 1e-6 {
            return None;
        }
        let (first_x, last_x) = self.picker.contact_x_m(v);
        let enter = traj.t0_s + (first_x - traj.x_m) / v;
        let leave = traj.t0_s + (last_x - traj.x_m) / v;
        (leave >= enter).then_some((enter, leave))
    }

    /// The pick of `o` by this CNC, free from `free_at_s` at `at_mm`: the
    /// earliest contact the intercept model allows, the ride, the lift and
    /// the carry to the class's bin, and the dwell there. None if it has no
    /// bin for the class or cannot meet the object in its window.
    pub fn slot(&self, o: &Obj, free_at_s: f64, at_mm: Vector3<f64>) -> Option<Slot> {
        let bin = self.bin_mm(self.bin(&o.class)?);
        let i = self
            .picker
            .intercept(&o.traj, o.height_m, at_mm, free_at_s)
            .ok()?;
        // The nozzle rides leading the object (as `motion::plan` moves).
        let lead_mm = Vector3::new(self.picker.lead_mm(o.traj.vx_mps), 0.0, 0.0);
        let release_mm = self.picker.frame.to_machine_mm(i.release_m) + lead_mm;
        let done_at_s = i.contact_at_s
            + self.picker.track_s
            + self.picker.travel_s(release_mm, bin)
            + self.release_dwell_s;
        let lifted_mm = self.picker.frame.to_machine_mm(Vector3::new(
            i.release_m.x,
            i.release_m.y,
            self.picker.safe_z_m,
        )) + lead_mm;
        Some(Slot {
            contact_at_s: i.contact_at_s,
            done_at_s,
            end_mm: bin,
            no_grip_done_at_s: i.contact_at_s
                + self.picker.track_s
                + self.picker.travel_s(release_mm, lifted_mm),
            no_grip_end_mm: lifted_mm,
        })
    }

    /// The least time a pick of `o` with its contact between the times
    /// `contact_s` keeps this CNC busy, split at the contact. Before it,
    /// from each of its bins (as `bins` lists them) to over `o` where it is
    /// then, the lag and the descent (`approach`); after it, the ride, the
    /// carry to `o`'s bin and the dwell (`depart`); and which bin that is.
    /// Every pick ends over a bin, so two contacts lie at least the first's
    /// depart and the second's approach from the first's bin apart. None
    /// without a bin for `o`.
    pub fn pick_parts_s(&self, o: &Obj, contact_s: (f64, f64)) -> Option<(Vec<f64>, f64, usize)> {
        let p = &self.picker;
        let lane = (o.traj.y_m, o.traj.y_m);
        // Where the nozzle is: over the object, or up to its lead ahead
        // of it (a bound must hold either way).
        let lead_m = p.lead_mm(o.traj.vx_mps) / 1000.0;
        let span = |dt: f64| {
            let (a, b) = (o.traj.x_at(contact_s.0 + dt), o.traj.x_at(contact_s.1 + dt));
            (a.min(b), a.max(b) + lead_m)
        };
        let to = self.bins.iter().position(|(c, _)| *c == o.class)?;
        let (out, _) = self.least_travels_s(self.bins[to].1, span(p.track_s), lane, &[o.height_m]);
        let approach = self
            .bins
            .iter()
            .map(|(_, b)| {
                self.least_travels_s(*b, span(0.0), lane, &[o.height_m]).1 + p.lag_s + p.descend_s
            })
            .collect();
        Some((approach, p.track_s + out + self.release_dwell_s, to))
    }

    /// The least travel from an object's top to the bin at `bin` (out),
    /// and from there to an approach point (back), over objects across
    /// `x_range_m` and `y_range_m`, of heights `heights_m`. Travel is
    /// shortest straight across from the bin: the ranges' ends and the
    /// bin's own x and y, clamped into range, cover it.
    fn least_travels_s(
        &self,
        bin: (f64, f64),
        x_range_m: (f64, f64),
        y_range_m: (f64, f64),
        heights_m: &[f64],
    ) -> (f64, f64) {
        let p = &self.picker;
        let bin_mm = self.bin_mm(bin);
        let xs = [
            x_range_m.0,
            x_range_m.1,
            bin.0.clamp(x_range_m.0, x_range_m.1),
        ];
        let ys = [
            y_range_m.0,
            y_range_m.1,
            bin.1.clamp(y_range_m.0, y_range_m.1),
        ];
        let (mut out, mut back) = (f64::INFINITY, f64::INFINITY);
        for &x in &xs {
            for &y in &ys {
                for &h in heights_m {
                    let at = |dz: f64| p.frame.to_machine_mm(Vector3::new(x, y, h + dz));
                    out = out.min(p.travel_s(at(0.0), bin_mm));
                    back = back.min(p.travel_s(bin_mm, at(p.approach_height_m)));
                }
            }
        }
        (out, back)
    }

    /// The shortest time any two consecutive contacts of this CNC can be
    /// apart, for objects across `y_range_m` of heights `heights_m`: the
    /// ride, the carry to a bin and its dwell, the travel from that bin
    /// back to an approach point, the lag and the descent, each at its
    /// least. A lower bound (the oracle's bound rests on it).
    pub fn min_cycle_s(&self, y_range_m: (f64, f64), heights_m: &[f64]) -> f64 {
        let p = &self.picker;
        let best = self
            .bins
            .iter()
            .map(|(_, bin)| {
                let window = p.reach_x_m();
                let (out, back) = self.least_travels_s(*bin, window, y_range_m, heights_m);
                out + back
            })
            .fold(f64::INFINITY, f64::min);
        p.track_s + self.release_dwell_s + best + p.lag_s + p.descend_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CncModel {
        CncModel::from_params(&MotionParams::default())
    }

    /// Where the tests' gantry rests: over belt (2.3, 0.4) m, at the safe
    /// height.
    fn park(m: &CncModel) -> Vector3<f64> {
        m.picker
            .frame
            .to_machine_mm(Vector3::new(2.3, 0.4, m.picker.safe_z_m))
    }

    fn obj(x_m: f64, y_m: f64) -> Obj {
        Obj {
            key: 1,
            class: "red_box".into(),
            traj: Trajectory {
                x_m,
                y_m,
                t0_s: 0.0,
                vx_mps: 0.2,
            },
            height_m: 0.04,
            confidence: 0.9,
        }
    }

    #[test]
    fn a_slot_is_the_motion_controllers_intercept_plus_the_ride_and_the_carry() {
        let m = model();
        let o = obj(1.0, 0.3);
        let park = park(&m);
        let s = m.slot(&o, 0.0, park).unwrap();
        let i = m.picker.intercept(&o.traj, 0.04, park, 0.0).unwrap();
        assert_eq!(s.contact_at_s, i.contact_at_s);
        assert!(s.done_at_s > s.contact_at_s + m.picker.track_s + m.release_dwell_s);
        let (enter, leave) = m.window(&o.traj).unwrap();
        assert!(s.contact_at_s >= enter - 1e-9 && s.contact_at_s <= leave + 1e-9);
        // Where and when it ends is where the motion controller's plan
        // goes (the nozzle leading the object): lifted after the ride if
        // the grip failed, over the bin after the dwell otherwise.
        let plan = crate::motion::plan::Planner { picker: &m.picker };
        let c = plan.contact(&i, o.traj.vx_mps).unwrap();
        let lifted = c[3].target_mm.unwrap();
        assert!(
            (s.no_grip_end_mm - lifted).norm() < 1e-9,
            "{s:?} {lifted:?}"
        );
        let no_grip_s = s.contact_at_s + m.picker.track_s + c[3].duration_s;
        assert!((s.no_grip_done_at_s - no_grip_s).abs() < 1e-9);
        let carry = plan.carry(lifted, (2.3, 0.68), m.release_dwell_s).unwrap();
        assert!((s.end_mm - carry[0].target_mm.unwrap()).norm() < 1e-9);
        let moved_s: f64 = carry.iter().map(|l| l.duration_s).sum();
        assert!((s.done_at_s - (no_grip_s + moved_s)).abs() < 1e-9, "{s:?}");
        // No bin, no slot; a later start, a later contact or none.
        assert!(m
            .slot(
                &Obj {
                    class: "green_disc".into(),
                    ..o.clone()
                },
                0.0,
                park
            )
            .is_none());
        let later = m.slot(&o, s.done_at_s, s.end_mm);
        assert!(later.is_none_or(|l| l.contact_at_s >= s.contact_at_s));
    }

    /// GRBL dwells in whole 50 ms steps: a release dwell of 0.06 s is
    /// carried out as 0.1 s, and the model plans the pick's end by what
    /// the motion controller's carry (planned from the same param) takes.
    #[test]
    fn a_release_dwell_is_modelled_as_grbl_carries_it_out() {
        let p = MotionParams {
            release_dwell_s: 0.06,
            ..MotionParams::default()
        };
        let m = CncModel::from_params(&p);
        assert!(
            (m.release_dwell_s - 0.1).abs() < 1e-12,
            "{}",
            m.release_dwell_s
        );
        let o = obj(1.0, 0.3);
        let park = park(&m);
        let s = m.slot(&o, 0.0, park).unwrap();
        let plan = crate::motion::plan::Planner { picker: &m.picker };
        let carry = plan
            .carry(s.no_grip_end_mm, (2.3, 0.68), p.release_dwell_s)
            .unwrap();
        assert_eq!(carry[2].text, "G4 P0.060");
        assert!((carry[2].duration_s - 0.1).abs() < 1e-12);
        let moved_s: f64 = carry.iter().map(|l| l.duration_s).sum();
        assert!(
            (s.done_at_s - (s.no_grip_done_at_s + moved_s)).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn the_minimum_cycle_bounds_every_pair_of_consecutive_picks() {
        let m = model();
        let lanes = [0.075, 0.225, 0.375, 0.525];
        let min = m.min_cycle_s((0.0, 0.6), &[0.04]);
        assert!(
            min > m.picker.track_s + m.release_dwell_s && min < 10.0,
            "{min}"
        );
        let park = park(&m);
        for (k, &y) in lanes.iter().enumerate() {
            for &y2 in &lanes {
                let a = obj(1.6, y);
                let s = m.slot(&a, 0.0, park).unwrap();
                for dx in 0..40 {
                    let b = Obj {
                        key: 2,
                        ..obj(1.6 - 0.02 * dx as f64, y2)
                    };
                    if let Some(t) = m.slot(&b, s.done_at_s, s.end_mm) {
                        assert!(
                            t.contact_at_s - s.contact_at_s >= min - 1e-6,
                            "lane {k}: {} < {min}",
                            t.contact_at_s - s.contact_at_s
                        );
                    }
                }
            }
        }
    }
}
