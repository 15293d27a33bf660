//! Cells and arrival lists for the scheduler's tests and benchmark: CNCs
//! a reach window apart along the belt (each CNC 1 of the simulated cell,
//! moved), Poisson arrivals on 4 lanes with a share of injected failures.

use super::oracle::Start;
use super::reach::{CncModel, Obj};
use crate::kinematics::Trajectory;
use crate::motion::params::MotionParams;
use nalgebra::Vector3;
use rand::{Rng, SeedableRng};

/// The simulated cell's classes, with their heights (m).
pub const CLASSES: [(&str, f64); 3] = [("red_box", 0.04), ("green_disc", 0.02), ("blue_bar", 0.03)];

/// Where objects are first seen (the camera), belt x, m.
pub const SEEN_AT_X_M: f64 = 0.5;

/// The belt's lanes' centres across it (4 lanes on 0.6 m), m.
pub const LANES_Y_M: [f64; 4] = [0.075, 0.225, 0.375, 0.525];

/// CNCs one after another along the belt, each window 0.6 m, the first
/// from x 1.4 m; CNC i has bins for the classes `bins[i]` lists (indices
/// into [`CLASSES`]), beside the belt at its window's middle.
pub fn cell(bins: &[&[usize]]) -> Vec<CncModel> {
    let base = MotionParams::default();
    bins.iter()
        .enumerate()
        .map(|(i, classes)| {
            let dx = 0.6 * i as f64 - 0.6;
            let p = MotionParams {
                cnc_id: (i + 1).to_string(),
                origin_x_m: base.origin_x_m + dx,
                reach_x_min_m: base.reach_x_min_m + dx,
                reach_x_max_m: base.reach_x_max_m + dx,
                bin_classes: classes.iter().map(|&c| CLASSES[c].0.to_string()).collect(),
                bin_x_m: classes
                    .iter()
                    .map(|&c| base.reach_x_min_m + dx + 0.2 + 0.1 * c as f64)
                    .collect(),
                bin_y_m: classes.iter().map(|_| 0.68).collect(),
                ..base.clone()
            };
            CncModel::from_params(&p)
        })
        .collect()
}

/// Every CNC free at time 0, parked mid-window at the safe height.
pub fn parked(models: &[CncModel]) -> Vec<Start> {
    models
        .iter()
        .map(|m| {
            let p = &m.picker;
            Start {
                free_at_s: 0.0,
                at_mm: p.frame.to_machine_mm(Vector3::new(
                    (p.reach_x_min_m + p.reach_x_max_m) / 2.0,
                    0.3,
                    p.safe_z_m,
                )),
            }
        })
        .collect()
}

/// Poisson arrivals at `per_min` for `seconds` on a belt at `belt_mps`,
/// each seen at [`SEEN_AT_X_M`] on a random lane with a random class and
/// confidence; each unpickable with probability `fail` (the second list).
pub fn poisson(
    seed: u64,
    per_min: f64,
    seconds: f64,
    belt_mps: f64,
    fail: f64,
) -> (Vec<Obj>, Vec<bool>) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let (mut t, mut out, mut ok) = (0.0, Vec::new(), Vec::new());
    loop {
        let u: f64 = rng.random_range(1e-12..1.0);
        t += -u.ln() * 60.0 / per_min;
        if t > seconds {
            break;
        }
        let class = rng.random_range(0..CLASSES.len());
        out.push(Obj {
            key: out.len() as u64 + 1,
            class: CLASSES[class].0.into(),
            traj: Trajectory {
                x_m: SEEN_AT_X_M,
                y_m: LANES_Y_M[rng.random_range(0..LANES_Y_M.len())],
                t0_s: t,
                vx_mps: belt_mps,
            },
            height_m: CLASSES[class].1,
            confidence: rng.random_range(0.5..1.0),
        });
        ok.push(!rng.random_bool(fail));
    }
    (out, ok)
}

/// The span of lanes and the heights the oracle's minimum cycles are
/// taken over.
pub fn bound_span() -> ((f64, f64), Vec<f64>) {
    (
        (LANES_Y_M[0], LANES_Y_M[LANES_Y_M.len() - 1]),
        CLASSES.iter().map(|c| c.1).collect(),
    )
}
