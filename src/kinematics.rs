//! Geometry shared by the simulator, the scheduler and the motion
//! controller: the belt frame (metres, architecture.md) and each CNC's
//! machine frame (millimetres, GRBL).

use nalgebra::Vector3;
use serde::{Deserialize, Serialize};

/// Where a CNC's machine zero sits in the belt frame. Machine axes are
/// parallel to the belt's (X along travel, Y across, Z up), and GRBL's
/// machine space lies on the negative side of zero (homing to the top far
/// corner), so positions in reach have machine coordinates ≤ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineFrame {
    pub origin_m: Vector3<f64>,
}

impl MachineFrame {
    pub fn new(origin_x_m: f64, origin_y_m: f64, origin_z_m: f64) -> Self {
        MachineFrame {
            origin_m: Vector3::new(origin_x_m, origin_y_m, origin_z_m),
        }
    }

    /// Belt-frame metres to machine millimetres.
    pub fn to_machine_mm(&self, belt_m: Vector3<f64>) -> Vector3<f64> {
        (belt_m - self.origin_m) * 1000.0
    }

    /// Machine millimetres to belt-frame metres.
    pub fn to_belt_m(&self, machine_mm: Vector3<f64>) -> Vector3<f64> {
        self.origin_m + machine_mm / 1000.0
    }
}

/// A gantry's per-axis limits, as GRBL's `$110`–`$112` (mm/min) and
/// `$120`–`$122` (mm/s²).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_rate_mm_per_min: [f64; 3],
    pub accel_mm_per_s2: [f64; 3],
}

/// Time of a move of length `d` from rest to rest: trapezoid, or triangle
/// when it is too short to reach `v`.
pub fn trapezoid_time_s(d: f64, v: f64, a: f64) -> f64 {
    if d <= 0.0 || v <= 0.0 || a <= 0.0 {
        return 0.0;
    }
    if d < v * v / a {
        2.0 * (d / a).sqrt()
    } else {
        d / v + v / a
    }
}

impl Limits {
    /// Cruise speed (mm/s) and acceleration (mm/s²) along a straight move,
    /// as GRBL's planner limits them: each axis's limit divided by that
    /// axis's share of the direction; `feed_mm_per_min` caps the speed.
    pub fn along(
        &self,
        from_mm: Vector3<f64>,
        to_mm: Vector3<f64>,
        feed_mm_per_min: f64,
    ) -> (f64, f64) {
        let d = (to_mm - from_mm).norm();
        let (mut v, mut a) = (feed_mm_per_min / 60.0, f64::INFINITY);
        if d <= 0.0 {
            return (v, 1.0);
        }
        for axis in 0..3 {
            let u = (to_mm[axis] - from_mm[axis]).abs() / d;
            if u > 1e-12 {
                v = v.min(self.max_rate_mm_per_min[axis] / 60.0 / u);
                a = a.min(self.accel_mm_per_s2[axis] / u);
            }
        }
        (v, a)
    }

    /// The fastest rate any axis allows, mm/min (a G0's nominal feed).
    pub fn rapid_mm_per_min(&self) -> f64 {
        self.max_rate_mm_per_min.iter().copied().fold(0.0, f64::max)
    }

    /// Time of a straight move from rest to rest (GRBL stops at the end of
    /// a block before a sync; our moves are planned that way, so real
    /// GRBL's junction blending only makes them earlier).
    pub fn move_time_s(
        &self,
        from_mm: Vector3<f64>,
        to_mm: Vector3<f64>,
        feed_mm_per_min: f64,
    ) -> f64 {
        let (v, a) = self.along(from_mm, to_mm, feed_mm_per_min);
        trapezoid_time_s((to_mm - from_mm).norm(), v, a)
    }
}

/// Where a machine may go: a box in machine millimetres (soft limits).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub min_mm: [f64; 3],
    pub max_mm: [f64; 3],
}

/// A target outside the workspace, named by axis.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("target {axis}={value_mm:.3} mm is outside the workspace [{min_mm:.3}, {max_mm:.3}] mm")]
pub struct OutsideWorkspace {
    pub axis: char,
    pub value_mm: f64,
    pub min_mm: f64,
    pub max_mm: f64,
}

