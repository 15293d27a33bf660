//! A pick as G-code: the pure planner. From an intercept (kinematics), the
//! class's bin and the machine's limits it writes the lines of each phase,
//! every target checked against the workspace first, so a line that would
//! leave it is never produced, whatever the goal asked.
//!
//! The pick of a moving object:
//! 1. approach: up to the safe height, across, down to just above the
//!    object's predicted position at the start of the descent;
//! 2. contact (sent at the descent time): vacuum on (M8, in the air), a
//!    straight descent that reaches the object's top as the object arrives
//!    under it, then a ride along with it at belt speed (vacuum on, so it is
//!    gripped while both move), then the lift;
//! 3. carry (only if the vacuum sensor says it holds something): to the bin
//!    at the safe height, vacuum off (M9), a short dwell.
//!
//! Moves are planned rest to rest (each ends before the next starts, as
//! GRBL does before a sync), so a move's time is its trapezoid. The descent's
//! feed is solved so it takes exactly `descend_s`; the contact point leads
//! the object by v²/(4a), so while the ride accelerates from rest the
//! nozzle stays within ±v²/(4a) of the object's centre.

use crate::kinematics::{Intercept, OutsideWorkspace, Picker};
use nalgebra::Vector3;

/// Phases of a pick, as the action's feedback names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Approach,
    Contact,
    Carry,
}

/// One G-code line and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    /// Where it moves the nozzle (machine mm), if it moves it.
    pub target_mm: Option<Vector3<f64>>,
    /// Its expected duration, s (rest to rest).
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Outside(#[from] OutsideWorkspace),
    #[error(
        "a descent of {length_mm:.1} mm cannot take {descend_s} s at {accel_mm_s2:.0} mm/s²; \
         lower approach_height_m or lengthen descend_s"
    )]
    DescentTooShort {
        length_mm: f64,
        descend_s: f64,
        accel_mm_s2: f64,
    },
    #[error("a move needs {needed_mm_min:.0} mm/min, over the machine's {max_mm_min:.0}")]
    TooFast { needed_mm_min: f64, max_mm_min: f64 },
}

/// The cruise speed v (mm/s) that makes a rest-to-rest move of `d` mm take
/// `t` s at acceleration `a`: d/v + v/a = t.
pub fn speed_for_time(d: f64, t: f64, a: f64) -> Option<f64> {
    let disc = a * a * t * t - 4.0 * a * d;
    if d <= 0.0 || t <= 0.0 || disc < 0.0 {
        return None;
    }
    Some((a * t - disc.sqrt()) / 2.0)
}

fn fmt(p: Vector3<f64>) -> String {
    format!("X{:.3} Y{:.3} Z{:.3}", p.x, p.y, p.z)
}

/// Builds the lines of one pick, checking every target.
pub struct Planner<'a> {
    pub picker: &'a Picker,
}

