//! The simulator's ground truth as a perfect detector with Gaussian position
//! noise would see it: for testing and benchmarking the tracker without
//! rendering. Each observation carries its truth id in the first 8 bytes of
//! its UUID (and the frame number in the rest, as the real detector mints a
//! new UUID per detection).

use super::core::Observation;
use crate::sim::params::SimParams;
use crate::sim::truth::FrameTruth;
use rand_distr::{Distribution, Normal};

/// Observations of the objects wholly inside the view `[x0, x1]`, with
/// position noise of standard deviation `noise_m`.
pub fn observe(
    truth: &FrameTruth,
    view_x_m: (f64, f64),
    noise_m: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Observation> {
    let n = Normal::new(0.0, noise_m.max(0.0)).unwrap_or_else(|_| Normal::new(0.0, 0.0).unwrap());
    truth
        .objects
        .iter()
        .filter(|o| o.state == "on_belt")
        .filter(|o| {
            let r = o.length_m.hypot(o.width_m) / 2.0;
            o.position_m[0] - r >= view_x_m.0 && o.position_m[0] + r <= view_x_m.1
        })
        .map(|o| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&o.id.to_le_bytes());
            id[8..].copy_from_slice(&truth.frame.to_le_bytes());
            Observation {
                x_m: o.position_m[0] + n.sample(rng),
                y_m: o.position_m[1] + n.sample(rng),
                class_id: o.class.clone(),
                confidence: 0.9,
                size_m: [o.length_m, o.width_m],
                yaw_rad: o.yaw_rad,
                object_id: id,
                vision_id: format!("vision_{}_{}_{}", truth.frame, o.lane, o.id),
            }
        })
        .collect()
}

/// The truth id an observation from [`observe`] carries.
pub fn truth_id(object_id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&object_id[..8]);
    u64::from_le_bytes(b)
}

/// A crowded belt for identity tests and benchmarks: 150 arrivals/min,
/// 30 % bursts of up to 3 with 5 mm gaps, and 30 % of objects with a twin
/// side by side in their lane.
pub fn crowded(seed: i64) -> SimParams {
    SimParams {
        seed,
        arrival_rate_per_min: 150.0,
        burst_probability: 0.3,
        burst_size_max: 3,
        min_gap_m: 0.005,
        pair_probability: 0.3,
        ..SimParams::default()
    }
}