impl Workspace {
    /// GRBL's travel (`$130`–`$132`) from machine zero: [-travel, 0] per axis,
    /// shrunk by `margin_mm`.
    pub fn from_travel(travel_mm: [f64; 3], margin_mm: f64) -> Self {
        Workspace {
            min_mm: travel_mm.map(|t| -t + margin_mm),
            max_mm: [-margin_mm; 3],
        }
    }

    /// Ok if every coordinate is finite and inside the box.
    pub fn check(&self, target_mm: Vector3<f64>) -> Result<(), OutsideWorkspace> {
        for (k, axis) in ['X', 'Y', 'Z'].into_iter().enumerate() {
            let v = target_mm[k];
            if !(v.is_finite() && v >= self.min_mm[k] - 1e-9 && v <= self.max_mm[k] + 1e-9) {
                return Err(OutsideWorkspace {
                    axis,
                    value_mm: v,
                    min_mm: self.min_mm[k],
                    max_mm: self.max_mm[k],
                });
            }
        }
        Ok(())
    }
}

/// A lower bound on [`Picker::travel_s`] from one point to targets at one
/// height: the legs up and down are what they are wherever the target
/// lies, and the leg across takes at least as long as either of its axes
/// alone at that axis's own limits (a straight move's speed and
/// acceleration along each axis are its share of the move's, which the
/// planner keeps within the axis's limits).
struct TravelBound {
    vertical_s: f64,
    across_from_mm: Vector3<f64>,
    limits: Limits,
}

impl TravelBound {
    fn least_s(&self, to_mm: Vector3<f64>) -> f64 {
        self.vertical_s + self.axis_s(0, to_mm[0]).max(self.axis_s(1, to_mm[1]))
    }

    /// The leg across along axis `k` alone, to `to_mm` on that axis.
    fn axis_s(&self, k: usize, to_mm: f64) -> f64 {
        trapezoid_time_s(
            (to_mm - self.across_from_mm[k]).abs(),
            self.limits.max_rate_mm_per_min[k] / 60.0,
            self.limits.accel_mm_per_s2[k],
        )
    }

    /// A lower bound on [`TravelBound::least_s`] to every target at
    /// machine `y_mm`: its legs up and down and its Y part (no less in
    /// floating point either, as adding a smaller number never rounds to
    /// more).
    fn least_at_y_s(&self, y_mm: f64) -> f64 {
        self.vertical_s + self.axis_s(1, y_mm)
    }
}

/// An object moving along the belt: where it is at `t0_s`, and its speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub x_m: f64,
    pub y_m: f64,
    pub t0_s: f64,
    pub vx_mps: f64,
}

impl Trajectory {
    pub fn x_at(&self, t_s: f64) -> f64 {
        self.x_m + self.vx_mps * (t_s - self.t0_s)
    }
}

/// A CNC as the intercept model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Picker {
    pub frame: MachineFrame,
    pub limits: Limits,
    pub workspace: Workspace,
    /// Belt x window where it may touch an object, m.
    pub reach_x_min_m: f64,
    pub reach_x_max_m: f64,
    /// Nozzle height above an object's top while approaching, m.
    pub approach_height_m: f64,
    /// Belt-frame z the nozzle travels at between picks (clear of every
    /// object), m.
    pub safe_z_m: f64,
    /// How long the descent onto a moving object takes, s.
    pub descend_s: f64,
    /// How long the nozzle rides with the object, vacuum on, s.
    pub track_s: f64,
    /// Time added to every plan for the link and status lag, s.
    pub lag_s: f64,
}

/// A planned contact: when and where the nozzle meets the object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intercept {
    /// When the descent starts, and when the nozzle meets the object.
    pub descend_at_s: f64,
    pub contact_at_s: f64,
    /// Where the nozzle waits for the descent (straight above the contact
    /// point), and where it meets the object; belt frame, m.
    pub approach_m: Vector3<f64>,
    pub contact_m: Vector3<f64>,
    /// Where the ride with the object ends (the nozzle lifts there).
    pub release_m: Vector3<f64>,
}

/// Why an object cannot be picked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoIntercept {
    #[error("the object does not move downstream (vx {0:.3} m/s)")]
    NotMoving(f64),
    #[error("the object is already past the reach window")]
    Passed,
    #[error("the gantry cannot get there before the object leaves the reach window")]
    TooLate,
    #[error(transparent)]
    Outside(#[from] OutsideWorkspace),
}