impl Planner<'_> {
    fn mm(&self, belt_m: Vector3<f64>) -> Result<Vector3<f64>, PlanError> {
        let p = self.picker.frame.to_machine_mm(belt_m);
        self.picker.workspace.check(p)?;
        Ok(p)
    }

    fn rapid(&self, from: Vector3<f64>, to: Vector3<f64>) -> Result<Line, PlanError> {
        self.picker.workspace.check(to)?;
        let l = &self.picker.limits;
        Ok(Line {
            text: format!("G0 {}", fmt(to)),
            target_mm: Some(to),
            duration_s: l.move_time_s(from, to, l.rapid_mm_per_min()),
        })
    }

    fn feed(&self, from: Vector3<f64>, to: Vector3<f64>, v_mm_s: f64) -> Result<Line, PlanError> {
        self.picker.workspace.check(to)?;
        let l = &self.picker.limits;
        let (v_max, _) = l.along(from, to, f64::INFINITY);
        if v_mm_s > v_max * (1.0 + 1e-9) {
            return Err(PlanError::TooFast {
                needed_mm_min: v_mm_s * 60.0,
                max_mm_min: v_max * 60.0,
            });
        }
        let f = v_mm_s * 60.0;
        Ok(Line {
            text: format!("G1 {} F{f:.1}", fmt(to)),
            target_mm: Some(to),
            duration_s: l.move_time_s(from, to, f),
        })
    }

    fn word(text: &str, duration_s: f64) -> Line {
        Line {
            text: text.into(),
            target_mm: None,
            duration_s,
        }
    }

    /// Phase 1: from `from_mm` to the approach point (with the same lead
    /// as the contact, for a belt at `belt_mps`).
    pub fn approach(
        &self,
        from_mm: Vector3<f64>,
        i: &Intercept,
        belt_mps: f64,
    ) -> Result<Vec<Line>, PlanError> {
        let lead = Vector3::new(self.picker.lead_mm(belt_mps), 0.0, 0.0);
        let to = self.mm(i.approach_m)? + lead;
        let mut at = from_mm;
        let mut out = Vec::new();
        for leg in self.picker.travel_legs(from_mm, to) {
            out.push(self.rapid(at, leg)?);
            at = leg;
        }
        Ok(out)
    }

    /// Phase 2: vacuum on, the descent onto the object, the ride with it
    /// at `belt_mps`, the lift to the safe height.
    pub fn contact(&self, i: &Intercept, belt_mps: f64) -> Result<Vec<Line>, PlanError> {
        let v = belt_mps * 1000.0;
        let lead = Vector3::new(self.picker.lead_mm(belt_mps), 0.0, 0.0);
        let start = self.mm(i.approach_m)? + lead;
        self.picker.workspace.check(start)?;
        let contact = self.mm(i.contact_m)? + lead;
        let release = self.mm(i.release_m)? + lead;
        self.picker.workspace.check(contact)?;
        self.picker.workspace.check(release)?;
        let d = (contact - start).norm();
        let (_, a) = self.picker.limits.along(start, contact, f64::INFINITY);
        let descend_s = self.picker.descend_s;
        let v_descent = speed_for_time(d, descend_s, a).ok_or(PlanError::DescentTooShort {
            length_mm: d,
            descend_s,
            accel_mm_s2: a,
        })?;
        let safe = self.mm(Vector3::new(
            i.release_m.x,
            i.release_m.y,
            self.picker.safe_z_m,
        ))?;
        let safe = Vector3::new(release.x, release.y, safe.z);
        Ok(vec![
            Self::word("M8", 0.0),
            self.feed(start, contact, v_descent)?,
            self.feed(contact, release, v)?,
            self.rapid(release, safe)?,
            Self::word("G4 P0", 0.0),
        ])
    }

    /// Phase 3: to the bin at the safe height, vacuum off, a dwell.
    pub fn carry(
        &self,
        from_mm: Vector3<f64>,
        bin_m: (f64, f64),
        dwell_s: f64,
    ) -> Result<Vec<Line>, PlanError> {
        let bin = self.mm(Vector3::new(bin_m.0, bin_m.1, self.picker.safe_z_m))?;
        let bin = Vector3::new(bin.x, bin.y, bin.z.max(from_mm.z));
        Ok(vec![
            self.rapid(from_mm, bin)?,
            Self::word("M9", 0.0),
            {
                let (g4, dwelt_s) = super::grbl::dwell(dwell_s);
                Self::word(&g4, dwelt_s)
            },
            Self::word("G4 P0", 0.0),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinematics::{NoIntercept, Trajectory};

    /// The example picker, an object at 1.8 m on y 0.3 m moving 0.2 m/s,
    /// the gantry parked, and the intercept.
    fn setup() -> (Picker, Vector3<f64>, Intercept) {
        let p = Picker::example();
        let traj = Trajectory {
            x_m: 1.8,
            y_m: 0.3,
            t0_s: 0.0,
            vx_mps: 0.2,
        };
        let home = Vector3::new(-300.0, -300.0, -10.0);
        let i = p.intercept(&traj, 0.04, home, 0.0).unwrap();
        (p, home, i)
    }

    #[test]
    fn the_descent_takes_exactly_its_time_and_the_ride_follows_the_belt() {
        assert!(speed_for_time(10.0, 0.01, 1000.0).is_none());
        let v = speed_for_time(30.0, 0.25, 3000.0).unwrap();
        assert!((30.0 / v + v / 3000.0 - 0.25).abs() < 1e-12);
        let (p, home, i) = setup();
        let plan = Planner { picker: &p };
        let approach = plan.approach(home, &i, 0.2).unwrap();
        let lead = Vector3::new(200.0 * 200.0 / 12_000.0, 0.0, 0.0);
        assert_eq!(
            approach.last().unwrap().target_mm,
            Some(p.frame.to_machine_mm(i.approach_m) + lead)
        );
        let c = plan.contact(&i, 0.2).unwrap();
        let texts: Vec<&str> = c.iter().map(|l| l.text.as_str()).collect();
        assert_eq!((texts[0], texts[4]), ("M8", "G4 P0"));
        assert!((c[1].duration_s - 0.25).abs() < 1e-9, "{:?}", c[1]);
        assert!(
            texts[1].starts_with("G1 ")
                && c[1].target_mm.unwrap().x == approach.last().unwrap().target_mm.unwrap().x
        );
        assert!(texts[2].ends_with("F12000.0"), "{}", texts[2]);
        // The contact leads the object by v²/(4a) = 200²/12000 mm.
        let contact = c[1].target_mm.unwrap();
        let obj = p.frame.to_machine_mm(i.contact_m);
        assert!((contact.x - obj.x - 200.0 * 200.0 / 12_000.0).abs() < 1e-9);
        assert_eq!(contact.z, obj.z);
        let bin = plan
            .carry(c[3].target_mm.unwrap(), (2.3, 0.68), 0.1)
            .unwrap();
        assert_eq!(bin[1].text, "M9");
    }

    /// The intercept leaves room for the lead: an object met near the end
    /// of the window is planned inside the workspace, ride and lift
    /// included, or found too late; the planner never refuses what the
    /// intercept (and so the scheduler) gave.
    #[test]
    fn every_contact_the_intercept_finds_near_the_windows_end_is_planned_inside_the_workspace() {
        let p = Picker::example();
        let plan = Planner { picker: &p };
        let above = p.frame.to_machine_mm(Vector3::new(2.54, 0.3, p.safe_z_m));
        let (mut planned, mut late) = (0, 0);
        for k in 0..300 {
            let traj = Trajectory {
                x_m: 2.3 + k as f64 * 7e-4,
                y_m: 0.3,
                t0_s: 10.0,
                vx_mps: 0.2,
            };
            match p.intercept(&traj, 0.04, above, 10.0) {
                Ok(i) => {
                    let lines = plan
                        .approach(above, &i, 0.2)
                        .and_then(|a| Ok((a, plan.contact(&i, 0.2)?)));
                    assert!(lines.is_ok(), "{k}: {i:?}: {lines:?}");
                    planned += 1;
                }
                Err(NoIntercept::TooLate | NoIntercept::Passed) => late += 1,
                Err(e) => panic!("{k}: {e}"),
            }
        }
        assert!(
            planned > 0 && late > 0,
            "planned {planned}, too late {late}"
        );
    }

    /// The approach the planner moves (over the object, leading it) is the
    /// one the intercept timed: from any start, its moves end by the
    /// descent the intercept chose, so the scheduler's and the motion
    /// controller's times agree. The lead is a few mm along X: it
    /// lengthens the way from the starts upstream of the contact, most of
    /// these.
    #[test]
    fn the_approach_moved_ends_by_the_descent_the_intercept_chose() {
        let p = Picker::example();
        let plan = Planner { picker: &p };
        let traj = Trajectory {
            x_m: 2.2,
            y_m: 0.3,
            t0_s: 0.0,
            vx_mps: 0.2,
        };
        let mut tight = 0;
        for k in 0..400 {
            let from = p.frame.to_machine_mm(Vector3::new(
                1.96 + k as f64 * 1.0e-3,
                0.05 + (k % 7) as f64 * 0.08,
                p.safe_z_m,
            ));
            let Ok(i) = p.intercept(&traj, 0.04, from, 0.0) else {
                continue;
            };
            let moved_s: f64 = plan
                .approach(from, &i, 0.2)
                .unwrap()
                .iter()
                .map(|l| l.duration_s)
                .sum();
            let slack_s = i.descend_at_s - p.lag_s - moved_s;
            assert!(slack_s > -1e-9, "{k}: from {from:?}: {slack_s} s late");
            if slack_s < 0.005 {
                tight += 1;
            }
        }
        // Contacts chosen with a few ms to spare, where the lead counts.
        assert!(tight > 0, "no contact was tight");
    }

    /// A goal whose object lies outside the workspace never produces a
    /// line that would go there.
    #[test]
    fn a_target_outside_the_workspace_is_never_produced() {
        let (p, home, mut i) = setup();
        let plan = Planner { picker: &p };
        // Hostile: the same plan moved across the belt beyond Y travel, or
        // below the table.
        i.contact_m.y = -0.3;
        assert!(matches!(plan.contact(&i, 0.2), Err(PlanError::Outside(e)) if e.axis == 'Y'));
        let (_, _, mut j) = setup();
        j.approach_m.z = -0.5;
        assert!(
            matches!(plan.approach(home, &j, 0.2), Err(PlanError::Outside(e)) if e.axis == 'Z')
        );
        assert!(
            matches!(plan.carry(home, (9.0, 0.3), 0.1), Err(PlanError::Outside(e)) if e.axis == 'X')
        );
    }
}