impl Picker {
    /// The first simulated cell's CNC 1 (params/sim.yaml), for tests.
    #[cfg(test)]
    pub(crate) fn example() -> Picker {
        Picker {
            frame: MachineFrame::new(2.6, 0.75, 0.15),
            limits: Limits {
                max_rate_mm_per_min: [30_000.0; 3],
                accel_mm_per_s2: [3_000.0; 3],
            },
            workspace: Workspace::from_travel([700.0, 800.0, 150.0], 0.5),
            reach_x_min_m: 2.0,
            reach_x_max_m: 2.6,
            approach_height_m: 0.03,
            safe_z_m: 0.1,
            descend_s: 0.25,
            track_s: 0.3,
            lag_s: 0.05,
        }
    }

    /// The belt x span where the nozzle may touch an object and ride with
    /// it, m: the reach window, cut to the workspace's X (soft limits and
    /// their margin). A window reaching past them would plan contacts the
    /// machine must refuse; the scheduler's windows and the intercept both
    /// come from here.
    pub fn reach_x_m(&self) -> (f64, f64) {
        // A hair inside, so that a ride ending on the edge passes the check.
        let x = |mm: f64, inward: f64| self.frame.origin_m.x + mm / 1000.0 + inward;
        (
            self.reach_x_min_m.max(x(self.workspace.min_mm[0], 1e-9)),
            self.reach_x_max_m.min(x(self.workspace.max_mm[0], -1e-9)),
        )
    }

    /// How far the nozzle leads an object it rides with on a belt at
    /// `v_mps`, machine mm along X: v²/(4a) at X's acceleration, so that
    /// while the ride accelerates from rest the nozzle stays within that of
    /// the object's centre (`motion::plan` moves by it).
    pub fn lead_mm(&self, v_mps: f64) -> f64 {
        let v = v_mps * 1000.0;
        v * v / (4.0 * self.limits.accel_mm_per_s2[0])
    }

    /// The belt x span where an object moving at `v_mps` may be met: from
    /// the reach window's start to where the nozzle, leading the object by
    /// [`Picker::lead_mm`], can still ride with it for `track_s` inside the
    /// window. The intercept and the scheduler's windows both come from
    /// here.
    pub fn contact_x_m(&self, v_mps: f64) -> (f64, f64) {
        let (lo, hi) = self.reach_x_m();
        (lo, hi - self.lead_mm(v_mps) / 1000.0 - v_mps * self.track_s)
    }

    /// The legs of a travel from `from_mm` to `to_mm` (machine): up to the
    /// safe height if below it, across at that height, down to the target.
    /// Legs of zero length are left out.
    pub fn travel_legs(&self, from_mm: Vector3<f64>, to_mm: Vector3<f64>) -> Vec<Vector3<f64>> {
        let (legs, n) = self.legs(from_mm, to_mm);
        legs[..n].to_vec()
    }

    /// [`Picker::travel_legs`] without an allocation: the legs and how
    /// many there are (the intercept search asks this thousands of times
    /// per decision).
    fn legs(&self, from_mm: Vector3<f64>, to_mm: Vector3<f64>) -> ([Vector3<f64>; 3], usize) {
        let up = self.safe_rest_mm(from_mm);
        let mut legs = [Vector3::zeros(); 3];
        let mut n = 0;
        let mut at = from_mm;
        for p in [up, Vector3::new(to_mm.x, to_mm.y, up.z), to_mm] {
            if (p - at).norm() > 1e-9 {
                legs[n] = p;
                n += 1;
                at = p;
            }
        }
        (legs, n)
    }

    /// Where a gantry at `from_mm` (machine) may rest, and where every
    /// travel from it goes first: at the safe height, or higher if already
    /// higher, and inside the workspace (a gantry homed to machine zero
    /// stands just outside it, and steps inside).
    pub fn safe_rest_mm(&self, from_mm: Vector3<f64>) -> Vector3<f64> {
        let safe_z = self
            .frame
            .to_machine_mm(Vector3::new(0.0, 0.0, self.safe_z_m))
            .z;
        let w = &self.workspace;
        Vector3::new(
            from_mm.x.clamp(w.min_mm[0], w.max_mm[0]),
            from_mm.y.clamp(w.min_mm[1], w.max_mm[1]),
            safe_z.max(from_mm.z).min(w.max_mm[2]),
        )
    }

    /// Time of [`Picker::travel_legs`] at rapid rate, each leg rest to rest.
    pub fn travel_s(&self, from_mm: Vector3<f64>, to_mm: Vector3<f64>) -> f64 {
        let rapid = self.limits.rapid_mm_per_min();
        let (legs, n) = self.legs(from_mm, to_mm);
        let mut at = from_mm;
        let mut t = 0.0;
        for &p in &legs[..n] {
            t += self.limits.move_time_s(at, p, rapid);
            at = p;
        }
        t
    }

    /// What a travel from `from_mm` to any point at the belt-frame height
    /// `to_z_m` takes at least: see [`TravelBound`].
    fn travel_bound(&self, from_mm: Vector3<f64>, to_z_m: f64) -> TravelBound {
        let rapid = self.limits.rapid_mm_per_min();
        let up = self.safe_rest_mm(from_mm);
        let to_z_mm = self.frame.to_machine_mm(Vector3::new(0.0, 0.0, to_z_m)).z;
        let down = Vector3::new(up.x, up.y, to_z_mm);
        TravelBound {
            vertical_s: self.limits.move_time_s(from_mm, up, rapid)
                + self.limits.move_time_s(up, down, rapid),
            across_from_mm: up,
            limits: self.limits,
        }
    }

    /// The earliest intercept for an object of height `height_m` on
    /// `traj`, for a gantry at `from_mm` (machine) at time `now_s`. The
    /// nozzle descends straight onto the point where the object will be
    /// (so the descent does not lengthen with the belt's speed), meets its
    /// top as it arrives, then rides with it; every point is checked
    /// against the workspace. Pure and deterministic: the scheduler asks the same
    /// question as the motion controller.
    pub fn intercept(
        &self,
        traj: &Trajectory,
        height_m: f64,
        from_mm: Vector3<f64>,
        now_s: f64,
    ) -> Result<Intercept, NoIntercept> {
        let v = traj.vx_mps;
        if v <= 1e-6 {
            return Err(NoIntercept::NotMoving(v));
        }
        // Contact must leave room to ride with the object inside the window,
        // the nozzle leading it.
        let (first_contact_x, last_contact_x) = self.contact_x_m(v);
        let lead_mm = Vector3::new(self.lead_mm(v), 0.0, 0.0);
        let latest = traj.t0_s + (last_contact_x - traj.x_m) / v;
        if latest < now_s {
            return Err(NoIntercept::Passed);
        }
        let earliest = (traj.t0_s + (first_contact_x - traj.x_m) / v).max(now_s);
        let top_z = height_m;
        let plan = |contact_at_s: f64| {
            let descend_at_s = contact_at_s - self.descend_s;
            // Straight down onto where the object will be: the descent's
            // length does not grow with the belt's speed.
            let approach_m = Vector3::new(
                traj.x_at(contact_at_s),
                traj.y_m,
                top_z + self.approach_height_m,
            );
            let contact_m = Vector3::new(traj.x_at(contact_at_s), traj.y_m, top_z);
            let release_m = Vector3::new(traj.x_at(contact_at_s + self.track_s), traj.y_m, top_z);
            Intercept {
                descend_at_s,
                contact_at_s,
                approach_m,
                contact_m,
                release_m,
            }
        };
        // Scan in 10 ms steps: the first contact time the gantry can make.
        // A step the travel's lower bound already rules out is passed
        // over without working out the travel (the same steps, the same
        // answer; the scheduler asks this thousands of times a decision).
        let bound = self.travel_bound(from_mm, top_z + self.approach_height_m);
        // The object keeps its lane, so every step's target has the same
        // machine Y, and the bound's Y part alone is one sum: the steps it
        // rules out (the first ones, while the gantry could not yet be
        // down over any point of the lane) cost a comparison each. It is
        // the bound's own test below with a smaller left side, so a step
        // it passes over the bound would too.
        let lane_y_mm = self.frame.to_machine_mm(Vector3::new(0.0, traj.y_m, 0.0)).y + lead_mm.y;
        let least_at_lane_s = bound.least_at_y_s(lane_y_mm);
        let step_s = 0.01;
        let mut t = earliest;
        while t <= latest + 1e-9 {
            if now_s + self.lag_s + least_at_lane_s > (t - self.descend_s) + 1e-6 {
                t += step_s;
                continue;
            }
            let p = plan(t);
            // Where the gantry goes: over the object, leading it (as
            // `motion::plan`'s approach moves).
            let approach_mm = self.frame.to_machine_mm(p.approach_m) + lead_mm;
            if now_s + self.lag_s + bound.least_s(approach_mm) > p.descend_at_s + 1e-6 {
                t += step_s;
                continue;
            }
            let travel_s = self.travel_s(from_mm, approach_mm);
            if now_s + self.lag_s + travel_s <= p.descend_at_s {
                for point in [p.approach_m, p.contact_m, p.release_m] {
                    self.workspace
                        .check(self.frame.to_machine_mm(point) + lead_mm)?;
                }
                return Ok(p);
            }
            t += step_s;
        }
        Err(NoIntercept::TooLate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn belt_and_machine_coordinates_round_trip() {
        let f = MachineFrame::new(2.6, 0.75, 0.15);
        let p = Vector3::new(2.25, 0.3, 0.04);
        let mm = f.to_machine_mm(p);
        assert!((mm - Vector3::new(-350.0, -450.0, -110.0)).norm() < 1e-9);
        assert!((f.to_belt_m(mm) - p).norm() < 1e-12);
    }

    fn picker() -> Picker {
        Picker::example()
    }

    #[test]
    fn limits_along_a_move_are_grbls_per_axis_limits_scaled_by_direction() {
        let l = Limits {
            max_rate_mm_per_min: [6000.0, 3000.0, 600.0],
            accel_mm_per_s2: [1000.0, 500.0, 100.0],
        };
        let o = Vector3::zeros();
        // Along X alone: X's limits.
        assert_eq!(
            l.along(o, Vector3::new(10.0, 0.0, 0.0), 1e9),
            (100.0, 1000.0)
        );
        // Diagonal in XY: Y binds, divided by its share 1/sqrt 2.
        let (v, a) = l.along(o, Vector3::new(10.0, 10.0, 0.0), 1e9);
        assert!((v - 50.0 * 2f64.sqrt()).abs() < 1e-9 && (a - 500.0 * 2f64.sqrt()).abs() < 1e-9);
        // The feed caps the speed; a short move never reaches it.
        assert_eq!(l.along(o, Vector3::new(10.0, 0.0, 0.0), 600.0).0, 10.0);
        assert!((trapezoid_time_s(1.0, 100.0, 1000.0) - 2.0 * (1e-3f64).sqrt()).abs() < 1e-12);
        assert!((trapezoid_time_s(100.0, 100.0, 1000.0) - 1.1).abs() < 1e-12);
    }

    #[test]
    fn travel_goes_up_to_the_safe_height_across_and_down() {
        let p = picker();
        // Safe z 0.1 m in the belt frame is -50 mm on this machine.
        let low = Vector3::new(-100.0, -100.0, -110.0);
        let to = Vector3::new(-300.0, -200.0, -80.0);
        let same = |a: Vec<Vector3<f64>>, b: Vec<Vector3<f64>>| {
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).norm() < 1e-9)
        };
        let up = Vector3::new(-100.0, -100.0, -50.0);
        let across = Vector3::new(-300.0, -200.0, -50.0);
        assert!(same(p.travel_legs(low, to), vec![up, across, to]));
        // Already above it: straight across at its own height, then down.
        let high = Vector3::new(-100.0, -100.0, -20.0);
        assert!(same(
            p.travel_legs(high, to),
            vec![Vector3::new(-300.0, -200.0, -20.0), to]
        ));
        let t: f64 = [low, up, across, to]
            .windows(2)
            .map(|w| p.limits.move_time_s(w[0], w[1], 30_000.0))
            .sum();
        assert!((p.travel_s(low, to) - t).abs() < 1e-9);
    }

    #[test]
    fn the_workspace_refuses_any_coordinate_outside_naming_it() {
        let w = Workspace::from_travel([200.0, 200.0, 100.0], 1.0);
        assert!(w.check(Vector3::new(-100.0, -1.0, -99.0)).is_ok());
        let e = w.check(Vector3::new(-100.0, 0.5, -50.0)).unwrap_err();
        assert_eq!((e.axis, e.value_mm), ('Y', 0.5));
        assert!(e.to_string().contains("Y=0.500 mm is outside"));
        assert_eq!(
            w.check(Vector3::new(f64::NAN, -1.0, -1.0))
                .unwrap_err()
                .axis,
            'X'
        );
        assert_eq!(
            w.check(Vector3::new(-1.0, -1.0, -100.0)).unwrap_err().axis,
            'Z'
        );
    }

    #[test]
    fn the_intercept_is_the_first_contact_the_gantry_can_make_and_rides_with_the_object() {
        let p = picker();
        let home = Vector3::new(-300.0, -300.0, -10.0);
        // 0.2 m/s, at x 1.5 m now: the window opens at 2.0 m (2.5 s away).
        let traj = Trajectory {
            x_m: 1.5,
            y_m: 0.3,
            t0_s: 10.0,
            vx_mps: 0.2,
        };
        let i = p.intercept(&traj, 0.04, home, 10.0).unwrap();
        // Already there in time: contact as soon as the window allows.
        assert!((i.contact_m.x - 2.0).abs() < 0.002, "{i:?}");
        assert_eq!(i.approach_m.x, i.contact_m.x);
        assert!((i.contact_at_s - i.descend_at_s - 0.25).abs() < 1e-9);
        assert!((i.contact_m.x - traj.x_at(i.contact_at_s)).abs() < 1e-12);
        assert!((i.release_m.x - i.contact_m.x - 0.2 * 0.3).abs() < 1e-9);
        assert_eq!((i.contact_m.z, i.approach_m.z), (0.04, 0.07));
        // Inside the window now, far from the gantry: later, but feasible,
        // and the gantry's travel fits before the descent.
        let traj = Trajectory {
            x_m: 2.05,
            y_m: 0.05,
            t0_s: 10.0,
            vx_mps: 0.2,
        };
        let far = Vector3::new(-50.0, -700.0, -10.0);
        let i = p.intercept(&traj, 0.04, far, 10.0).unwrap();
        let travel = p.travel_s(far, p.frame.to_machine_mm(i.approach_m));
        assert!(10.0 + 0.05 + travel <= i.descend_at_s + 1e-9);
        // One scan step earlier the gantry could not have made it.
        let before = i.contact_at_s - 0.01;
        let approach = Vector3::new(traj.x_at(before), traj.y_m, 0.07);
        let travel = p.travel_s(far, p.frame.to_machine_mm(approach));
        assert!(10.0 + 0.05 + travel > before - 0.25, "not the earliest");
        // Too late, passed, stopped.
        let late = Trajectory {
            x_m: 2.52,
            y_m: 0.05,
            t0_s: 10.0,
            vx_mps: 0.2,
        };
        assert_eq!(
            p.intercept(&late, 0.04, far, 10.0),
            Err(NoIntercept::TooLate)
        );
        let gone = Trajectory { x_m: 2.7, ..late };
        assert_eq!(
            p.intercept(&gone, 0.04, far, 10.0),
            Err(NoIntercept::Passed)
        );
        let stopped = Trajectory {
            vx_mps: 0.0,
            ..late
        };
        assert_eq!(
            p.intercept(&stopped, 0.04, far, 10.0),
            Err(NoIntercept::NotMoving(0.0))
        );
        // Out of the workspace across the belt (y beyond the Y travel).
        let wide = Trajectory {
            x_m: 1.5,
            y_m: -0.2,
            t0_s: 10.0,
            vx_mps: 0.2,
        };
        assert!(
            matches!(p.intercept(&wide, 0.04, home, 10.0), Err(NoIntercept::Outside(e)) if e.axis == 'Y')
        );
    }

    #[test]
    fn the_reach_window_ends_at_the_soft_limit_and_the_last_contact_leaves_room_for_the_lead() {
        let p = picker();
        // Machine X 0 is belt x 2.6 m, and the soft limit 0.5 mm inside it.
        let (lo, hi) = p.reach_x_m();
        assert_eq!(lo, 2.0);
        assert!((hi - 2.5995).abs() < 1e-6, "{hi}");
        // At 0.2 m/s and 3000 mm/s² the nozzle leads by 200²/12000 mm, and
        // the last contact leaves it that and the ride (0.3 s) to the end.
        assert!((p.lead_mm(0.2) - 200.0 * 200.0 / 12_000.0).abs() < 1e-12);
        let (first, last) = p.contact_x_m(0.2);
        assert_eq!(first, lo);
        assert!((last - (hi - 0.2 * 0.3 - p.lead_mm(0.2) / 1000.0)).abs() < 1e-12);
        // That every contact near the end is planned inside the workspace
        // is `motion::plan`'s test (the planner checks every target).
    }

    /// A picker with its own per-axis limits (X, Y, Z rates in mm/min and
    /// accelerations in mm/s²), so the bound meets axes of every kind.
    fn picker_with(rates: [f64; 3], accels: [f64; 3]) -> Picker {
        Picker {
            limits: Limits {
                max_rate_mm_per_min: rates,
                accel_mm_per_s2: accels,
            },
            ..picker()
        }
    }

    /// The scan as it was before the travel's bound let it pass steps
    /// over: every 10 ms step tried with the whole travel (to the approach
    /// point the nozzle goes to, leading the object).
    fn scan_every_step(
        p: &Picker,
        traj: &Trajectory,
        height_m: f64,
        from_mm: Vector3<f64>,
        now_s: f64,
    ) -> Result<Intercept, NoIntercept> {
        let v = traj.vx_mps;
        let (first_x, last_x) = p.contact_x_m(v);
        let lead_mm = Vector3::new(p.lead_mm(v), 0.0, 0.0);
        let latest = traj.t0_s + (last_x - traj.x_m) / v;
        if latest < now_s {
            return Err(NoIntercept::Passed);
        }
        let mut t = (traj.t0_s + (first_x - traj.x_m) / v).max(now_s);
        while t <= latest + 1e-9 {
            let at = |dt: f64| Vector3::new(traj.x_at(t + dt), traj.y_m, height_m);
            let approach_m = at(0.0) + Vector3::new(0.0, 0.0, p.approach_height_m);
            let travel_s = p.travel_s(from_mm, p.frame.to_machine_mm(approach_m) + lead_mm);
            if now_s + p.lag_s + travel_s <= t - p.descend_s {
                for point in [approach_m, at(0.0), at(p.track_s)] {
                    p.workspace.check(p.frame.to_machine_mm(point) + lead_mm)?;
                }
                return Ok(Intercept {
                    descend_at_s: t - p.descend_s,
                    contact_at_s: t,
                    approach_m,
                    contact_m: at(0.0),
                    release_m: at(p.track_s),
                });
            }
            t += 0.01;
        }
        Err(NoIntercept::TooLate)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// The bound the intercept's scan leans on never exceeds the
        /// travel, from anywhere (below or above the safe height, even
        /// outside the workspace) to anywhere at the target's height.
        #[test]
        fn the_travel_bound_is_never_more_than_the_travel(
            rates in proptest::array::uniform3(600.0f64..40_000.0),
            accels in proptest::array::uniform3(50.0f64..5_000.0),
            from in proptest::array::uniform3(-900.0f64..20.0),
            to_xy in proptest::array::uniform2(-900.0f64..20.0),
            to_z_m in -0.05f64..0.3,
        ) {
            let p = picker_with(rates, accels);
            let from = Vector3::from(from);
            let to_z_mm = p.frame.to_machine_mm(Vector3::new(0.0, 0.0, to_z_m)).z;
            let to = Vector3::new(to_xy[0], to_xy[1], to_z_mm);
            let bound = p.travel_bound(from, to_z_m).least_s(to);
            let travel = p.travel_s(from, to);
            proptest::prop_assert!(bound <= travel + 1e-9, "bound {bound} > travel {travel}");
        }

        /// Passing steps over changes nothing: the intercept is the one the
        /// scan of every step finds, contact for contact and error for
        /// error.
        #[test]
        fn the_intercept_is_the_one_every_step_of_the_scan_finds(
            rates in proptest::array::uniform3(3_000.0f64..40_000.0),
            accels in proptest::array::uniform3(200.0f64..5_000.0),
            x_m in 0.5f64..2.7,
            y_m in 0.0f64..0.75,
            vx_mps in 0.02f64..0.6,
            height_m in 0.0f64..0.08,
            from in proptest::array::uniform3(-700.0f64..0.0),
            now_s in 0.0f64..5.0,
        ) {
            let p = picker_with(rates, accels);
            let traj = Trajectory { x_m, y_m, t0_s: 1.0, vx_mps };
            let from = Vector3::from(from);
            proptest::prop_assert_eq!(
                p.intercept(&traj, height_m, from, now_s),
                scan_every_step(&p, &traj, height_m, from, now_s)
            );
        }
    }
}
